"""Operator tooling: the ``baton`` CLI, the embedded quickstart, the demo, manifests, harnesses.

Nothing in ``etl_tasks``, ``api`` or ``worker`` imports this package.
"""
