"""The thin Celery shims over the steps: the only place ``etl_tasks`` touches Celery.

Task names are explicit constants (wire protocol). Arguments are keyword-only
ids plus the message schema; unknown extra keys are ignored so a newer
producer's additions never break an older consumer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from celery import Task, shared_task
from celery.exceptions import Reject
from sqlalchemy import exc as sa_exc

from etl_tasks.advance import advance
from etl_tasks.connectors.sql.errors import classify
from etl_tasks.constants import MESSAGE_SCHEMA, PIPELINE, TASK_PLAN, TASK_VERIFY, PipelineStep
from etl_tasks.gate import may_start_step
from etl_tasks.runtime import Runtime
from etl_tasks.verification.step import verify_range

log = logging.getLogger(__name__)
T = TypeVar("T")

_factory: Callable[[], Runtime] | None = None


_runtime: Runtime | None = None
_runtime_pid = 0
_lock = threading.Lock()


def install_runtime(factory: Callable[[], Runtime]) -> None:
    """Tell the shims how to build this process's :class:`Runtime` (the worker does this)."""
    global _factory, _runtime
    with _lock:
        _factory, _runtime = factory, None


def runtime() -> Runtime:
    """This process's runtime; a forked pool child builds its own (no shared connections)."""
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is None or _runtime_pid != os.getpid():
            if _factory is None:
                raise RuntimeError("no runtime installed: run tasks inside a Baton worker")
            _runtime = _factory()
            _runtime_pid = os.getpid()
        return _runtime


def _guarded(schema: int, body: Callable[[Runtime], T]) -> T:
    """Run one message's work, never dropping the message for a reason that may pass.

    A draining worker, a message of a newer schema (it belongs to a newer worker), or a
    state DB that cannot be reached: the message goes back to the queue.
    """
    if not may_start_step():
        raise Reject(reason="worker draining", requeue=True)
    if schema > MESSAGE_SCHEMA:
        log.error("message schema %s is newer than this worker's %s", schema, MESSAGE_SCHEMA)
        time.sleep(1.0)
        raise Reject(reason="newer message schema", requeue=True)
    rt = runtime()
    try:
        return body(rt)
    except sa_exc.SQLAlchemyError as exc:
        if classify(exc) != "transient":
            raise
        log.warning("state DB unavailable (%s); message requeued", exc.__class__.__name__)
        time.sleep(min(1.0, rt.settings.step_budget_s))
        raise Reject(reason="state DB unavailable", requeue=True) from exc


@shared_task(name=TASK_PLAN, acks_late=True, ignore_result=True)
def plan_task(*, migration_id: str, schema: int = 1, **_: object) -> None:
    _guarded(schema, lambda rt: advance(rt, migration_id))


def _step_task(step: PipelineStep) -> Task:
    """The shim for one pipeline step, registered under its wire name."""
    run = step.function()

    def shim(*, chunk_id: int, schema: int = 1, **_: object) -> str:
        return _guarded(schema, lambda rt: run(rt, chunk_id))

    shim.__name__ = shim.__qualname__ = f"{step.name}_task"
    task: Task = shared_task(name=step.task, acks_late=True, ignore_result=True)(shim)
    return task


#: One shim per step of :data:`~etl_tasks.constants.PIPELINE`, by step name.
STEP_TASKS: dict[str, Task] = {step.name: _step_task(step) for step in PIPELINE}


@shared_task(name=TASK_VERIFY, acks_late=True, ignore_result=True)
def verify_task(*, range_id: int, schema: int = 1, **_: object) -> str:
    return _guarded(schema, lambda rt: verify_range(rt, range_id))
