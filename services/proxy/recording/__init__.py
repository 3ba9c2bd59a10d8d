"""Recording interceptions: observation (events, spans, metrics), the emitter and its spool, deferred bookkeeping."""
