"""The dashboard's live updates: one poller for every stream, resumption, a process of its own."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import requests

from api.live import Broadcaster, QueryCounter
from etl_tasks.dashboard_views import Snapshot, live_snapshot
from etl_tasks.settings import Settings
from etl_tasks.state.db import StateDB
from etl_tasks.tokens import revoke_token
from etl_tasks.workers import WorkerInfo, heartbeat
from ops.embedded import free_port
from tests.api_process import ApiProcess
from tests.harness import Driver
from tests.integration.api_support import Spec, make_api

STREAMS = 50


class _Source:
    """Snapshots a test sets by hand; counts how often they are read."""

    def __init__(self) -> None:
        self.reads = 0
        self.states: dict[str, str] = {"a": "running"}

    def __call__(self) -> Snapshot:
        self.reads += 1
        migrations = {k: {"id": k, "state": v} for k, v in self.states.items()}
        return Snapshot(datetime(2026, 1, 1), migrations, [], {1})


def _render(name: str, context: dict[str, Any]) -> str:
    return f"{name}:{context.get('p', {}).get('state', '')}"


def _frames(chunks: Iterator[str], n: int) -> list[dict[str, str]]:
    """The first ``n`` events of a stream, each as {id, event, data}."""
    out: list[dict[str, str]] = []
    for chunk in chunks:
        if chunk.startswith("id:"):
            fields = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
            out.append(fields)
            if len(out) == n:
                break
    return out


@pytest.fixture
def source() -> _Source:
    return _Source()


@pytest.fixture
def hub(source: _Source) -> Iterator[Broadcaster]:
    b = Broadcaster(source, _render, poll_s=0.2)
    yield b
    b.stop()


def test_every_stream_shares_one_poll(hub: Broadcaster, source: _Source) -> None:
    # Given 50 streams reading at once
    got: list[list[dict[str, str]]] = []

    def read() -> None:
        got.append(_frames(hub.stream(None, lifetime_s=3), 5))

    threads = [threading.Thread(target=read) for _ in range(STREAMS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(1.0)
    source.states["a"] = "paused"
    for t in threads:
        t.join(10)
    # Then each saw the change, and the source was read once per poll, not per stream
    assert len(got) == STREAMS
    seen = [[f["data"] for f in frames if f["event"] == "m-a"] for frames in got]
    assert all(s == ["_progress.html:running", "_progress.html:paused"] for s in seen), seen
    assert source.reads <= (time.monotonic() - started) / 0.2 + 2  # 50 streams: 1 read a poll
    pollers = [t for t in threading.enumerate() if t.name == f"live-poller-{hub.epoch}"]
    assert len(pollers) == 1


def test_nobody_listening_reads_nothing(hub: Broadcaster, source: _Source) -> None:
    list(islice(hub.stream(None, lifetime_s=0.5), 3))
    time.sleep(0.6)
    reads = source.reads
    time.sleep(0.6)
    assert source.reads == reads


def test_a_stream_ends_after_its_lifetime(hub: Broadcaster) -> None:
    started = time.monotonic()
    list(hub.stream(None, lifetime_s=1.0))
    assert 0.9 < time.monotonic() - started < 2.5


def test_a_reconnecting_stream_gets_only_what_changed(hub: Broadcaster, source: _Source) -> None:
    first = _frames(hub.stream(None, lifetime_s=2), 3)
    assert {f["event"] for f in first} == {"m-a", "workers", "migrations"}
    last_id = first[-1]["id"]
    source.states["a"] = "paused"
    # Resumed: only the migration whose state changed, and the list that shows it
    resumed = _frames(hub.stream(last_id, lifetime_s=2), 2)
    assert {f["event"] for f in resumed} == {"m-a", "migrations"}
    assert next(f for f in resumed if f["event"] == "m-a")["data"] == "_progress.html:paused"
    # An id of another process (a restart) gets everything again
    again = _frames(hub.stream("0000-9", lifetime_s=2), 3)
    assert {f["event"] for f in again} == {"m-a", "workers", "migrations"}


def test_a_revoked_session_is_signed_out(hub: Broadcaster) -> None:
    chunks = list(hub.stream(None, lifetime_s=2, still_allowed=lambda snap: False))
    assert any("event: signed-out" in c for c in chunks)


@pytest.mark.slow
def test_fifty_streams_leave_the_api_answering(
    tmp_path: Path, redis_server: str, key_prefix: str, pg_url: str
) -> None:
    """A real ``baton api`` with its live process: 50 open pages' streams cost the API
    nothing, and the state DB about one query a second."""
    live_port = free_port()
    api = ApiProcess(
        tmp_path, redis_server, key_prefix, database_url=pg_url, BATON_LIVE_PORT=str(live_port)
    )
    live = f"http://127.0.0.1:{live_port}"
    try:
        api.wait_ready()
        _wait_up(f"{live}/healthz")
        browser = requests.Session()
        form = browser.get(f"{api.url}/sign-in", timeout=5).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf
        signed = browser.post(
            f"{api.url}/sign-in",
            data={"token": api.token("viewer", "viewer-in-test"), "csrf": csrf.group(1)},
            timeout=5,
            allow_redirects=False,
        )
        assert signed.status_code == 302
        # A stream without the session is refused
        assert requests.get(f"{live}/events", timeout=5).status_code == 401

        opened: list[requests.Response] = []
        for _ in range(STREAMS):
            resp = browser.get(
                f"{live}/events", stream=True, timeout=10, headers={"Origin": api.url}
            )
            assert resp.status_code == 200
            assert resp.headers["Access-Control-Allow-Origin"] == api.url
            opened.append(resp)
        for resp in opened:  # each has its first events
            assert next(resp.iter_lines(decode_unicode=True)).startswith("retry:")
        # a stream is counted once its handler has sent its first events: wait for the last
        deadline = time.monotonic() + 5
        while (before := requests.get(f"{live}/stats", timeout=5).json())["streams"] < STREAMS:
            assert time.monotonic() < deadline, before
            time.sleep(0.05)
        assert before["streams"] == STREAMS
        t0 = time.monotonic()
        for _ in range(10):
            started = time.monotonic()
            assert requests.get(f"{api.url}/healthz", timeout=1).ok
            assert time.monotonic() - started < 1.0
            time.sleep(0.5)
        after = requests.get(f"{live}/stats", timeout=5).json()
        elapsed = time.monotonic() - t0
        assert after["queries"] - before["queries"] <= elapsed + 2, (before, after, elapsed)
        assert after["polls"] > before["polls"]
        # When the viewer's token is revoked, its streams end and no new one opens
        watcher = browser.get(f"{live}/events", stream=True, timeout=10)
        lines = watcher.iter_lines(chunk_size=1, decode_unicode=True)
        assert next(lines).startswith("retry:")
        db = StateDB(pg_url)
        try:
            revoke_token(db, "viewer-in-test")
        finally:
            db.dispose()
        started = time.monotonic()
        rest = list(lines)  # to its end
        assert "event: signed-out" in rest, rest[-5:]
        assert time.monotonic() - started < 5
        assert browser.get(f"{live}/events", timeout=5).status_code == 401
        for resp in opened:
            resp.close()
    finally:
        api.close()
    # and the live process stopped with the API
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{live}/healthz", timeout=2)


def _wait_up(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def test_the_snapshot_is_one_statement(each_state_db: Callable[..., Settings], spec: Spec) -> None:
    settings = each_state_db()
    api = make_api(settings)
    driver = Driver(settings)
    try:
        db = api.app.extensions["baton"].db
        token = api.token("viewer")
        mid = api.created(spec)
        driver.publisher.queue.append(("baton.plan", {"migration_id": mid}))
        driver.run_to_end(mid)
        info = WorkerInfo(name="w1@h", version="1.2.3", host="h", pid=1, probe_url=None)
        heartbeat(db, info, state="draining", in_flight=2, steps_done=5)
        counter = QueryCounter(db)
        snap = live_snapshot(db)
        assert counter.count == 1
        view = snap.migrations[mid]
        assert view["state"] == "succeeded" and view["percent"] == 100.0
        assert view["chunks_done"] == view["chunks_total"] > 0 and view["rows"] > 0
        assert [(w["name"], w["in_flight"], w["draining"]) for w in snap.workers] == [
            ("w1@h", 2, True)
        ]
        assert token and snap.live_tokens == {1}
    finally:
        driver.close()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _live_processes(api_pid: int) -> list[int]:
    def cmdline(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return ""

    top = [p for p in _descendants(api_pid) if " sse " in f"{cmdline(p)} "]
    return [p for t in top for p in (t, *_descendants(t))]


@pytest.mark.slow
def test_a_killed_live_process_is_started_again(
    tmp_path: Path, redis_server: str, key_prefix: str
) -> None:
    live_port = free_port()
    api = ApiProcess(tmp_path, redis_server, key_prefix, BATON_LIVE_PORT=str(live_port))
    live = f"http://127.0.0.1:{live_port}/healthz"
    try:
        api.wait_ready()
        _wait_up(live)
        # Given the live process killed outright (an OOM kill, a crash)
        killed = _live_processes(api.proc.pid)
        assert killed
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        # Then the API goes on answering, and the live updates come back by themselves
        assert requests.get(f"{api.url}/healthz", timeout=2).ok
        _wait_up(live, timeout_s=15)
        assert not set(_live_processes(api.proc.pid)) & set(killed)
        assert "the live process exited" in api.log()
    finally:
        api.close()
