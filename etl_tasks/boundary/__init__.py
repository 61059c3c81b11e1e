"""What a spec may reach (DESIGN invariant 10), decided before anything is contacted.

A spec names its source and target; this package decides whether Baton may
connect there and how: which environment variables a ``*_env`` field may read,
which hosts and folders are allowed, which URL parameters a driver may be
given, that the endpoint is not Baton's own state DB, broker or staging store,
that every connection is bounded in time, and that credentials written in a
spec are stored sealed. The API (preflight) and every worker apply the same
rules, so a spec that slipped past one is still stopped by the other.
"""
