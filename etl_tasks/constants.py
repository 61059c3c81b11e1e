"""Wire protocol and storage layout, written down in one place.

Task names and queue names are part of the protocol between versions N and
N+1 running side by side: change them only by addition.
"""

from __future__ import annotations

from typing import Final

#: Version of the message schema. Queues carry it in their name so a worker
#: only receives what it understands.
MESSAGE_SCHEMA: Final = 1

TASK_PLAN: Final = "baton.plan"
TASK_EXTRACT: Final = "baton.extract"
TASK_TRANSFORM: Final = "baton.transform"
TASK_LOAD: Final = "baton.load"

QUEUE_CONTROL: Final = f"baton.v{MESSAGE_SCHEMA}.control"
QUEUE_EXTRACT: Final = f"baton.v{MESSAGE_SCHEMA}.extract"
QUEUE_TRANSFORM: Final = f"baton.v{MESSAGE_SCHEMA}.transform"
QUEUE_LOAD: Final = f"baton.v{MESSAGE_SCHEMA}.load"

#: Consumption order: a chunk that has started finishes before new ones start
#: (load, then transform, then extract). Control (planning) is cheap and keeps
#: the pipeline fed, so it goes first.
QUEUES_IN_PRIORITY_ORDER: Final = (QUEUE_CONTROL, QUEUE_LOAD, QUEUE_TRANSFORM, QUEUE_EXTRACT)

STEP_TASK: Final = {"extract": TASK_EXTRACT, "transform": TASK_TRANSFORM, "load": TASK_LOAD}
STEP_QUEUE: Final = {"extract": QUEUE_EXTRACT, "transform": QUEUE_TRANSFORM, "load": QUEUE_LOAD}

# Redis keys (under the configured key prefix).
STAGE_KEY: Final = "stage:{chunk_id}:{token}:{kind}"  # rows waiting between two steps
BROKER_EPOCH_KEY: Final = "broker-epoch"  # vanishes when the broker restarts empty

# State DB lease names.
SWEEPER_LEASE: Final = "sweeper"

# Target-side ledger table that Baton creates in every SQL target.
LEDGER_TABLE: Final = "baton_ledger"
