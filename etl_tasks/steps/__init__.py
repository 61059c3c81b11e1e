"""The three steps of a chunk (extract, transform, load) and the prepare/plan step.

Each is a plain function of a :class:`~etl_tasks.runtime.Runtime` and a chunk
id: it claims the chunk, does its work, commits its outcome, then publishes
the next step. Celery only calls them (see :mod:`etl_tasks.tasks`).
"""
