"""The chaos harness: migrations under injected faults, verified row by row.

``services`` runs the harness's own Redis, PostgreSQL servers and workers (never the
machine's shared ones, since the faults kill and restart them); ``faults`` breaks them;
``run`` schedules the faults against running migrations and gives the verdict.
"""
