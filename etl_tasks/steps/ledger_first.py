"""The ledger-first rule for missing staged rows.

A step whose staged input is gone (the staging Redis restarted, or the TTL passed
during a long pause) may belong to a chunk whose load already committed in the
target: its worker died between the target's commit and the state DB's update.
Extracting that chunk again could cut it at another key, and its ledger record
would then be replayed onto bounds it never covered (rows counted twice, bad rows
quarantined twice, rows taken for "already in the target"). So the target ledger
decides first: a chunk that committed is finished from its record (counts,
quarantine, and its cut, which becomes the chunk's permanent bound as a live
load's cut does); only a chunk with no record goes back to extract.

An extract of a chunk that was extracted before (sent back by an older version,
or retried after it failed) asks the ledger too, for the same reason.
"""

from __future__ import annotations

import logging

from etl_tasks.chunk_lease import Claim, back_to_extract
from etl_tasks.connectors.base import ChunkRef
from etl_tasks.constants import FIRST_STEP
from etl_tasks.publisher import publish_step
from etl_tasks.runtime import Runtime
from etl_tasks.steps.finish import finish

log = logging.getLogger("etl_tasks.steps")


def finish_from_ledger(rt: Runtime, c: Claim) -> bool:
    """Finish the chunk from its ledger record if a load of it committed; say whether."""
    chunk = ChunkRef(c.migration_id, c.stream, c.chunk_id, c.token)
    record = rt.target(c.migration_id, c.stream).ledger_lookup(chunk)
    if record is None:
        return False
    log.info(
        "chunk %s had committed in the target: finished from its ledger record",
        c.chunk_id,
        extra={"migration_id": c.migration_id, "stream": c.stream, "chunk_id": c.chunk_id},
    )
    finish(rt, c, record, load_ms=None)
    return True


def recover_missing_input(rt: Runtime, c: Claim) -> str:
    """The step's staged input is gone: the ledger decides, else the chunk is read again."""
    if finish_from_ledger(rt, c):
        return "from_ledger"
    if back_to_extract(rt, c):
        publish_step(rt.publisher, FIRST_STEP.name, c.chunk_id)
    return "restaged"
