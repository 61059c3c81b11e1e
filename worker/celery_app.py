"""The Celery app and its settings, built from Baton's settings.

The choices here are what make a deploy safe (DESIGN.md, "What the anchors
taught"): late acks, prefetch 1, a worker-lost policy, a visibility timeout
far below an hour, JSON only, one queue per step kind consumed load first.

Redis is the default broker. RabbitMQ (``amqp://``) works too, for those who need a
clustered broker: Baton's queues are then declared durable, optionally as quorum
queues (``BATON_QUORUM_QUEUES``), and every publish waits for the broker's confirm.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from etl_tasks.constants import (
    PIPELINE,
    QUEUE_CONTROL,
    QUEUE_VERIFY,
    QUEUES_IN_PRIORITY_ORDER,
    TASK_PLAN,
    TASK_VERIFY,
)
from etl_tasks.settings import Settings

log = logging.getLogger(__name__)


AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://", "pyamqps://")


def is_amqp(broker_url: str) -> bool:
    """Whether the broker is RabbitMQ (or another AMQP 0-9-1 broker) through py-amqp."""
    return broker_url.startswith(AMQP_SCHEMES)


def _transport_options(settings: Settings) -> dict[str, Any]:
    if is_amqp(settings.broker_url):
        # A publish waits for RabbitMQ's ack: one it did not take raises, and
        # CeleryPublisher logs it (the sweeper re-sends). Redeliveries of unacked
        # messages need no visibility timeout: RabbitMQ returns them when the
        # consumer's channel closes (a killed worker) or on consumer_timeout.
        return {"confirm_publish": True}
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.broker_is_redis:
        transport.update(
            queue_order_strategy="priority",
            global_keyprefix=settings.key_prefix,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=15,
        )
    return transport


def _queues(settings: Settings) -> list[Queue]:
    """Baton's queues, in the order a worker consumes them.

    The order is what Redis's ``queue_order_strategy: priority`` follows (load
    before transform before extract). RabbitMQ has no such ordering: a worker
    consuming several queues gets their messages as they come, so on AMQP the
    order is kept only for uniformity, and the bound on queued chunks per
    migration is what keeps staged rows from ageing.
    """
    if not is_amqp(settings.broker_url):
        return [Queue(name) for name in QUEUES_IN_PRIORITY_ORDER]
    # Durable queues survive a broker restart (Celery's messages are persistent).
    # Quorum queues are replicated; they must be durable, neither exclusive nor
    # auto-deleted. Each queue has its own direct exchange and routing key, so a
    # message published through an exchange never reaches a sibling queue.
    arguments = {"x-queue-type": "quorum"} if settings.quorum_queues else None
    return [
        Queue(
            name,
            Exchange(name, type="direct", durable=True),
            routing_key=name,
            durable=True,
            exclusive=False,
            auto_delete=False,
            queue_arguments=arguments,
        )
        for name in QUEUES_IN_PRIORITY_ORDER
    ]


def _amqp_config(settings: Settings) -> dict[str, Any]:
    if not is_amqp(settings.broker_url):
        return {}
    return {
        # Celery 5.5+: with quorum queues among task_queues the worker uses
        # per-consumer QoS (quorum queues have no global QoS): the prefetch of
        # concurrency x 1 then applies to each queue's consumer, not to the
        # worker's channel as a whole. True is the default; kept explicit.
        "worker_detect_quorum_queues": True,
        "task_default_queue_type": "quorum" if settings.quorum_queues else "classic",
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    routes = {step.task: {"queue": step.queue} for step in PIPELINE}
    routes[TASK_PLAN] = {"queue": QUEUE_CONTROL}
    routes[TASK_VERIFY] = {"queue": QUEUE_VERIFY}
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": _transport_options(settings),
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
        # Only with REMAP_SIGTERM=SIGQUIT: SIGTERM then waits this long, cancels the steps
        # in flight (their messages are requeued, their leases expire) and exits.
        "worker_soft_shutdown_timeout": settings.soft_shutdown_timeout_s,
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.worker_concurrency,
        # BATON_TASK_EVENTS=on: task-* events on the broker, for Flower (off: only the
        # workers' heartbeats, as before).
        "worker_send_task_events": settings.task_events == "on",
        "task_send_sent_event": settings.task_events == "on",
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_queues": _queues(settings),
        "task_default_queue": QUEUE_CONTROL,
        "task_routes": routes,
        "task_create_missing_queues": False,
        # Connections kept per process for publishing and control commands: Celery's default.
        # Flower's inspector sends its eight inspect commands at once, each holding one; with
        # fewer, they wait for each other until their socket timeouts.
        "broker_pool_limit": 10,
        **_amqp_config(settings),
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
            reason = _describe(exc)
            log.warning("could not publish %s: %s", task, reason, extra={"task_kwargs": kwargs})


def _describe(exc: BaseException) -> str:
    """The exception and its causes, by type: kombu wraps a RabbitMQ nack (a publish the
    broker refused, seen thanks to confirm_publish) as an OperationalError with no text,
    caused by a MessageNacked with no text either."""
    parts: list[str] = []
    last = ""
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        text = str(seen)
        parts.append(type(seen).__name__ + (f": {text}" if text and text != last else ""))
        last = text
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)
