"""Wire protocol and storage layout, written down in one place.

Task names and queue names are part of the protocol between versions N and
N+1 running side by side: change them only by addition.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

#: Version of the message schema. Queues carry it in their name, so a worker only
#: ever receives messages it understands, and never drops one for being unknown.
MESSAGE_SCHEMA: Final = 1

#: Every schema this version consumes, newest first. Version N+1 lists N too, so the
#: messages version N published during a rolling deploy drain to the new workers.
CONSUMED_SCHEMAS: Final = (1,)

TASK_PLAN: Final = "baton.plan"
TASK_EXTRACT: Final = "baton.extract"
TASK_TRANSFORM: Final = "baton.transform"
TASK_LOAD: Final = "baton.load"
TASK_VERIFY: Final = "baton.verify"  # compare one key range of a verification


def queue_name(kind: str, schema: int = MESSAGE_SCHEMA) -> str:
    return f"baton.v{schema}.{kind}"


@dataclass(frozen=True)
class PipelineStep:
    """One step of a chunk's way from source to target, as the wire and the state DB know it.

    Everything else about the steps (the Celery shims and their routes, the stage names,
    the next step to publish, the queue order, ``Step.next``) is derived from
    :data:`PIPELINE`, so adding a step is one entry here, its functions, and nothing more.
    """

    name: str  # ``chunks.step`` while the chunk waits for or runs this step
    task: str  # Celery task name: wire protocol, only ever added
    runner: str  # ``module:function`` taking ``(runtime, chunk_id)``
    body: str  # ``module:function`` taking ``(runtime, claim)``: the step's work once claimed
    reads: str | None  # the staged kind it consumes; None: it reads the source
    writes: str | None  # the staged kind it leaves for the next step; None: the target
    #: The ``chunks`` column older versions read this step's duration from (they may run
    #: beside this one during a rolling deploy); newer steps record theirs in ``timings`` only.
    timing_column: str | None = None

    @property
    def queue(self) -> str:
        return queue_name(self.name)

    @property
    def reaches(self) -> Literal["source", "target"] | None:
        """The end of the migration this step connects to (it holds one of that system's
        connection slots while it runs), if any."""
        if self.reads is None:
            return "source"
        return "target" if self.writes is None else None

    def function(self) -> Callable[[Any, int], str]:
        """The step itself, taking ``(runtime, chunk_id)`` (imported when first asked)."""
        found: Callable[[Any, int], str] = _imported(self.runner)
        return found

    def claimed(self) -> Callable[[Any, Any], None]:
        """The step's work on a chunk already claimed for it, taking ``(runtime, claim)``."""
        found: Callable[[Any, Any], None] = _imported(self.body)
        return found

    @property
    def input_stage(self) -> str:
        """The staged kind this step consumes (it has one: it is not the first)."""
        if self.reads is None:
            raise ValueError(f"{self.name} reads the source, not a stage")
        return self.reads

    @property
    def output_stage(self) -> str:
        """The staged kind this step leaves (it has one: it is not the last)."""
        if self.writes is None:
            raise ValueError(f"{self.name} writes the target, not a stage")
        return self.writes


def _imported(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


#: The chunk pipeline, in order. A chunk's step moves from one entry to the next.
PIPELINE: Final = (
    PipelineStep(
        name="extract",
        task=TASK_EXTRACT,
        runner="etl_tasks.steps.extract:extract",
        body="etl_tasks.steps.extract:extract_claimed",
        reads=None,
        writes="extracted",
        timing_column="extract_ms",
    ),
    PipelineStep(
        name="transform",
        task=TASK_TRANSFORM,
        runner="etl_tasks.steps.transform:transform",
        body="etl_tasks.steps.transform:transform_claimed",
        reads="extracted",
        writes="transformed",
        timing_column="transform_ms",
    ),
    PipelineStep(
        name="load",
        task=TASK_LOAD,
        runner="etl_tasks.steps.load:load",
        body="etl_tasks.steps.load:load_claimed",
        reads="transformed",
        writes=None,
        timing_column="load_ms",
    ),
)
STEPS: Final = {step.name: step for step in PIPELINE}
FIRST_STEP: Final = PIPELINE[0]


def next_step(name: str) -> PipelineStep | None:
    """The step after ``name``; None after the last."""
    names = [step.name for step in PIPELINE]
    at = names.index(name)
    return PIPELINE[at + 1] if at + 1 < len(PIPELINE) else None


def step_after(name: str) -> PipelineStep:
    """The step after ``name``, which is not the last."""
    after = next_step(name)
    if after is None:
        raise ValueError(f"{name} is the last step")
    return after


#: Queue kinds in consumption order: a chunk that has started finishes before new ones
#: start (the pipeline's steps, last first). Control (planning) is cheap and keeps the
#: pipeline fed, so it goes first. Verification comes last: it reads what migrations have
#: finished and must never hold up one that is still moving. Kinds are only ever added.
QUEUE_KINDS: Final = ("control", *(step.name for step in reversed(PIPELINE)), "verify")


def consumed_queues(schemas: tuple[int, ...] = CONSUMED_SCHEMAS) -> tuple[str, ...]:
    """Every queue a worker consumes, in priority order: newest schema first."""
    return tuple(queue_name(kind, schema) for schema in schemas for kind in QUEUE_KINDS)


QUEUE_CONTROL: Final = queue_name("control")
QUEUE_VERIFY: Final = queue_name("verify")
QUEUES_IN_PRIORITY_ORDER: Final = consumed_queues()

STEP_TASK: Final = {step.name: step.task for step in PIPELINE}
STEP_QUEUE: Final = {step.name: step.queue for step in PIPELINE}

# Redis keys (under the configured key prefix).
STAGE_KEY: Final = "stage:{chunk_id}:{token}:{kind}"  # rows waiting between two steps


def native_stage(kind: str) -> str:
    """The staged kind of a pass-through chunk (rows in a connector's own form) between the
    same two steps as ``kind``: a name of its own, so a worker that does not know the form
    finds no input instead of one it cannot read."""
    return f"{kind}.native"


BROKER_EPOCH_KEY: Final = "broker-epoch"  # vanishes when the broker restarts empty
PLAN_DUE_KEY: Final = "plan-due:{migration_id}"  # an advance of the migration is on its way

# State DB lease names.
SWEEPER_LEASE: Final = "sweeper"

# Target-side ledger table that Baton creates in every SQL target.
LEDGER_TABLE: Final = "baton_ledger"
