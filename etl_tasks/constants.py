"""Wire protocol and storage layout, written down in one place.

Task names and queue names are part of the protocol between versions N and
N+1 running side by side: change them only by addition.
"""

from __future__ import annotations

from typing import Final

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

#: Queue kinds in consumption order: a chunk that has started finishes before new ones
#: start (load, then transform, then extract). Control (planning) is cheap and keeps the
#: pipeline fed, so it goes first. Verification comes last: it reads what migrations have
#: finished and must never hold up one that is still moving. Kinds are only ever added.
QUEUE_KINDS: Final = ("control", "load", "transform", "extract", "verify")


def queue_name(kind: str, schema: int = MESSAGE_SCHEMA) -> str:
    return f"baton.v{schema}.{kind}"


def consumed_queues(schemas: tuple[int, ...] = CONSUMED_SCHEMAS) -> tuple[str, ...]:
    """Every queue a worker consumes, in priority order: newest schema first."""
    return tuple(queue_name(kind, schema) for schema in schemas for kind in QUEUE_KINDS)


QUEUE_CONTROL: Final = queue_name("control")
QUEUE_EXTRACT: Final = queue_name("extract")
QUEUE_TRANSFORM: Final = queue_name("transform")
QUEUE_LOAD: Final = queue_name("load")
QUEUE_VERIFY: Final = queue_name("verify")
QUEUES_IN_PRIORITY_ORDER: Final = consumed_queues()

STEP_TASK: Final = {"extract": TASK_EXTRACT, "transform": TASK_TRANSFORM, "load": TASK_LOAD}
STEP_QUEUE: Final = {"extract": QUEUE_EXTRACT, "transform": QUEUE_TRANSFORM, "load": QUEUE_LOAD}

# Redis keys (under the configured key prefix).
STAGE_KEY: Final = "stage:{chunk_id}:{token}:{kind}"  # rows waiting between two steps
BROKER_EPOCH_KEY: Final = "broker-epoch"  # vanishes when the broker restarts empty

# State DB lease names.
SWEEPER_LEASE: Final = "sweeper"

# Target-side ledger table that Baton creates in every SQL target.
LEDGER_TABLE: Final = "baton_ledger"
