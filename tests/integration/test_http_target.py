"""The HTTP API target against a real HTTP server (ops/chaos/http_api.py), steps run in-process.

Whatever the API does (429 and 503 with Retry-After, 500, slow answers, dropped
connections, 413, 422 for chosen rows), the rows it stores equal the source's
rows that map, each once, and the refused rows are quarantined with the API's
own message. Preflight checks the endpoint without writing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from etl_tasks.boundary.envrefs import EnvPolicy
from etl_tasks.boundary.identity import OwnStores
from etl_tasks.boundary.network import HostPolicy
from etl_tasks.boundary.paths import PathPolicy
from etl_tasks.boundary.policy import Boundary
from etl_tasks.errors import SpecError
from etl_tasks.preflight import preflight
from etl_tasks.settings import Settings
from etl_tasks.spec import parse_spec
from etl_tasks.state.models import Chunk, HttpBatch, Migration, QuarantinedRow
from etl_tasks.sweeper import sweep
from etl_tasks.views import migration_view
from ops.chaos.http_api import TOKEN, HttpApi, running_api
from tests.data import build_items, sqlite_url, submit
from tests.harness import Driver
from tests.integration.api_support import MIGRATIONS, Api

ROWS = 600
BAD_EVERY = 97  # "many" as a quantity: quarantined by the transform, never sent


def http_spec(source: str, api: HttpApi, *, chunk_rows: int = 200, **http: Any) -> dict[str, Any]:
    return {
        "name": "items-to-api",
        "source": {"url": source},
        "target": {
            "http": {
                "url": api.url,
                "auth": {"bearer_env": "CLOUD_TOKEN"},
                "rows_field": "rows",
                "batch_rows": 50,
                "timeout_s": 5,
                **http,
            }
        },
        "chunk_rows": chunk_rows,
        "max_bad_rows": 10_000,
        "streams": [
            {
                "source_table": "items",
                "target_table": "items",
                "columns": {
                    "id": "id",
                    "name": "name",
                    "qty": {"from": "qty", "transform": "int"},
                },
            }
        ],
    }


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLOUD_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture
def source(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "legacy.db")
    build_items(url, ROWS, bad_every=BAD_EVERY)
    return url


@pytest.fixture
def cloud() -> Iterator[HttpApi]:
    with running_api() as server:
        yield server


def settle(driver: Driver, migration_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """Deliver, and let the sweeper re-send what waits (not_before), until it settles."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        driver.run()
        view = migration_view(driver.rt.db, migration_id)
        if view["state"] != "running":
            return view
        time.sleep(0.1)
        sweep(driver.rt)
    return migration_view(driver.rt.db, migration_id)


def expected_ids(refused: frozenset[int] | set[int] = frozenset()) -> set[int]:
    return {i for i in range(1, ROWS + 1) if i % BAD_EVERY and i not in refused}


def assert_each_once(api: HttpApi, ids: set[int]) -> None:
    stored = [row["id"] for row in api.rows("items")]
    twice = [i for i, n in Counter(stored).items() if n > 1]
    assert not twice, f"rows stored twice: {twice[:10]}"
    assert set(stored) == ids, (sorted(ids - set(stored))[:10], sorted(set(stored) - ids)[:10])


def quarantined(driver: Driver, migration_id: str) -> dict[str, str]:
    with driver.rt.db.reading() as s:
        rows = s.execute(
            select(QuarantinedRow.key, QuarantinedRow.reason).where(
                QuarantinedRow.migration_id == migration_id
            )
        ).all()
    return {str(k): str(r) for k, r in rows}


def test_every_row_arrives_once_whatever_the_api_does(
    make_settings: Callable[..., Settings], source: str, cloud: HttpApi, token: str
) -> None:
    # Given an API that refuses some rows by name, takes at most 40 rows a request, and
    # fails in every way an API fails while the chunks load
    refused = {i for i in range(1, ROWS + 1) if i % 41 == 0 and i % BAD_EVERY}
    cloud.refuse = lambda row: "id is a multiple of 41" if row["id"] % 41 == 0 else None
    cloud.max_rows = 40
    cloud.slow_s = 0.3
    cloud.faults.extend(["429", "drop-after", "503", "slow", "drop", "500", "drop-after"])
    driver = Driver(make_settings())
    spec = http_spec(source, cloud, batch_rows=50)
    mid = submit(driver.rt.db, driver.publisher, spec)
    # When the migration runs to its end
    view = settle(driver, mid)
    # Then it succeeded, the API holds every row that maps, each once
    assert view["state"] == "succeeded", view
    assert view["delivery"] == "exactly_once", view
    assert view["target"]["http"]["auth"] == {"bearer_env": "CLOUD_TOKEN"}, view
    assert_each_once(cloud, expected_ids(refused))
    stream = view["streams"][0]
    assert stream["rows_loaded"] == len(expected_ids(refused)), stream
    # And the rows the API refused are quarantined with its own message, next to the
    # rows the transform refused
    bad = quarantined(driver, mid)
    assert len(bad) == len(refused) + ROWS // BAD_EVERY, bad
    api_bad = [r for r in bad.values() if "multiple of 41" in r]
    assert len(api_bad) == len(refused) and all("HTTP 422" in r for r in api_bad), api_bad
    # And a request was sent twice only when its answer was lost (the same key again),
    # and no confirmed batch was sent again after an error
    confirmed = Counter(r.key for r in cloud.received if r.status == 200)
    dropped = {r.key for r in cloud.received if r.status == 0}
    assert all(n == 1 or key in dropped for key, n in confirmed.items()), confirmed
    assert all(r.key for r in cloud.received), "a request without an Idempotency-Key"
    # And a 413 lowered the stream's batch size: no request after the last one (the first
    # ones may have had their answer dropped) held more than the API takes
    last_413 = max(i for i, r in enumerate(cloud.received) if r.status == 413)
    assert all(r.rows <= 40 for r in cloud.received[last_413 + 1 :])
    # And the ledger lives in the state DB, one row per confirmed batch
    with driver.rt.db.reading() as s:
        batches = list(s.scalars(select(HttpBatch).where(HttpBatch.migration_id == mid)))
    assert sum(b.rows for b in batches) == len(expected_ids(refused))
    driver.close()


def test_a_refusal_that_names_no_row_is_bisected(
    make_settings: Callable[..., Settings], source: str, cloud: HttpApi, token: str
) -> None:
    refused = {7, 123, 124, 555}
    cloud.name_rows = False
    cloud.refuse = lambda row: f"row {row['id']} is not wanted" if row["id"] in refused else None
    driver = Driver(make_settings())
    spec = http_spec(source, cloud, delivery="at_least_once")
    mid = submit(driver.rt.db, driver.publisher, spec)
    view = settle(driver, mid)
    assert view["state"] == "succeeded", view
    assert view["delivery"] == "at_least_once", view  # the status says what the spec said
    assert view["duplicates_possible"] is False, view  # no answer was lost
    assert_each_once(cloud, expected_ids(refused))
    bad = quarantined(driver, mid)
    for i in refused:
        assert f"row {i} is not wanted" in bad[f"[{i}]"], bad
    driver.close()


def test_an_outage_makes_the_migration_wait_then_resume(
    make_settings: Callable[..., Settings], source: str, cloud: HttpApi, token: str
) -> None:
    driver = Driver(make_settings())
    mid = submit(driver.rt.db, driver.publisher, http_spec(source, cloud, chunk_rows=100))
    driver.run(max_messages=6)  # planned, and some chunks on their way
    cloud.go_down()
    driver.run()  # every load fails; an empty chunk may finish meanwhile
    time.sleep(driver.rt.settings.retry_backoff_max_s + 0.05)
    sweep(driver.rt)
    driver.run()  # the loads try again, and fail again: the migration waits, saying why
    with driver.rt.db.reading() as s:
        mig = s.get(Migration, mid)
        assert mig is not None and mig.state == "running", mig
        assert "target unavailable: cannot reach the API" in (mig.waiting_reason or "")
    cloud.start()  # back, on the same port
    view = settle(driver, mid)
    assert view["state"] == "succeeded", view
    assert_each_once(cloud, expected_ids())
    driver.close()


def test_a_slow_api_cuts_the_chunk_at_the_step_deadline(
    make_settings: Callable[..., Settings], source: str, cloud: HttpApi, token: str
) -> None:
    cloud.delay_s = 0.1
    driver = Driver(make_settings(step_budget_s=1.0))
    spec = http_spec(source, cloud, chunk_rows=ROWS, batch_rows=25, max_rps=50)
    mid = submit(driver.rt.db, driver.publisher, spec)
    view = settle(driver, mid)
    assert view["state"] == "succeeded", view
    assert_each_once(cloud, expected_ids())
    with driver.rt.db.reading() as s:
        chunks = list(s.scalars(select(Chunk).where(Chunk.migration_id == mid)))
    assert len(chunks) > 1, "the load was never cut at its deadline"
    posts = [r.at for r in cloud.received]
    assert (posts[-1] - posts[0]) >= (len(posts) - 1) / 50 * 0.9, "max_rps not kept"
    driver.close()


def test_refused_credentials_fail_the_migration_without_saying_them(
    make_settings: Callable[..., Settings], source: str, cloud: HttpApi, token: str
) -> None:
    driver = Driver(make_settings())
    mid = submit(driver.rt.db, driver.publisher, http_spec(source, cloud))
    cloud.token = "rotated"  # the API no longer takes the token
    view = settle(driver, mid)
    assert view["state"] == "failed", view
    assert "refused the credentials (HTTP 401)" in (view["error"] or ""), view
    assert TOKEN not in str(view)
    driver.close()


def _boundary(driver: Driver, **env: Any) -> Boundary:
    hosts = HostPolicy.parse(env.pop("hosts", None))
    return Boundary(
        EnvPolicy(None, env), hosts, PathPolicy(None), OwnStores.of(driver.rt.db.url, [])
    )


def _problems(spec: dict[str, Any], boundary: Boundary) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        preflight(parse_spec(spec), boundary)
    return {e.path: e.message for e in caught.value.errors}


def test_preflight_checks_the_api_without_writing(
    driver: Driver, source: str, cloud: HttpApi
) -> None:
    spec = http_spec(source, cloud)
    # A credential variable that is not set, or not allowed
    assert "is not set" in _problems(spec, _boundary(driver))["target/http/auth/bearer_env"]
    baton = {
        **spec,
        "target": {"http": {**spec["target"]["http"], "auth": {"bearer_env": "BATON_X"}}},
    }
    assert (
        "may not be used"
        in _problems(baton, _boundary(driver, BATON_X="x"))["target/http/auth/bearer_env"]
    )
    # A host the allow-list does not name
    problems = _problems(spec, _boundary(driver, CLOUD_TOKEN=TOKEN, hosts="cloud.example.com"))
    assert "not allowed" in problems["target/http/url"], problems
    # A token the API refuses
    problems = _problems(spec, _boundary(driver, CLOUD_TOKEN="wrong"))
    assert "refused the credentials (HTTP 401)" in problems["target/http/url"], problems
    # SQL-only options
    stream = {**spec["streams"][0], "create_target": True, "write": "insert"}
    problems = _problems({**spec, "streams": [stream]}, _boundary(driver, CLOUD_TOKEN=TOKEN))
    assert set(problems) == {"streams/0/create_target", "streams/0/write"}, problems
    # A good spec passes, and nothing was ever posted
    keys = preflight(parse_spec(spec), _boundary(driver, CLOUD_TOKEN=TOKEN))
    assert keys == {"items": ["id"]}
    assert cloud.received == [] and cloud.options > 0


def test_the_api_takes_an_http_target_and_refuses_sql_only_options(
    api: Api, source: str, cloud: HttpApi, token: str
) -> None:
    spec = http_spec(source, cloud, delivery="at_least_once")
    resp = api.submit(spec)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    shown = api.client.get(f"{MIGRATIONS}/{resp.get_json()['id']}").get_json()
    assert shown["delivery"] == "at_least_once", shown
    assert shown["target"] == {"http": spec["target"]["http"]}, shown
    assert TOKEN not in resp.get_data(as_text=True)
    stream = {**spec["streams"][0], "create_target": True}
    resp = api.submit({**spec, "name": "again", "streams": [stream]})
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert "no table to create" in resp.get_data(as_text=True)
    assert cloud.received == []  # preflight wrote nothing


def test_a_load_that_died_after_its_record_sends_nothing_again(
    make_settings: Callable[..., Settings],
    source: str,
    cloud: HttpApi,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given loads that die right after the chunk's ledger record is written, before the
    # state DB hears of it (the first time each chunk loads)
    from etl_tasks.steps import load as load_step

    real_finish = load_step.finish
    died: set[int] = set()

    def dies_once(rt: Any, c: Any, record: Any, load_ms: Any, **kwargs: Any) -> Any:
        if c.chunk_id not in died:
            died.add(c.chunk_id)
            raise RuntimeError("worker died")
        return real_finish(rt, c, record, load_ms, **kwargs)

    monkeypatch.setattr(load_step, "finish", dies_once)
    driver = Driver(make_settings())
    mid = submit(driver.rt.db, driver.publisher, http_spec(source, cloud, chunk_rows=150))
    driver.run()
    posted = len(cloud.received)
    # And the staged rows of one of them are gone meanwhile (the ledger decides)
    with driver.rt.db.reading() as s:
        chunk = s.scalars(select(Chunk).where(Chunk.migration_id == mid, Chunk.rows_in > 0)).first()
        assert chunk is not None and chunk.stage_token is not None
    driver.rt.staging.delete(chunk.id, chunk.stage_token, "transformed")
    # When the loads are delivered again
    view = settle(driver, mid)
    # Then every chunk is finished from its ledger record: no request was sent again
    assert view["state"] == "succeeded", view
    assert len(cloud.received) == posted
    assert_each_once(cloud, expected_ids())
    assert view["streams"][0]["rows_loaded"] == len(expected_ids())
    driver.close()


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_a_lost_answer_then_a_413_elsewhere_sends_the_same_requests_again(
    make_settings: Callable[..., Settings],
    source: str,
    cloud: HttpApi,
    token: str,
    delivery: str,
) -> None:
    # Given an API that applies the first request and drops its answer, then lowers its
    # limit to 50 rows a request (the next chunk's request gets a 413, and the stream's
    # batch size drops to 50 for every worker) before the first chunk is loaded again
    cloud.faults.extend(["drop-after", "shrink:50"])
    driver = Driver(make_settings())
    spec = http_spec(source, cloud, batch_rows=100, delivery=delivery)
    mid = submit(driver.rt.db, driver.publisher, spec)

    # When the migration runs to its end
    view = settle(driver, mid)

    # Then the lost request went again whole, under its own key, and no row arrived twice
    assert view["state"] == "succeeded", view
    lost = next(r.key for r in cloud.received if r.status == 0)
    sent = [(r.status, r.rows) for r in cloud.received if r.key == lost]
    assert sent == [(200, 100), (0, 0), (200, 100)], sent
    assert any(r.status == 413 for r in cloud.received)
    assert_each_once(cloud, expected_ids())
    # And the status says how many rows went again after an answer that never came, and,
    # when the API is not trusted to honour the keys, that rows may have arrived twice
    assert view["streams"][0]["rows_sent_again"] == 100, view["streams"][0]
    assert view["duplicates_possible"] is (delivery == "at_least_once"), view
    driver.close()


def test_requests_go_to_the_address_checked_whatever_the_name_resolves_to_later(
    make_settings: Callable[..., Settings],
    source: str,
    cloud: HttpApi,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an internal service on another address of this machine, at the API's port, and
    # a name that resolves to the API when Baton checks it (its resolver threads) but to the
    # internal service on any other lookup: DNS rebinding, as a hosts-style override
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "cloud.test":
            checked = threading.current_thread().name.startswith("baton-dns")
            host = cloud.address if checked else "127.0.0.2"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with running_api(address="127.0.0.2", port=cloud.port) as internal:
        driver = Driver(make_settings(allowed_hosts=f"{cloud.address}/32"))
        spec = http_spec(source, cloud)
        spec["target"]["http"]["url"] = f"http://cloud.test:{cloud.port}/v1/{{table}}/import"

        # When the spec is checked (preflight probes the API) and the migration runs
        mid = submit(driver.rt.db, driver.publisher, spec)
        view = settle(driver, mid)

        # Then every request went to the address that was checked, under the name
        assert view["state"] == "succeeded", view
        assert_each_once(cloud, expected_ids())
        assert cloud.options > 0
        assert internal.received == [] and internal.options == 0
        assert cloud.hosts == {f"cloud.test:{cloud.port}"}
    driver.close()
