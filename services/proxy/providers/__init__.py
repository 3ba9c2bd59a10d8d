"""Provider adapters: what is asked and answered on each provider API, parsed sans-io, and each route's spec."""
