"""Failed authentications are throttled per client address, in the (real) staging Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
import redis
from werkzeug.test import TestResponse

from etl_tasks.settings import Settings
from tests.integration.api_support import MIGRATIONS, Api, bearer, error_body, make_api

BAD = bearer("bt_wrong")


def _get(api: Api, address: str, headers: dict[str, str] | None = None) -> TestResponse:
    return api.client.get(MIGRATIONS, headers=headers or {}, environ_base={"REMOTE_ADDR": address})


@pytest.fixture
def throttled(make_settings: Callable[..., Settings]) -> Api:
    return make_api(make_settings(auth="on", auth_failures_max=3, auth_failures_window_s=60))


def test_after_max_failures_an_address_gets_429_until_the_window_ends(throttled: Api) -> None:
    # Given three failed authentications from one address (a missing token counts too)
    for headers in (BAD, {}, bearer("bt_other")):
        assert error_body(_get(throttled, "10.0.0.1", headers), 401)
    # When it tries again
    resp = _get(throttled, "10.0.0.1", BAD)
    # Then it is told to wait for what is left of the window, in JSON
    body = error_body(resp, 429)
    assert body.keys() == {"error"}
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert error_body(_get(throttled, "10.0.0.1"), 429)
    # And another address is not affected
    assert error_body(_get(throttled, "10.0.0.2", BAD), 401)


def test_a_valid_token_is_never_throttled(throttled: Api) -> None:
    viewer = bearer(throttled.token("viewer"))
    for _ in range(4):
        _get(throttled, "10.0.0.1", BAD)
    assert error_body(_get(throttled, "10.0.0.1", BAD), 429)
    assert _get(throttled, "10.0.0.1", viewer).status_code == 200


def test_every_api_process_shares_the_count(
    make_settings: Callable[..., Settings], redis_server: str, key_prefix: str
) -> None:
    # Given two API instances on the same settings (as two processes would be)
    settings = make_settings(auth="on", auth_failures_max=3, auth_failures_window_s=60)
    one, two = make_api(settings), make_api(settings)
    # When failures from one address reach both
    for api in (one, two, one):
        assert error_body(_get(api, "10.0.0.7", BAD), 401)
    # Then the next one is refused by either
    assert error_body(_get(two, "10.0.0.7", BAD), 429)
    # And the count lives in Redis, under the key prefix, expiring with its window
    client = redis.Redis.from_url(redis_server)
    key = f"{key_prefix}auth-fail:10.0.0.7"
    assert int(client.get(key) or 0) == 4
    assert 0 < client.ttl(key) <= 60
    client.close()


def test_the_window_ends(make_settings: Callable[..., Settings]) -> None:
    api = make_api(make_settings(auth="on", auth_failures_max=1, auth_failures_window_s=1))
    assert error_body(_get(api, "10.0.0.3", BAD), 401)
    resp = _get(api, "10.0.0.3", BAD)
    assert error_body(resp, 429) and resp.headers["Retry-After"] == "1"
    time.sleep(1.1)
    assert error_body(_get(api, "10.0.0.3", BAD), 401)


def test_x_forwarded_for_is_ignored_without_trusted_proxies(throttled: Api) -> None:
    # A client cannot escape the count by claiming another address
    for n in range(3):
        headers = {**BAD, "X-Forwarded-For": f"192.0.2.{n}"}
        assert error_body(_get(throttled, "10.0.0.1", headers), 401)
    assert error_body(_get(throttled, "10.0.0.1", {**BAD, "X-Forwarded-For": "192.0.2.9"}), 429)


def test_behind_a_trusted_proxy_the_forwarded_address_counts(
    make_settings: Callable[..., Settings], redis_server: str, key_prefix: str
) -> None:
    # Given one trusted proxy at 10.0.0.1 forwarding two clients
    api = make_api(make_settings(auth="on", auth_failures_max=2, trusted_proxy_hops=1))
    alice = {**BAD, "X-Forwarded-For": "198.51.100.1"}
    bob = {**BAD, "X-Forwarded-For": "198.51.100.2"}
    # When one client fails three times
    for _ in range(2):
        assert error_body(_get(api, "10.0.0.1", alice), 401)
    # Then that client is throttled, the other (behind the same proxy) is not
    assert error_body(_get(api, "10.0.0.1", alice), 429)
    assert error_body(_get(api, "10.0.0.1", bob), 401)
    # And a client's own claim in front of the proxy's is not believed
    spoof = {**BAD, "X-Forwarded-For": "198.51.100.2, 198.51.100.1"}
    assert error_body(_get(api, "10.0.0.1", spoof), 429)
    client = redis.Redis.from_url(redis_server)
    assert client.exists(f"{key_prefix}auth-fail:198.51.100.1")
    client.close()


def test_without_redis_valid_tokens_pass_and_others_get_401(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a staging Redis that cannot be reached
    api = make_api(
        make_settings(auth="on", auth_failures_max=1, staging_url="redis://127.0.0.1:1/0")
    )
    viewer = bearer(api.token("viewer"))
    # Then a bad token gets 401 as before, however often, and a warning says why
    with caplog.at_level(logging.WARNING, logger="api.throttle"):
        for _ in range(3):
            assert error_body(_get(api, "10.0.0.1", BAD), 401)
    assert "cannot count a failed authentication" in caplog.text
    # And a valid token is served
    assert _get(api, "10.0.0.1", viewer).status_code == 200
