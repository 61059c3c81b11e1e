"""The Celery app and its settings, built from Baton's settings.

The choices here are what make a deploy safe (DESIGN.md, "What the anchors
taught"): late acks, prefetch 1, a worker-lost policy, a visibility timeout
far below an hour, JSON only, one queue per step kind consumed load first.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

from etl_tasks.constants import (
    QUEUE_CONTROL,
    QUEUES_IN_PRIORITY_ORDER,
    STEP_QUEUE,
    STEP_TASK,
    TASK_PLAN,
)
from etl_tasks.settings import Settings

log = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    routes = {STEP_TASK[step]: {"queue": STEP_QUEUE[step]} for step in STEP_TASK}
    routes[TASK_PLAN] = {"queue": QUEUE_CONTROL}
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        transport.update(
            queue_order_strategy="priority",
            global_keyprefix=settings.key_prefix,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=15,
        )
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_queues": [Queue(name) for name in QUEUES_IN_PRIORITY_ORDER],
        "task_default_queue": QUEUE_CONTROL,
        "task_routes": routes,
        "task_create_missing_queues": False,
        "broker_pool_limit": 4,
    }


def create_celery(settings: Settings) -> Celery:
    """A Celery app for workers (consuming) or the API (publishing only)."""
    app = Celery("baton", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.baton_settings = settings
    return app


class CeleryPublisher:
    """Publishes Baton's task messages through a Celery app (ids only, JSON)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, task: str, queue: str, kwargs: dict[str, object]) -> None:
        """Best effort: a message that cannot be sent is re-sent by the sweeper."""
        try:
            self.app.send_task(
                task,
                kwargs=kwargs,
                queue=queue,
                retry_policy={
                    "max_retries": 2,
                    "interval_start": 0.2,
                    "interval_step": 0.5,
                    "interval_max": 1,
                },
            )
        except Exception as exc:
            log.warning("could not publish %s: %s", task, exc, extra={"task_kwargs": kwargs})
