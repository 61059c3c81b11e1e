"""Steps run in this process against real PostgreSQL and Redis: redelivery, fencing, resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from etl_tasks.constants import TASK_LOAD, TASK_TRANSFORM
from etl_tasks.settings import Settings
from tests.checks import assert_migrated
from tests.data import bad_lines, build_source, spec_for, submit
from tests.harness import Driver


def test_sqlite_to_postgres_end_to_end(driver: Driver, tmp_path: Path, pg_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=1200, orders=300, bad_every=37)
    spec = spec_for(source, pg_url, chunk_rows=250)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    assert_migrated(
        driver.rt.db, mid, spec, expected_bad={"Customers": 0, "order_lines": bad_lines(300, 3, 37)}
    )


def test_every_message_delivered_twice_changes_nothing(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a migration whose every step message is delivered twice (Celery is at-least-once)
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=800, orders=200, bad_every=23)
    spec = spec_for(source, pg_url, chunk_rows=200)
    mid = submit(driver.rt.db, driver.publisher, spec)

    def twice(task: str, kwargs: dict[str, object]) -> bool:
        driver.deliver(task, kwargs)
        return True

    # When it runs
    driver.run(on_message=twice)
    # Then the target equals the source, with the same quarantine counts
    assert_migrated(
        driver.rt.db, mid, spec, expected_bad={"Customers": 0, "order_lines": bad_lines(200, 3, 23)}
    )


def test_load_replayed_after_commit_is_a_no_op(driver: Driver, tmp_path: Path, pg_url: str) -> None:
    # Given a load that committed in the target, but whose state-DB update is replayed
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=600, orders=100, bad_every=11)
    spec = spec_for(source, pg_url, chunk_rows=150)
    mid = submit(driver.rt.db, driver.publisher, spec)
    loads: list[dict[str, object]] = []

    def keep_loads(task: str, kwargs: dict[str, object]) -> bool:
        if task == TASK_LOAD:
            loads.append(kwargs)
        return True

    driver.run(on_message=keep_loads)
    assert loads
    # When every load message arrives again after the migration finished
    for kwargs in loads:
        assert driver.deliver(TASK_LOAD, kwargs) == "skipped"
    # Then nothing changed
    assert_migrated(
        driver.rt.db, mid, spec, expected_bad={"Customers": 0, "order_lines": bad_lines(100, 3, 11)}
    )


def test_lost_messages_are_resent_by_the_sweeper(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    # Given a broker that loses every third transform and load message
    settings = make_settings(requeue_after_s=0.01)
    driver = Driver(settings)
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=900, orders=150)
    spec = spec_for(source, pg_url, chunk_rows=200)
    mid = submit(driver.rt.db, driver.publisher, spec)
    seen = {"n": 0}

    def lossy(task: str, kwargs: dict[str, object]) -> bool:
        seen["n"] += 1
        return not (task in (TASK_TRANSFORM, TASK_LOAD) and seen["n"] % 3 == 0)

    from etl_tasks.sweeper import sweep

    # When it runs, with sweeper passes whenever the queue runs dry
    for _ in range(200):
        driver.run(on_message=lossy)
        if driver.state(mid) == "succeeded":
            break
        sweep(driver.rt)
    # Then the migration finished anyway
    assert_migrated(driver.rt.db, mid, spec)
    driver.close()
