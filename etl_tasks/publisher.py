"""How the domain asks for the next step to run, without knowing about Celery.

Messages carry ids only, never rows or secrets. The worker and the API plug
in a Celery implementation; tests can record what would be sent.
"""

from __future__ import annotations

from typing import Protocol

from etl_tasks.constants import (
    MESSAGE_SCHEMA,
    QUEUE_CONTROL,
    QUEUE_VERIFY,
    STEP_QUEUE,
    STEP_TASK,
    TASK_PLAN,
    TASK_VERIFY,
)


class Publisher(Protocol):
    def send(self, task: str, queue: str, kwargs: dict[str, object]) -> None:
        """Publish one task message (best effort: the sweeper repairs a lost one)."""


def publish_step(pub: Publisher, step: str, chunk_id: int) -> None:
    pub.send(STEP_TASK[step], STEP_QUEUE[step], {"schema": MESSAGE_SCHEMA, "chunk_id": chunk_id})


def publish_plan(pub: Publisher, migration_id: str) -> None:
    pub.send(TASK_PLAN, QUEUE_CONTROL, {"schema": MESSAGE_SCHEMA, "migration_id": migration_id})


def publish_verify(pub: Publisher, range_id: int) -> None:
    pub.send(TASK_VERIFY, QUEUE_VERIFY, {"schema": MESSAGE_SCHEMA, "range_id": range_id})


class RecordingPublisher:
    """Keeps what would be sent; for tests and for dry runs."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, object]]] = []

    def send(self, task: str, queue: str, kwargs: dict[str, object]) -> None:
        self.sent.append((task, queue, kwargs))
