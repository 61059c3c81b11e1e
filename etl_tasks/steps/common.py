"""What every step does around its own work: claim, take a connection slot, classify
failures, log."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from etl_tasks.chunk_lease import (
    NOW,
    Claim,
    claim,
    commit,
    commit_and_claim,
    fail_claimed,
    release_after_error,
    retry_later,
    wait_for_slot,
    wake,
)
from etl_tasks.constants import PIPELINE, STEPS
from etl_tasks.errors import LeaseLost, PermanentError, StagingMissing, TransientError
from etl_tasks.gate import may_start_step
from etl_tasks.metrics import STEP_OUTCOMES, STEP_RETRIES, STEP_SECONDS
from etl_tasks.publisher import publish_step
from etl_tasks.runtime import Runtime
from etl_tasks.steps.ledger_first import recover_missing_input
from etl_tasks.system_slots import Busy, Slot, Waiter, holder_of

log = logging.getLogger("etl_tasks.steps")


_chain = threading.local()  # .next: the claim to run next; .since: when the task began

#: How long one task runs chunk after chunk of its migration (:func:`go_on_with`) before
#: it publishes the next one instead and ends: the queue's other messages (other
#: migrations' chunks, advances) get their turn, and no message stays unacknowledged for
#: long.
CHAIN_CHUNKS_S = 10.0


def run_step(rt: Runtime, chunk_id: int, step: str, body: Callable[[Claim], None]) -> str:
    """Claim the chunk for ``step`` and run ``body``, then any step :func:`hand_on` chained
    after it, and any chunk a finished load went on with (:func:`go_on_with`); return
    what happened last, for logs."""
    c = claim(rt, chunk_id, step)
    if c is None:
        log.debug("nothing to do", extra={"chunk_id": chunk_id, "step": step})
        STEP_OUTCOMES.labels(step, "skipped").inc()
        return "skipped"
    _chain.next = None
    _chain.since = time.monotonic()
    try:
        outcome = run_claimed(rt, c, body)
        while (chained := _chain.next) is not None:
            _chain.next = None
            outcome = run_claimed(rt, chained, functools.partial(STEPS[chained.step].claimed(), rt))
    finally:
        _chain.next = _chain.since = None  # outside run_step, nothing goes on to a next chunk
        rt.staging.drop_held()
    return outcome


def hand_on(rt: Runtime, c: Claim, step: str, **values: Any) -> bool:
    """Commit ``c``'s outcome, which moves its chunk on to ``step``, and see that step run:
    on this thread, once ``c``'s step has ended (its connection slot given back; the rows
    it staged read back from memory), or by publishing it.

    This thread runs it when ``chain_steps`` is on, the pool runs steps in this process
    (a prefork child cannot see its worker's SIGTERM) and the worker is not draining: a
    draining worker still stops after the step in hand. The next step is claimed in the
    same transaction as this one's outcome is committed, so no message, no queue and no
    second claim stand between the two, and its input never goes through Redis. When the
    step goes by message instead, its input is written to Redis first. Returns whether
    the outcome was committed.
    """
    if may_chain(rt) and may_start_step():
        committed, chained = commit_and_claim(rt, c, step, **values)
        if chained is not None:
            _chain.next = chained
            return True
    else:
        rt.staging.write_held()  # the step's input, before the outcome that points at it
        committed = commit(rt, c, step=step, queued_at=NOW, **values)
    if committed:
        rt.staging.write_held()
        publish_step(rt.publisher, step, c.chunk_id)
    return committed


def may_take_next_chunk(rt: Runtime) -> bool:
    """Whether a load that finished its chunk may claim the migration's next one and run
    it on this thread (:func:`go_on_with`) rather than publish it: as for a chunk's next
    step, and for :data:`CHAIN_CHUNKS_S` after its task began."""
    since = getattr(_chain, "since", None)
    return (
        may_chain(rt)
        and may_start_step()
        and since is not None
        and time.monotonic() - since < CHAIN_CHUNKS_S
    )


def go_on_with(c: Claim) -> None:
    """Run ``c`` on this thread once the step in hand has ended (see :func:`run_step`)."""
    _chain.next = c


def may_chain(rt: Runtime) -> bool:
    """Whether :func:`hand_on` may run the next step on this thread (unless the worker
    drains): only then is it worth keeping the staged rows in memory for it."""
    return rt.settings.chain_steps and rt.settings.worker_pool != "prefork"


def run_claimed(rt: Runtime, c: Claim, body: Callable[[Claim], None]) -> str:
    """Run ``body`` under the claim ``c``; every failure ends in the state DB, by its type."""
    ids = {
        "migration_id": c.migration_id,
        "stream": c.stream,
        "chunk_id": c.chunk_id,
        "step": c.step,
        "token": c.token,
    }
    started = time.monotonic()
    held: list[Slot] = []

    def in_slot(c: Claim) -> None:
        slot = _take_slot(rt, c)
        if isinstance(slot, Busy):
            raise _Waiting(slot)
        if slot is not None:
            held.append(slot)
        body(c)

    try:
        outcome = _run(rt, c, in_slot, ids, started)
    finally:
        for slot in held:
            _give_back(rt, slot)
    # Counted once the outcome is in the state DB: a step whose commit failed raised.
    STEP_OUTCOMES.labels(c.step, outcome).inc()
    if outcome != "waiting":  # a step that waited for a slot did no work
        STEP_SECONDS.labels(c.step).observe(time.monotonic() - started)
    return outcome


class _Waiting(Exception):
    """Every connection slot of the step's system is in use (not an error: the chunk waits)."""

    def __init__(self, busy: Busy) -> None:
        super().__init__(busy.reason)
        self.busy = busy


def _take_slot(rt: Runtime, c: Claim) -> Slot | Busy | None:
    """One of the connection slots of the system the step reaches (None: it reaches none)."""
    end = STEPS[c.step].reaches
    system = None if end is None else rt.system(c.migration_id, end)
    if system is None:
        return None
    return rt.slots.acquire(
        system,
        holder_of(rt.worker_name, c.chunk_id, c.token),
        Waiter(c.migration_id, c.step, c.chunk_id),
    )


def give_back_slot(rt: Runtime, c: Claim) -> None:
    """Free the slot ``c``'s step holds, its work on that system done (a load's target
    transaction committed): what it does next (the finish, planning the next chunks on
    the source) reaches other systems, and a step waiting for this one's slot need not
    wait for that."""
    slot = rt.slots.held(holder_of(rt.worker_name, c.chunk_id, c.token))
    if slot is not None:
        _give_back(rt, slot)


def _give_back(rt: Runtime, slot: Slot) -> None:
    """Free the slot, and send the first waiting chunk it wakes that still waits (one
    named may have come back by other means meanwhile)."""
    woken = rt.slots.release(slot)
    while woken is not None:
        if wake(rt, woken.chunk_id, woken.step):
            publish_step(rt.publisher, woken.step, woken.chunk_id)
            return
        woken = rt.slots.wake_next(slot.system)


def _wait(rt: Runtime, c: Claim, busy: Busy) -> None:
    """Give the chunk back to wait for a slot, then send it at once if a slot freed since
    it was listed named it: that wake found the chunk not yet given back, and sent
    nothing (it would otherwise wait for the next freed slot, or the sweeper)."""
    wait_for_slot(rt, c, busy.reason)
    waiter = Waiter(c.migration_id, c.step, c.chunk_id)
    if rt.slots.was_woken(busy.system, waiter) and wake(rt, c.chunk_id, c.step):
        publish_step(rt.publisher, c.step, c.chunk_id)


def _run(
    rt: Runtime, c: Claim, body: Callable[[Claim], None], ids: dict[str, Any], started: float
) -> str:
    try:
        outcome = _attempt(rt, c, body, ids)
    except _Waiting as waiting:
        _wait(rt, c, waiting.busy)
        log.info("%s", waiting.busy.reason, extra=ids)
        return "waiting"
    except TransientError as exc:
        if retry_later(
            rt, c, str(exc), exc.connection, retry_after=exc.retry_after, jitter=exc.jitter
        ):
            STEP_RETRIES.labels(c.step).inc()
        return "retry"
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
    # One line per chunk at INFO, its last step's; the steps before it at DEBUG (a busy
    # worker finishes dozens of chunks a second, and every line is formatted and written).
    level = logging.INFO if c.step == PIPELINE[-1].name else logging.DEBUG
    ms = (time.monotonic() - started) * 1000
    log.log(level, "%s %s in %.0f ms", c.step, outcome, ms, extra=ids)
    return outcome


def _attempt(rt: Runtime, c: Claim, body: Callable[[Claim], None], ids: dict[str, Any]) -> str:
    try:
        body(c)
    except StagingMissing:
        log.warning("staged input missing; the target ledger decides", extra=ids)
        return recover_missing_input(rt, c)
    except BaseException:
        _keep_input(rt, ids)  # the step will run again, here or elsewhere: it needs its input
        raise
    return "done"


def _keep_input(rt: Runtime, ids: dict[str, Any]) -> None:
    """Write to Redis the input a chained step was given from memory, before its failure
    or wait is committed; if Redis does not answer, its retry reads the chunk again."""
    try:
        rt.staging.write_held()
    except TransientError as exc:
        log.warning("staged input kept in memory only: %s", exc, extra=ids)


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
