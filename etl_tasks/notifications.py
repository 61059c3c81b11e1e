"""Webhooks of finished migrations: an outbox in the state DB, delivered by the sweeper.

A spec's ``"notify": {"url_env": …, "secret_env": …, "on": [...]}`` names the
webhook's URL and signing secret by environment variable, through the ``*_env``
allow-list (``BATON_ENV_ALLOWED``, host bindings included); the URL's host goes
through ``BATON_ALLOWED_HOSTS`` like an HTTP target's (:func:`webhook`).

When a migration ends in a state its ``on`` lists, :func:`record_finish` adds a
:class:`~etl_tasks.state.models.Notification` in the very transaction that
changes the state, so a notification is never lost nor invented. The sweeper
sends due ones (:func:`deliver_due`): a POST of a JSON body signed with HMAC-SHA256
over ``timestamp.body``. Connection errors, timeouts, 408, 429 and 5xx are
retried with exponential backoff and jitter (a ``Retry-After`` wins) until
``BATON_NOTIFY_GIVE_UP_S``; any other answer fails the delivery at once. Either
end is an event of the migration. Delivery is at least once: every attempt of one
notification carries the same ``X-Baton-Delivery`` id (and the same body), by which
a receiver de-duplicates. Nothing here ever runs in a step or in the API.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import and_, exists, select
from sqlalchemy import exc as sa_exc

from etl_tasks.boundary.http_urls import _secret as env_value  # the *_env rules, host-bound
from etl_tasks.boundary.http_urls import http_access
from etl_tasks.boundary.policy import Boundary
from etl_tasks.connectors.http.client import Client, Refusal, TooLarge, judge
from etl_tasks.endpoints import HttpSettings
from etl_tasks.errors import BatonError, BoundaryError, TransientError
from etl_tasks.outbox import DELIVERED, FAILED, NOTIFY_ALL, PENDING, record_finish
from etl_tasks.runtime import Runtime
from etl_tasks.spec import Notify
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import MigrationState
from etl_tasks.state.models import Event, Migration, Notification

log = logging.getLogger(__name__)

SIGNATURE = "X-Baton-Signature"
TIMESTAMP = "X-Baton-Timestamp"
DELIVERY = "X-Baton-Delivery"
EVENT = "X-Baton-Event"
BATCH = 10  # notifications one sweeper pass sends at most


@dataclass(frozen=True)
class Webhook:
    """Where a notification goes, checked; the secret is never printed."""

    url: str
    secret: str | None = field(default=None, repr=False)
    pin: tuple[str, str] | None = None  # the host's name and the address checked for it


def webhook(boundary: Boundary, notify: Notify, timeout_s: float) -> Webhook:
    """The webhook's URL and secret through the boundary; :class:`BoundaryError` (its
    ``field`` a path in the spec, ``notify/…``) before anything is sent."""
    field_name = "notify/url_env"
    url = boundary.env.resolve(notify.url_env, field_name)
    try:
        settings = HttpSettings.model_validate({"url": url})
    except ValidationError:
        raise BoundaryError(
            f"environment variable {notify.url_env} must hold an http:// or https:// URL",
            field_name,
        ) from None
    try:
        access = http_access(boundary, settings, timeout_s)
    except BoundaryError as exc:
        raise BoundaryError(f"the webhook URL: {exc.message}", field_name) from None
    env_value(boundary, notify.url_env, field_name, access.host)  # its host binding, if any
    secret = None
    if notify.secret_env is not None:
        secret = env_value(boundary, notify.secret_env, "notify/secret_env", access.host)
    return Webhook(url, secret, (access.host, access.address))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Baton-Signature``'s value: ``sha256=`` and the hex HMAC of ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def enqueue_missing(rt: Runtime) -> int:
    """Add the notifications a worker of the version before this one could not (it finished
    the migration without knowing of ``notify``): for ends within the give-up window."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        since = now - timedelta(seconds=rt.settings.notify_give_up_s)
        missing = list(
            s.scalars(
                select(Migration.id).where(
                    Migration.notify.is_not(None),
                    Migration.state.in_(list(NOTIFY_ALL)),
                    Migration.finished_at > since,
                    ~exists().where(
                        and_(
                            Notification.migration_id == Migration.id,
                            Notification.finished_at == Migration.finished_at,
                        )
                    ),
                )
            )
        )
    added = 0
    for migration_id in missing:
        try:
            with rt.db.session() as s:
                mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK)
                if mig is not None and record_finish(s, mig, rt.db.now(s)):
                    added += 1
        except sa_exc.IntegrityError:  # the finishing transaction's own row was there first
            continue
    return added


def deliver_due(rt: Runtime) -> list[tuple[str, str]]:
    """Send due notifications, one at a time, while the pass has time (one sweep interval,
    at least one attempt's timeout) and at most :data:`BATCH`; return ``(id, status)`` of
    each, so a slow webhook delays the sweeper's other duties by little."""
    budget = max(rt.settings.sweep_interval_s, rt.settings.notify_timeout_s)
    started = time.monotonic()
    sent: list[tuple[str, str]] = []
    while len(sent) < BATCH and time.monotonic() - started < budget:
        notification_id = _claim(rt)
        if notification_id is None:
            break
        sent.append((notification_id, _attempt(rt, notification_id)))
    return sent


def _claim(rt: Runtime) -> str | None:
    """The next due notification, its ``next_attempt_at`` pushed past this attempt, so two
    sweepers overlapping for a moment never send it at once."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        n = s.scalars(
            select(Notification)
            .where(Notification.status == PENDING, Notification.next_attempt_at <= now)
            .order_by(Notification.next_attempt_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if n is None:
            return None
        n.next_attempt_at = now + timedelta(seconds=3 * rt.settings.notify_timeout_s + 10)
        return n.id


def _attempt(rt: Runtime, notification_id: str) -> str:
    """One attempt at one notification; records its outcome and returns its status."""
    with rt.db.session() as s:
        n = s.get(Notification, notification_id)
        mig = s.get(Migration, n.migration_id) if n is not None else None
        if n is None or mig is None or n.status != PENDING:
            return n.status if n is not None else FAILED
        notify = Notify.model_validate(mig.notify or {})
        if n.body is None:  # fixed once: every attempt sends the same bytes
            n.body = _body(rt, n)
        body = orjson.dumps(n.body)
    error: str | None
    retry_after: float | None = None
    retryable = True
    try:
        hook = webhook(rt.boundary, notify, rt.settings.notify_timeout_s)
        _send(hook, notification_id, n.state, body, rt.settings.notify_timeout_s)
        error = None
    except TransientError as exc:  # no answer, 408, 429, 5xx: again later
        error, retry_after = str(exc), exc.retry_after
    except BoundaryError as exc:  # the variables or allow-lists: an operator may fix them
        error = exc.message
    except (BatonError, Refusal, TooLarge) as exc:  # any other answer: the receiver refused
        error, retryable = str(exc), False
    return _record(rt, notification_id, error, retryable, retry_after)


def _send(hook: Webhook, delivery: str, state: str, body: bytes, timeout_s: float) -> None:
    stamp = str(int(time.time()))
    headers = {TIMESTAMP: stamp, DELIVERY: delivery, EVENT: f"migration.{state}"}
    if hook.secret is not None:
        headers[SIGNATURE] = sign(hook.secret, stamp, body)
    # Pinned to the address checked (no DNS rebinding); no redirect, proxy or .netrc followed.
    answer = Client("POST", {}, pin=hook.pin).send(
        hook.url, body, delivery, timeout_s, headers=headers
    )
    judge(answer, 0, "the webhook")


def _record(
    rt: Runtime, notification_id: str, error: str | None, retryable: bool, wait: float | None
) -> str:
    with rt.db.session() as s:
        n = s.get(Notification, notification_id, with_for_update=ROW_LOCK)
        if n is None:
            return FAILED
        now = rt.db.now(s)
        n.attempts += 1
        if error is None:
            n.status, n.delivered_at, n.last_error = DELIVERED, now, None
            said = f"webhook delivered (attempt {n.attempts})"
            s.add(_event(n, "notification_delivered", said, now))
            return n.status
        n.last_error = error[:2000]
        give_up = n.created_at + timedelta(seconds=rt.settings.notify_give_up_s)
        delay = wait if wait is not None else backoff(rt, n.attempts)
        if not retryable or now + timedelta(seconds=delay) > give_up:
            n.status = FAILED
            message = f"webhook delivery failed after {n.attempts} attempts: {error}"
            s.add(_event(n, "notification_failed", message[:2000], now))
            log.warning("webhook delivery failed", extra={"migration_id": n.migration_id})
        else:
            n.next_attempt_at = now + timedelta(seconds=delay)
        return n.status


def backoff(rt: Runtime, attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: exponential, capped, half of it at random
    (so webhooks that failed together are not retried together)."""
    full = min(rt.settings.notify_backoff_max_s, rt.settings.notify_backoff_s * 2 ** (attempts - 1))
    return float(full / 2 + random.uniform(0.0, full / 2))


def _event(n: Notification, kind: str, message: str, now: datetime) -> Event:
    return Event(migration_id=n.migration_id, kind=kind, message=message, at=now)


def _body(rt: Runtime, n: Notification) -> dict[str, Any]:
    """What the receiver gets: the migration as it ended, and this delivery's id."""
    from etl_tasks.views import migration_view

    view = migration_view(rt.db, n.migration_id)
    streams = [
        {k: st[k] for k in ("name", "state", "rows_loaded", "rows_quarantined", "chunks_total")}
        for st in view["streams"]
    ]
    return {
        "delivery_id": n.id,
        "event": f"migration.{n.state}",
        "migration": {
            "id": n.migration_id,
            "name": view["name"],
            "state": n.state,
            "error": view["error"] if n.state == MigrationState.FAILED else None,
            "created_at": view["created_at"],
            "started_at": view["started_at"],
            "finished_at": None if n.finished_at is None else n.finished_at.isoformat() + "Z",
            "rows_loaded": view["rows_loaded"],
            "rows_quarantined": view["rows_quarantined"],
            "chunks_total": view["chunks_total"],
            "chunks_done": view["chunks_done"],
            "streams": streams,
        },
    }
