"""Baton's worker: ``celery -A worker worker`` (``worker.app`` is the Celery app)."""

from __future__ import annotations

import etl_tasks.tasks  # noqa: F401  (registers the task shims)
from etl_tasks.settings import load_settings
from worker.celery_app import create_celery
from worker.lifecycle import attach

settings = load_settings()
app = create_celery(settings)
lifecycle = attach(app, settings)

__all__ = ["app"]
