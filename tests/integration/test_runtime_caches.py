"""What a worker derives from a migration's spec is built once per process, however many
of its threads ask at once (each would otherwise reflect the same tables)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from etl_tasks.runtime import Runtime
from etl_tasks.settings import Settings
from etl_tasks.system_slots import System
from tests.harness import QueuePublisher


@pytest.fixture
def rt(make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(), QueuePublisher(), worker_name="w")
    yield runtime
    runtime.close()


def _at_once(n: int, call: Callable[[], Any]) -> list[Any]:
    """``call`` on ``n`` threads released together; what each got (or raised)."""
    start = threading.Barrier(n)
    got: list[Any] = [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            got[i] = call()
        except Exception as exc:  # what the thread saw is the result
            got[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_threads_asking_for_one_stream_binding_wait_for_one_build(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a binding whose build is slow (a catalog read over a network)
    builds: list[tuple[str, str]] = []
    made = object()

    def slow(migration_id: str, stream: str) -> object:
        builds.append((migration_id, stream))
        time.sleep(0.2)
        return made

    monkeypatch.setattr(rt, "_bind", slow)
    # When four threads ask for it at once
    got = _at_once(4, lambda: rt.binding("m1", "items"))
    # Then it was built once and each thread got that one
    assert builds == [("m1", "items")]
    assert all(g is made for g in got)
    # and another stream is built on its own
    assert rt.binding("m1", "other") is made
    assert builds == [("m1", "items"), ("m1", "other")]


def test_a_build_that_fails_is_tried_again_by_the_next_caller(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a build that fails the first time (the source was unreachable)
    attempts: list[int] = []

    def flaky(migration_id: str, stream: str) -> object:
        attempts.append(1)
        time.sleep(0.1)
        if len(attempts) == 1:
            raise ConnectionError("source unreachable")
        return "bound"

    monkeypatch.setattr(rt, "_bind", flaky)
    # When threads ask at once
    got = _at_once(3, lambda: rt.binding("m1", "items"))
    # Then the one that built saw the error, the others built it again (once) and got it
    assert sum(isinstance(g, ConnectionError) for g in got) == 1
    assert [g for g in got if not isinstance(g, Exception)] == ["bound", "bound"]
    assert len(attempts) == 2
    assert rt.binding("m1", "items") == "bound"


def test_the_system_a_step_reaches_is_worked_out_once_per_migration_and_end(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the system of a migration's ends (worked out from its spec and endpoints)
    asked: list[tuple[str, str]] = []

    def system_of(migration_id: str, end: str) -> System:
        asked.append((migration_id, end))
        return System(f"postgresql://db:5432/{end}", 4)

    monkeypatch.setattr(rt, "_system_of", system_of)
    # When every step of many chunks asks, on several threads
    got = _at_once(4, lambda: [rt.system("m1", end) for end in ("source", "target") * 5])
    # Then each end was worked out once, and every thread got the same
    assert sorted(asked) == [("m1", "source"), ("m1", "target")]
    source = got[0][0]
    assert all(g[0] is source for g in got)
    # And a finished migration's are forgotten with the rest of what was derived
    rt.release("m1")
    rt.system("m1", "source")
    assert asked[-1] == ("m1", "source") and len(asked) == 3
