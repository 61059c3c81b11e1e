"""Connection slots on a real Redis: a limit across workers, leases, fairness, waiting steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from etl_tasks.chunk_lease import wake
from etl_tasks.constants import TASK_EXTRACT, TASK_PLAN
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Migration
from etl_tasks.steps import common
from etl_tasks.steps import load as load_module
from etl_tasks.system_slots import Busy, Slot, System, SystemSlots, Waiter, limit_for, system_of
from tests.checks import assert_migrated
from tests.data import build_source, spec_for, sqlite_url, submit
from tests.harness import Driver

SYSTEM = System("postgresql://legacy.internal:5432/erp", 2)


def _slots(redis_server: str, key_prefix: str, lease_s: float = 30.0) -> SystemSlots:
    return SystemSlots(redis.Redis.from_url(redis_server), key_prefix, lease_s)


def test_no_more_holders_than_the_limit_across_threads(redis_server: str, key_prefix: str) -> None:
    # Given eight threads (as workers would) each taking a slot of one system many times
    slots = _slots(redis_server, key_prefix)
    inside, most, lock = 0, 0, threading.Lock()
    waits = 0

    def work(n: int) -> None:
        nonlocal inside, most, waits
        for i in range(25):
            got = slots.acquire(SYSTEM, f"w{n}:{i}:1", Waiter(f"m{n % 3}", "extract", n * 100 + i))
            if isinstance(got, Busy):
                with lock:
                    waits += 1
                continue
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.002)
            with lock:
                inside -= 1
            slots.release(got)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then never more than the limit held a slot at once, and some had to wait
    assert most == SYSTEM.limit
    assert waits > 0
    assert slots.holders(SYSTEM) == []


def test_a_killed_holders_slot_comes_back_when_its_lease_runs_out(
    redis_server: str, key_prefix: str
) -> None:
    slots = _slots(redis_server, key_prefix, lease_s=0.3)
    # Given both slots held by a worker that was then killed (it never releases them)
    for i in range(2):
        assert isinstance(slots.acquire(SYSTEM, f"dead:{i}:1", Waiter("m1", "load", i)), Slot)
    assert isinstance(slots.acquire(SYSTEM, "live:9:1", Waiter("m1", "load", 9)), Busy)
    # When their lease runs out
    time.sleep(0.4)
    # Then another step gets in
    assert isinstance(slots.acquire(SYSTEM, "live:9:2", Waiter("m1", "load", 9)), Slot)


def test_a_renewed_slot_outlives_its_first_lease(redis_server: str, key_prefix: str) -> None:
    slots = _slots(redis_server, key_prefix, lease_s=0.3)
    for i in range(2):
        slots.acquire(SYSTEM, f"w:{i}:1", Waiter("m1", "load", i))
    for _ in range(3):
        time.sleep(0.15)
        slots.renew("w:0:1")
    # The renewed holder still holds its slot; the other's ran out
    assert slots.holders(SYSTEM) == ["m1|w:0:1"]


def test_migrations_share_a_busy_system_fairly(redis_server: str, key_prefix: str) -> None:
    system = System("postgresql://legacy.internal:5432/erp", 4)
    slots = _slots(redis_server, key_prefix)
    # Given migration A holding all four slots, and B's chunk waiting for one
    held = [slots.acquire(system, f"a:{i}:1", Waiter("A", "extract", i)) for i in range(4)]
    assert all(isinstance(s, Slot) for s in held)
    assert isinstance(slots.acquire(system, "b:10:1", Waiter("B", "extract", 10)), Busy)
    # When A frees one, B's chunk is the one woken
    assert slots.release(held[0]) == Waiter("B", "extract", 10)  # type: ignore[arg-type]
    # And A, holding more than its half while B waits, cannot take the freed slot first
    assert isinstance(slots.acquire(system, "a:5:1", Waiter("A", "extract", 5)), Busy)
    assert isinstance(slots.acquire(system, "b:10:2", Waiter("B", "extract", 10)), Slot)
    # Then as A's steps end, B's next chunks come before A's until each holds its share
    assert isinstance(slots.acquire(system, "b:11:1", Waiter("B", "extract", 11)), Busy)
    assert slots.release(held[1]) == Waiter("B", "extract", 11)  # type: ignore[arg-type]
    assert isinstance(slots.acquire(system, "b:11:2", Waiter("B", "extract", 11)), Slot)
    assert sorted(h.split("|")[0] for h in slots.holders(system)) == ["A", "A", "B", "B"]
    # And a freed slot of A's goes to A's waiting chunk once both hold their share
    assert slots.release(held[2]) == Waiter("A", "extract", 5)  # type: ignore[arg-type]


def test_limits_per_system_from_the_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        max_connections=6,
        system_max_connections="postgresql://legacy.internal:*=2, https://api.example.com:443=3",
    )
    assert limit_for(settings, "postgresql://legacy.internal:5432/erp") == 2
    assert limit_for(settings, "https://api.example.com:443") == 3
    assert limit_for(settings, "postgresql://other:5432/erp") == 6


def test_a_system_is_its_host_and_database_never_its_credentials(
    driver: Driver, pg_url: str, tmp_path: Path
) -> None:
    source = sqlite_url(tmp_path / "legacy.db")
    build_source(source, customers=5, orders=2)
    mid = submit(driver.rt.db, driver.publisher, spec_for(source, pg_url))
    target = system_of(driver.rt, mid, "target")
    assert target is not None and target.label.startswith("postgresql://")
    assert target.label.endswith("/" + pg_url.rsplit("/", 1)[1])
    assert "@" not in target.label  # no user, no password
    assert system_of(driver.rt, mid, "source") == System(
        f"sqlite:{tmp_path / 'legacy.db'}", driver.rt.settings.max_connections
    )


def test_a_step_with_no_free_slot_waits_uncounted_and_is_woken(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    driver = Driver(make_settings(max_connections=1))
    try:
        source = sqlite_url(tmp_path / "legacy.db")
        build_source(source, customers=300, orders=40, bad_every=0)
        spec = spec_for(source, pg_url, chunk_rows=100)
        mid = submit(driver.rt.db, driver.publisher, spec)
        driver.run(on_message=lambda task, _: task == TASK_PLAN)  # plan, hold the steps
        system = system_of(driver.rt, mid, "source")
        assert system is not None
        # Given the source's only slot held by a step on another worker
        other = driver.rt.slots.acquire(system, "other:1:1", Waiter("other", "extract", 1))
        assert isinstance(other, Slot)
        # When extracts arrive, they wait: no attempt counted, no retry, the reason shown
        waiting = [k for t, k in driver.publisher.history if t == TASK_EXTRACT]
        outcomes = {driver.deliver(TASK_EXTRACT, k) for k in waiting}
        assert outcomes == {"waiting"}
        with driver.rt.db.session() as s:
            chunks = list(s.scalars(select(Chunk).where(Chunk.migration_id == mid)))
            assert all(c.attempts == 0 and c.retries == 0 for c in chunks)
            assert all(c.state == "running" and c.lease_owner is None for c in chunks)
            reason = s.get(Migration, mid).waiting_reason  # type: ignore[union-attr]
        assert reason is not None and "connection slot" in reason
        # And when the other step frees the slot, one waiting chunk is sent again at once
        woken = driver.rt.slots.release(other)
        assert woken is not None and woken.migration_id == mid
        # (the test wakes it as the step freeing the slot would)
        assert wake(driver.rt, woken.chunk_id, woken.step)
        driver.publisher.queue.clear()
        driver.deliver(TASK_EXTRACT, {"chunk_id": woken.chunk_id})
        # Then each step freeing the slot wakes the next: the migration finishes by itself
        driver.run_to_end(mid)
        assert_migrated(driver.rt.db, mid, spec, expected_bad={"Customers": 0, "order_lines": 0})
    finally:
        driver.close()


def test_a_load_frees_its_target_slot_before_it_finishes_the_chunk(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a migration whose loads each hold one of the target's slots
    driver = Driver(make_settings(), chain=True)
    try:
        source = sqlite_url(tmp_path / "legacy.db")
        build_source(source, customers=300, orders=40, bad_every=0)
        spec = spec_for(source, pg_url, chunk_rows=100)
        mid = submit(driver.rt.db, driver.publisher, spec)
        target = system_of(driver.rt, mid, "target")
        assert target is not None
        # When each load finishes its chunk (records it, queues and plans the next ones)
        seen: list[list[str]] = []
        real = load_module.finish

        def finishing(*args: Any, **kwargs: Any) -> Any:
            seen.append(driver.rt.slots.holders(target))
            return real(*args, **kwargs)

        monkeypatch.setattr(load_module, "finish", finishing)
        assert driver.run_to_end(mid) == "succeeded"
        # Then its target slot was already free: those steps reach the state DB and the
        # source, and another load may have the slot meanwhile
        assert len(seen) >= 4 and all(holders == [] for holders in seen), seen
        assert driver.rt.slots.holders(target) == []
        assert_migrated(driver.rt.db, mid, spec, expected_bad={"customers": 0, "orders": 0})
    finally:
        driver.close()


def test_a_slot_given_back_twice_wakes_one_waiter_once(redis_server: str, key_prefix: str) -> None:
    # Given a system's only slot held, and a step waiting for it
    slots = _slots(redis_server, key_prefix)
    system = System("postgresql://target.internal:5432/app", 1)
    held = slots.acquire(system, "w1:1:1", Waiter("m1", "load", 1))
    assert isinstance(held, Slot)
    assert isinstance(slots.acquire(system, "w2:2:1", Waiter("m2", "load", 2)), Busy)
    # When its holder gives it back, and again (once its work was done, then at the end)
    first, second = slots.release(held), slots.release(held)
    # Then the waiting step is woken by the first alone
    assert first == Waiter("m2", "load", 2)
    assert second is None
    assert slots.holders(system) == []


def _waiting_on_the_source(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> tuple[Driver, str, System, Slot, list[int]]:
    """A planned migration whose source's only slot another step holds, and its extracts'
    chunk ids (not yet delivered)."""
    driver = Driver(make_settings(max_connections=1))
    source = sqlite_url(tmp_path / "legacy.db")
    build_source(source, customers=300, orders=40, bad_every=0)
    mid = submit(driver.rt.db, driver.publisher, spec_for(source, pg_url, chunk_rows=100))
    driver.run(on_message=lambda task, _: task == TASK_PLAN)  # plan, hold the steps
    system = system_of(driver.rt, mid, "source")
    assert system is not None
    other = driver.rt.slots.acquire(system, "other:1:1", Waiter("other", "extract", 1))
    assert isinstance(other, Slot)
    chunks = [k["chunk_id"] for t, k in driver.publisher.history if t == TASK_EXTRACT]
    driver.publisher.queue.clear()
    return driver, mid, system, other, chunks


def _sent(driver: Driver) -> list[int]:
    return [k["chunk_id"] for t, k in driver.publisher.queue if t == TASK_EXTRACT]


def test_a_slot_freed_while_a_step_gives_its_chunk_back_still_wakes_it(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver, _, _, other, chunks = _waiting_on_the_source(make_settings, tmp_path, pg_url)
    try:
        # Given a step that found no free slot, and the other step freeing its slot just
        # before this one has given its chunk back (the wake finds nothing to send yet)
        real = common.wait_for_slot

        def freed_meanwhile(*args: Any) -> None:
            common._give_back(driver.rt, other)
            assert _sent(driver) == []
            real(*args)

        monkeypatch.setattr(common, "wait_for_slot", freed_meanwhile)
        # When the step has given its chunk back
        assert driver.deliver(TASK_EXTRACT, {"chunk_id": chunks[0]}) == "waiting"
        # Then the chunk is sent again at once, not after the sweeper's next round
        assert _sent(driver) == [chunks[0]]
        monkeypatch.setattr(common, "wait_for_slot", real)
        assert driver.deliver(TASK_EXTRACT, {"chunk_id": chunks[0]}) == "done"
    finally:
        driver.close()


def test_a_freed_slot_wakes_a_chunk_that_still_waits(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    driver, _, _, other, chunks = _waiting_on_the_source(make_settings, tmp_path, pg_url)
    try:
        # Given two chunks waiting for the slot, the first listed sent meanwhile by other
        # means (the sweeper's fallback, say)
        first, second = chunks[:2]
        assert driver.deliver(TASK_EXTRACT, {"chunk_id": first}) == "waiting"
        time.sleep(0.005)  # listed a few milliseconds later
        assert driver.deliver(TASK_EXTRACT, {"chunk_id": second}) == "waiting"
        assert wake(driver.rt, first, "extract")
        driver.publisher.queue.clear()
        # When the other step frees the slot
        common._give_back(driver.rt, other)
        # Then the chunk that still waits is sent: the slot does not stay idle
        assert _sent(driver) == [second]
    finally:
        driver.close()
