"""The HTTP target's pure parts: canonical values, what answers mean, the boundary, keys."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
import requests

from etl_tasks.boundary.envrefs import EnvPolicy
from etl_tasks.boundary.http_urls import http_access, redact_http
from etl_tasks.boundary.identity import OwnStores
from etl_tasks.boundary.network import HostPolicy
from etl_tasks.boundary.paths import PathPolicy
from etl_tasks.boundary.policy import Boundary
from etl_tasks.connectors.base import Batch, ChunkRef
from etl_tasks.connectors.http.client import (
    Answer,
    PinnedAdapter,
    Refusal,
    TooLarge,
    judge,
    named_rows,
    retry_after,
)
from etl_tasks.connectors.http.target import batch_key, row_ids
from etl_tasks.connectors.http.values import body, json_value
from etl_tasks.endpoints import HttpSettings
from etl_tasks.errors import BoundaryError, PermanentError, TransientError


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (None, None),
        (True, True),
        (2**70, 2**70),
        (1.5, 1.5),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
        (Decimal("1E+3"), "1000"),
        (Decimal("-0.0100"), "-0.0100"),
        (datetime(2019, 3, 14, 15, 9, 26, 535000), "2019-03-14T15:09:26.535000"),
        (
            datetime(2019, 3, 14, 15, 9, tzinfo=timezone(timedelta(hours=2))),
            "2019-03-14T15:09:00+02:00",
        ),
        (date(2019, 3, 14), "2019-03-14"),
        (time(1, 2, 3), "01:02:03"),
        (timedelta(days=1, seconds=2, microseconds=500000), "P1DT2.5S"),
        (b"\x00\xff", "AP8="),
        (memoryview(b"ab"), "YWI="),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ({"a": [Decimal("1.5")]}, {"a": ["1.5"]}),
    ],
)
def test_each_value_has_one_canonical_json_form(value: Any, sent: Any) -> None:
    assert json_value(value) == sent


def test_a_body_is_rows_keyed_by_column_under_rows_field_or_bare() -> None:
    rows = [(1, Decimal("2.50"))]
    assert orjson.loads(body(["id", "price"], rows, "rows")) == {
        "rows": [{"id": 1, "price": "2.50"}]
    }
    assert orjson.loads(body(["id", "price"], rows, None)) == [{"id": 1, "price": "2.50"}]


def _answer(status: int, doc: Any = None, **headers: str) -> Answer:
    raw = orjson.dumps(doc) if doc is not None else b""
    return Answer(status, {k.lower().replace("_", "-"): v for k, v in headers.items()}, raw)


def test_answers_mean_what_their_status_says() -> None:
    judge(_answer(201), 3, "x")
    with pytest.raises(Refusal) as refused:
        judge(_answer(422, {"error": "bad", "errors": [{"index": 1, "message": "no"}]}), 3, "x")
    assert refused.value.rows == {1: "no"} and "bad" in refused.value.message
    with pytest.raises(Refusal) as refused:
        judge(_answer(409, {"message": "conflict"}), 3, "x")
    assert refused.value.rows == {} and "conflict" in refused.value.message
    with pytest.raises(TooLarge):
        judge(_answer(413), 3, "x")
    with pytest.raises(TransientError) as busy:
        judge(_answer(429, {"error": "slow down"}, Retry_After="7"), 3, "x")
    assert busy.value.retry_after == 7 and busy.value.jitter
    with pytest.raises(TransientError) as down:
        judge(_answer(502), 3, "x")
    assert down.value.retry_after is None and "target unavailable" in str(down.value)
    for status in (401, 403, 404, 405, 302):
        with pytest.raises(PermanentError):
            judge(_answer(status), 3, "x")


def test_named_rows_are_trusted_only_when_every_index_is_a_row() -> None:
    def named(errors: Any) -> dict[int, str]:
        return named_rows(orjson.dumps({"errors": errors}), 3)

    assert named([{"index": 0, "message": "a"}, {"index": 2}]) == {0: "a", 2: "refused"}
    assert named([{"index": 3}]) == {}
    assert named([{"index": True}]) == {}
    assert named("nope") == {}
    assert named_rows(b"<html>", 3) == {}


def test_retry_after_is_seconds_or_an_http_date() -> None:
    assert retry_after({"retry-after": "120"}) == 120
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert retry_after({"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}, now) == 30
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


def _boundary(hosts: str | None = None, **env: str) -> Boundary:
    return Boundary(
        EnvPolicy(None, env),
        HostPolicy.parse(hosts),
        PathPolicy(None),
        OwnStores.of("sqlite:////nonexistent/state.db", []),
    )


def test_the_boundary_checks_host_and_credential() -> None:
    settings = HttpSettings.model_validate(
        {"url": "http://127.0.0.1:9/v1/{table}/x", "auth": {"bearer_env": "TOKEN"}}
    )
    access = http_access(_boundary(TOKEN="t0k"), settings, 1.0)
    assert access.headers == {"Authorization": "Bearer t0k"}
    assert "t0k" not in repr(access)
    assert access.url_for("a b/c") == "http://127.0.0.1:9/v1/a%20b%2Fc/x"
    basic = HttpSettings.model_validate({"url": "http://127.0.0.1/", "auth": {"basic_env": "B"}})
    assert http_access(_boundary(B="u:p"), basic, 1.0).headers["Authorization"] == "Basic dTpw"
    with pytest.raises(BoundaryError, match="user:password"):
        http_access(_boundary(B="nocolon"), basic, 1.0)
    with pytest.raises(BoundaryError, match="not set"):
        http_access(_boundary(), settings, 1.0)
    with pytest.raises(BoundaryError, match="not allowed"):
        http_access(_boundary("10.0.0.0/8", TOKEN="x"), settings, 1.0)
    for url in ("http://u:p@127.0.0.1/", "http://{table}.example.com/"):
        with pytest.raises(BoundaryError):
            http_access(_boundary(), HttpSettings(url=url), 1.0)


def test_a_request_s_key_depends_on_its_rows_only() -> None:
    chunk = ChunkRef("m1", "items", 7, token=3)
    batch = Batch(["id"], [(1,), (2,)], [[1], [2]], [0, 1])
    payload = body(batch.columns, batch.rows, "rows")
    again = ChunkRef("m1", "items", 7, token=4)  # another load of the same chunk
    assert batch_key(chunk, batch, payload) == batch_key(again, batch, payload)
    other = body(batch.columns, [(1,), (3,)], "rows")
    assert batch_key(chunk, batch, payload) != batch_key(chunk, batch, other)
    assert len(set(row_ids(batch))) == 2


def test_a_shown_url_keeps_its_placeholder_and_hides_what_looks_secret() -> None:
    plain = "https://api.example.com/v1/{table}/import"
    assert redact_http(plain) == plain
    shown = redact_http("https://u:p@api.example.com/v1/{table}?api_key=abc&x=1")
    assert shown == "https://***@api.example.com/v1/{table}?api_key=***&x=1"


def test_a_pinned_connection_goes_to_the_checked_address_under_the_name() -> None:
    adapter = PinnedAdapter("API.example.com.", "192.0.2.7")

    def pool(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
        request = requests.Request("POST", url).prepare()
        return adapter.build_connection_pool_key_attributes(request, True)

    # TLS: connect to the address, but SNI and the certificate's name are the host's
    host, kwargs = pool("https://api.example.com/v1/items/import")
    assert (host["scheme"], host["host"]) == ("https", "192.0.2.7")
    assert kwargs["server_hostname"] == kwargs["assert_hostname"] == "api.example.com"
    host, kwargs = pool("http://api.example.com:8080/v1/items/import")
    assert (host["host"], host["port"]) == ("192.0.2.7", 8080) and "server_hostname" not in kwargs
    # the Host header names the host (and a port that is not the default)
    request = requests.Request("POST", "http://api.example.com:8080/x").prepare()
    adapter.add_headers(request)
    assert request.headers["Host"] == "api.example.com:8080"
    # a request to any other host is refused before it connects
    with pytest.raises(requests.ConnectionError):
        pool("https://internal.example.com/")
