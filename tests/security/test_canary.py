"""A password written in a spec appears nowhere but in its sealed form.

Not in any API answer, log line, Redis key or value (broker and staging),
event, error text or idempotency record, nor in a plain ``pg_dump`` of the
state DB.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from sqlalchemy.engine import make_url

from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Migration
from tests.data import build_source
from tests.harness import WorkerProcess, wait_for
from tests.security.conftest import Live

CANARY = "Canary-7f3a9c-secret"


def _with_password(url: str) -> str:
    return make_url(url).set(password=CANARY).render_as_string(hide_password=False)


def _redis_dump(url: str, prefix: str) -> bytes:
    """Every key under the test's prefix, with its value, as one blob."""
    client = redis.Redis.from_url(url)
    out = b""
    with client:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            out += key + b"\n"
            kind = client.type(key)
            if kind == b"string":
                out += client.get(key) or b""
            elif kind == b"list":
                out += b"".join(client.lrange(key, 0, -1))
            elif kind == b"hash":
                out += b"".join(k + v for k, v in client.hgetall(key).items())
            elif kind == b"zset":
                out += b"".join(client.zrange(key, 0, -1))
            elif kind == b"set":
                out += b"".join(client.smembers(key))
    return out


def test_the_canary_password_appears_nowhere(
    live_factory: Callable[..., Live], pg_url_factory: Callable[[], str], tmp_path: Path
) -> None:
    # Given a legacy PostgreSQL source and a target, both named with a password in the spec
    # (the machine's PostgreSQL trusts local clients, so the password is only carried)
    source, target = pg_url_factory(), pg_url_factory()
    build_source(source, customers=300, orders=40)
    live = live_factory()
    spec = {
        "name": "canary",
        "source": {"url": _with_password(source)},
        "target": {"url": _with_password(target)},
        "chunk_rows": 50,
        "streams": [
            {"source_table": "Customer", "target_table": "customers", "create_target": True},
            {"source_table": "OrderLine", "target_table": "lines", "create_target": True,
             "columns": {"OrderId": "OrderId", "LineNo": "LineNo",
                         "qty": {"from": "Qty", "transform": "int"}}},
        ],
    }  # fmt: skip
    workers = [WorkerProcess(live.settings, f"c{i}", tmp_path) for i in range(2)]
    redis_seen: list[bytes] = []
    stop = threading.Event()

    def watch_redis() -> None:  # messages and staged rows exist only while it runs
        while not stop.wait(0.2):
            redis_seen.append(_redis_dump(live.settings.broker_url, live.settings.key_prefix))

    watcher = threading.Thread(target=watch_redis)
    try:
        for w in workers:
            w.wait_ready()
        watcher.start()
        # When it is submitted (twice, with an Idempotency-Key) and runs to the end
        headers = {"Idempotency-Key": "canary-1"}
        created = live.request("POST", "/api/v1/migrations", json=spec, headers=headers)
        again = live.request("POST", "/api/v1/migrations", json=spec, headers=headers)
        assert created.status_code == 201, created.text
        mid = created.json()["id"]

        def finished() -> dict[str, Any] | None:
            view = live.request("GET", f"/api/v1/migrations/{mid}").json()
            return view if view["state"] in ("succeeded", "failed") else None

        view = wait_for(finished, 120, 0.3, "the migration to finish")
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        for w in workers:
            w.terminate()
    assert view["state"] == "succeeded", view
    # Then the canary is nowhere: API answers (every role), logs, Redis, the state DB
    answers = [created.text, again.text]
    for role in ("viewer", "operator", "admin"):
        for path in (
            f"/api/v1/migrations/{mid}",
            "/api/v1/migrations",
            f"/api/v1/migrations/{mid}/chunks",
            f"/api/v1/migrations/{mid}/quarantine",
            "/api/v1/workers",
        ):
            answers.append(live.request("GET", path, role).text)
    logs = [
        p.read_text(errors="replace") for p in (live.api.log_path, *(w.log_path for w in workers))
    ]
    state = make_url(live.settings.database_url)
    dump = subprocess.run(
        ["pg_dump", "--no-owner", "-h", "127.0.0.1", "-U", "postgres", str(state.database)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "baton_state_marker" in dump and mid in dump  # the dump is the real thing
    canary = CANARY.encode()
    assert not [a for a in answers if CANARY in a]
    assert not [log for log in logs if CANARY in log]
    assert redis_seen and not [blob for blob in redis_seen if canary in blob]
    assert CANARY not in dump
    with StateDB(live.settings.database_url).reading() as s:
        mig = s.get(Migration, mid)
        assert mig is not None and mig.sealed and CANARY not in repr(mig.spec)
