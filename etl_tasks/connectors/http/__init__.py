"""The HTTP API target: rows sent as JSON requests, exactly once by idempotency keys."""
