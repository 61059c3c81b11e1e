"""What every step does around its own work: claim, classify failures, log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from etl_tasks.chunk_lease import (
    Claim,
    back_to_extract,
    claim,
    fail_claimed,
    release_after_error,
    retry_later,
)
from etl_tasks.errors import LeaseLost, PermanentError, StagingMissing, TransientError
from etl_tasks.publisher import publish_step
from etl_tasks.runtime import Runtime

log = logging.getLogger("etl_tasks.steps")


def run_step(rt: Runtime, chunk_id: int, step: str, body: Callable[[Claim], None]) -> str:
    """Claim the chunk for ``step`` and run ``body``; return what happened, for logs."""
    c = claim(rt, chunk_id, step)
    if c is None:
        log.debug("nothing to do", extra={"chunk_id": chunk_id, "step": step})
        return "skipped"
    ids = {
        "migration_id": c.migration_id,
        "stream": c.stream,
        "chunk_id": chunk_id,
        "step": step,
        "token": c.token,
    }
    started = time.monotonic()
    try:
        body(c)
    except TransientError as exc:
        retry_later(rt, c, str(exc), exc.connection)
        return "retry"
    except StagingMissing:
        log.warning("staged input missing; back to extract", extra=ids)
        if back_to_extract(rt, c):
            publish_step(rt.publisher, "extract", chunk_id)
        return "restaged"
    except LeaseLost:
        log.warning("lease lost; another worker has the chunk", extra=ids)
        return "lease_lost"
    except PermanentError as exc:
        log.error("step failed: %s", exc, extra=ids)
        fail_claimed(rt, c, str(exc))
        return "failed"
    except Exception as exc:
        log.exception("step crashed", extra=ids)
        release_after_error(rt, c, f"{type(exc).__name__}: {exc}")
        return "error"
    log.info("%s done in %.0f ms", step, (time.monotonic() - started) * 1000, extra=ids)
    return "done"


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
