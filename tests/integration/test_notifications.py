"""Webhooks of finished migrations: recorded with the end, signed, retried, refused at submit.

A real receiver (``tests/webhook_receiver.py``) answers; an in-process driver runs the
migration and the sweeper on the API's state DB.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from etl_tasks.notifications import deliver_due
from etl_tasks.settings import Settings
from etl_tasks.state.models import Event, Migration, Notification
from etl_tasks.sweeper import sweep
from tests.harness import Driver
from tests.integration.api_support import MIGRATIONS, Api, Spec, bearer, error_body, make_api
from tests.webhook_receiver import Receiver

SECRET = "whsec-test-not-a-secret"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    r = Receiver(secret=SECRET).start()
    monkeypatch.setenv("HOOK_URL", r.url)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    yield r
    r.stop()


@pytest.fixture
def both(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[tuple[Api, Driver]]:
    """The API (auth off) and a driver on one state DB (SQLite, or PostgreSQL when a test
    asks for it); retries back off in 50 ms."""
    state: dict[str, Any] = {}
    if getattr(request, "param", "sqlite") == "postgresql":
        state["database_url"] = request.getfixturevalue("pg_url")
    settings = make_settings(notify_backoff_s=0.05, notify_backoff_max_s=0.1, **state)
    driver = Driver(settings)
    yield make_api(settings), driver
    driver.close()


NOTIFY = {"url_env": "HOOK_URL", "secret_env": "HOOK_SECRET"}


def _finish(api: Api, driver: Driver, spec: Spec) -> str:
    mid = api.created({**spec, "notify": NOTIFY})
    for task, _, kwargs in api.publisher.sent:
        driver.publisher.queue.append((task, dict(kwargs)))
    api.publisher.sent.clear()
    driver.run_to_end(mid)
    assert driver.state(mid) == "succeeded"
    return mid


def _sweep_until(driver: Driver, done: Callable[[], bool], timeout_s: float = 8.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the notification was not delivered in time"
        sweep(driver.rt)
        time.sleep(0.05)


def _notifications(driver: Driver, mid: str) -> list[Notification]:
    with driver.rt.db.reading() as s:
        return list(s.scalars(select(Notification).where(Notification.migration_id == mid)))


def _kinds(driver: Driver, mid: str) -> list[str]:
    with driver.rt.db.reading() as s:
        return list(s.scalars(select(Event.kind).where(Event.migration_id == mid)))


@pytest.mark.parametrize("both", ["postgresql"], indirect=True)
def test_a_finished_migration_is_announced_once_signed_after_a_503_and_a_500(
    both: tuple[Api, Driver], spec: Spec, receiver: Receiver
) -> None:
    api, driver = both
    receiver.answers.extend([503, 500])  # Retry-After: 1 s, then no Retry-After
    # Given a migration that succeeded with "notify": one notification waits in the outbox
    mid = _finish(api, driver, spec)
    [pending] = _notifications(driver, mid)
    assert (pending.state, pending.status) == ("succeeded", "pending")
    # When the sweeper sends it: the 503 makes it wait as long as Retry-After says
    started = time.monotonic()
    assert deliver_due(driver.rt) == [(pending.id, "pending")]
    assert deliver_due(driver.rt) == []  # not due again before Retry-After
    _sweep_until(driver, lambda: bool(receiver.accepted()))
    assert time.monotonic() - started >= 0.9
    # Then the receiver saw three attempts of one delivery, each signed, one accepted
    assert [d.status for d in receiver.received] == [503, 500, 200]
    assert all(d.signed_ok for d in receiver.received)
    assert {d.headers["X-Baton-Delivery"] for d in receiver.received} == {pending.id}
    assert len({d.body for d in receiver.received}) == 1  # the same bytes every time
    body = receiver.accepted()[0].json
    view = api.client.get(f"{MIGRATIONS}/{mid}").get_json()
    assert body["delivery_id"] == pending.id and body["event"] == "migration.succeeded"
    assert body["migration"]["id"] == mid and body["migration"]["state"] == "succeeded"
    assert body["migration"]["rows_loaded"] == view["rows_loaded"] > 0
    assert body["migration"]["finished_at"] == view["finished_at"]
    assert [st["name"] for st in body["migration"]["streams"]] == [
        st["name"] for st in view["streams"]
    ]
    [sent] = _notifications(driver, mid)
    assert (sent.status, sent.attempts) == ("delivered", 3)
    assert "notification_delivered" in _kinds(driver, mid)
    # And later passes send nothing more
    sweep(driver.rt)
    assert len(receiver.received) == 3


def test_a_refusing_webhook_fails_the_delivery_at_once_and_the_events_say_so(
    both: tuple[Api, Driver], spec: Spec, receiver: Receiver
) -> None:
    api, driver = both
    receiver.answers.append(410)
    mid = _finish(api, driver, spec)
    _sweep_until(driver, lambda: bool(receiver.received))
    [n] = _notifications(driver, mid)
    assert (n.status, n.attempts) == ("failed", 1)
    assert "410" in (n.last_error or "")
    assert "notification_failed" in _kinds(driver, mid)


def test_a_delivery_past_the_give_up_window_fails(
    make_settings: Callable[..., Settings], spec: Spec, receiver: Receiver
) -> None:
    settings = make_settings(notify_backoff_s=60, notify_give_up_s=30)
    driver = Driver(settings)
    try:
        api = make_api(settings)
        receiver.answers.append(500)
        mid = _finish(api, driver, spec)
        deliver_due(driver.rt)  # the next try would come after the window: given up
        [n] = _notifications(driver, mid)
        assert n.status == "failed" and "500" in (n.last_error or "")
        assert "notification_failed" in _kinds(driver, mid)
    finally:
        driver.close()


def test_notify_on_chooses_the_ends_and_a_cancel_is_recorded_with_its_state(
    both: tuple[Api, Driver], spec: Spec, receiver: Receiver
) -> None:
    api, driver = both
    only_failed = api.created({**spec, "notify": {**NOTIFY, "on": ["failed"]}})
    cancelled = api.created({**spec, "notify": NOTIFY})
    assert api.control(cancelled, "cancel").status_code == 200
    assert [n.state for n in _notifications(driver, cancelled)] == ["cancelled"]
    assert _notifications(driver, only_failed) == []
    # The spec as stored holds no "notify": a worker of the previous version still reads it
    with driver.rt.db.reading() as s:
        mig = s.get(Migration, cancelled)
        assert mig is not None and "notify" not in mig.spec
        assert mig.notify == {**NOTIFY, "on": ["succeeded", "failed", "cancelled"]}


def test_the_sweeper_adds_the_notification_an_older_worker_could_not(
    both: tuple[Api, Driver], spec: Spec, receiver: Receiver
) -> None:
    api, driver = both
    mid = _finish(api, driver, spec)
    with driver.rt.db.session() as s:  # as a worker of the version before would have left it
        s.execute(delete(Notification).where(Notification.migration_id == mid))
    _sweep_until(driver, lambda: bool(receiver.accepted()))
    sweep(driver.rt)
    assert len(_notifications(driver, mid)) == 1
    assert len(receiver.accepted()) == 1


@pytest.mark.parametrize(
    ("settings", "notify", "env", "message"),
    [
        ({"env_allowed": "CLOUD_*"}, {"url_env": "HOOK_URL"}, {}, "BATON_ENV_ALLOWED"),
        ({}, {"url_env": "BATON_DATABASE_URL"}, {}, "BATON_* never is"),
        ({}, {"url_env": "HOOK_UNSET"}, {}, "is not set"),
        ({}, {"url_env": "HOOK_URL"}, {"HOOK_URL": "ftp://x/"}, "http:// or https://"),
        (
            {"allowed_hosts": "10.0.0.0/8"},
            {"url_env": "HOOK_URL"},
            {"HOOK_URL": "http://127.0.0.1:9/h"},
            "the webhook URL",
        ),
    ],
)
def test_a_notify_the_boundary_refuses_is_a_422_at_submit_and_creates_nothing(
    make_settings: Callable[..., Settings],
    spec: Spec,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, Any],
    notify: dict[str, str],
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("HOOK_UNSET", raising=False)
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/hooks")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    api = make_api(make_settings(**settings))
    body = error_body(api.submit({**spec, "notify": notify}), 422)
    [problem] = [e for e in body["errors"] if e["path"].startswith("notify")]
    assert problem["path"] == "notify/url_env" and message in problem["message"]
    with api.app.extensions["baton"].db.reading() as s:
        assert s.scalar(select(func.count()).select_from(Migration)) == 0


def test_a_secret_bound_to_another_host_is_refused(
    make_settings: Callable[..., Settings], spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/hooks")
    monkeypatch.setenv("HOOK_SECRET", "s")
    api = make_api(make_settings(auth="on", env_allowed="HOOK_URL,HOOK_SECRET@hooks.example.com"))
    operator = bearer(api.token("operator"))
    body = error_body(api.submit({**spec, "notify": NOTIFY}, operator), 422)
    assert [e["path"] for e in body["errors"]] == ["notify/secret_env"]


def test_next_attempt_waits_at_least_retry_after(
    both: tuple[Api, Driver], spec: Spec, receiver: Receiver
) -> None:
    api, driver = both
    receiver.retry_after_s = 120
    receiver.answers.append(503)
    mid = _finish(api, driver, spec)
    deliver_due(driver.rt)
    [n] = _notifications(driver, mid)
    with driver.rt.db.reading() as s:
        now = driver.rt.db.now(s)
    assert n.status == "pending" and n.next_attempt_at >= now + timedelta(seconds=110)
