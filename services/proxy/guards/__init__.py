"""Guards in front of the upstream: rate and concurrency limits, circuit breakers."""
