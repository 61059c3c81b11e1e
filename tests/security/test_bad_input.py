"""Bad input is a precise 4xx that creates nothing, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from etl_tasks.connectors.sql.engines import create_sql_engine
from tests.data import build_source, sqlite_url
from tests.security.conftest import Live, errors_of

Mutation = Callable[[dict[str, Any], str], None]


def _spec(legacy: str, target: str) -> dict[str, Any]:
    return {
        "name": "bad",
        "source": {"url": legacy},
        "target": {"url": target},
        "streams": [
            {"source_table": "Customer", "target_table": "customers", "create_target": True}
        ],
    }


def _source(url: str) -> Mutation:
    return lambda spec, _pg: spec.update(source={"url": url})


def _target(url: str) -> Mutation:
    return lambda spec, _pg: spec.update(target={"url": url})


def _stream(**values: Any) -> Mutation:
    return lambda spec, _pg: spec["streams"][0].update(values)


DEEP = "[" * 1000 + '"x"' + "]" * 1000  # JSON encoders give up long before this


def _nested(spec: dict[str, Any], _pg: str) -> None:
    spec["streams"][0]["columns"] = {"CustomerId": "CustomerId", "deep": {"value": "DEEP"}}


def _pg_target(spec: dict[str, Any], pg: str) -> None:
    spec["target"] = {"url": pg}


def _pg_target_with(**values: Any) -> Mutation:
    def mutate(spec: dict[str, Any], pg: str) -> None:
        _pg_target(spec, pg)
        spec["streams"][0].update(values)

    return mutate


def _pg_catalog_source(spec: dict[str, Any], pg: str) -> None:
    spec["source"] = {"url": pg}
    spec["streams"][0].update(source_table="pg_catalog.pg_authid", key="oid")


def _target_without_key(spec: dict[str, Any], pg: str) -> None:
    engine = create_sql_engine(pg)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (full_name text)")
    engine.dispose()
    spec["target"] = {"url": pg}
    spec["streams"][0].update(create_target=False)


CASES: dict[str, tuple[Mutation, str, str]] = {
    "redis URL": (_target("redis://127.0.0.1:6379/0"), "target/url", "unsupported"),
    "file URL": (_source("file:///etc/passwd"), "source/url", "unsupported"),
    "http URL": (_target("http://127.0.0.1:8080/x"), "target/url", "unsupported"),
    "oracle URL": (_target("oracle://u@127.0.0.1/x"), "target/url", "unsupported"),
    "port not a number": (_target("postgresql://u@127.0.0.1:five/x"), "target/url", "port"),
    "NUL in a table": (
        _stream(target_table="cust\u0000omers"),
        "streams/0/target_table",
        "NUL",
    ),
    "constant 1000 deep": (_nested, "streams/0/columns/deep/value", "nested"),
    "80-character identifier": (
        _pg_target_with(target_table="t" * 80),
        "streams/0/target_table",
        "63 bytes",
    ),
    "pg_catalog table": (_pg_catalog_source, "streams/0/source_table", "server"),
    "in-memory SQLite": (_target("sqlite://"), "target/url", "in-memory"),
    "target without its key": (_target_without_key, "streams/0/target_table", "key column"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_located_422_and_creates_nothing(
    refusing_live: Live, tmp_path: Path, pg_url: str, case: str
) -> None:
    live = refusing_live
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=5, orders=1)
    spec = _spec(legacy, sqlite_url(tmp_path / "target.db"))
    mutate, path, words = CASES[case]
    mutate(spec, pg_url)
    resp = live.request(
        "POST",
        "/api/v1/migrations",
        data=orjson.dumps(spec).replace(b'"DEEP"', DEEP.encode()),
        headers={"Content-Type": "application/json"},
    )
    errors = errors_of(resp)
    assert path in errors, errors
    assert words in errors[path]
    assert live.migrations() == 0
    assert not (tmp_path / "target.db").exists()


def test_an_oversized_chunked_body_is_413(live: Live) -> None:
    limit = live.settings.max_body_bytes

    def chunks() -> Any:
        yield b'{"name": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    resp = requests.post(
        live.api.url + "/api/v1/migrations",
        data=chunks(),
        headers={
            "Authorization": f"Bearer {live.tokens['operator']}",
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert resp.status_code == 413, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    assert live.migrations() == 0
