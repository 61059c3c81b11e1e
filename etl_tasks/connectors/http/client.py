"""Requests to the API, and what its answers mean to Baton.

Sent with ``requests`` (no redirects followed: a redirected POST would turn
into a GET somewhere else), one connection pool per target. Errors come back
as Baton's, by status, never by message:

* 2xx: the batch is confirmed;
* 400, 409, 422: the API refused the rows (:class:`Refusal`, with its own message,
  and the indexes of the rows at fault when its body names them);
* 413: the batch was too large (:class:`TooLarge`);
* 401, 403: the credentials are refused; 404: no such endpoint; any other 3xx or
  4xx: :class:`~etl_tasks.errors.PermanentError`, the migration fails saying so;
* 408, 429, 5xx, a timeout or a dropped connection: :class:`~etl_tasks.errors.TransientError`,
  with the API's ``Retry-After`` when it gave one (429, 503), else backoff with full jitter.

No message carries the credential or the request's body.

Every connection goes to the address the boundary checked when the target was
built (:class:`PinnedAdapter`), never to what the host's name resolves to at the
time of the request: a name that resolves elsewhere a moment later (DNS
rebinding) cannot move a request inside. The URL keeps the name, so the ``Host``
header, TLS SNI and the certificate check are the name's.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
import requests
from requests.adapters import HTTPAdapter

from etl_tasks.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

UNAVAILABLE = "target unavailable"
MAX_MESSAGE = 500
MIN_TIMEOUT_S = 0.1
REFUSED_ROWS = (400, 409, 422)
BUSY = (408, 429)
USER_AGENT = "baton-http-target"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> str:
        """The API's own words: a JSON body's ``error``/``message``/``detail``, or its text."""
        return api_message(self.body)


class Refusal(Exception):
    """The API refused the batch's rows (400, 409, 422); it took none of them.

    ``rows`` maps the index (in the request's array) of each row the API named to its
    message; empty when it did not say which rows.
    """

    def __init__(self, status: int, message: str, rows: dict[int, str]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.rows = rows


class TooLarge(Exception):
    """The API refused the request as too large (413); it took none of it."""


def api_message(body: bytes) -> str:
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        for name in ("error", "message", "detail", "title"):
            value = doc.get(name)
            if isinstance(value, str) and value:
                return value[:MAX_MESSAGE]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])[:MAX_MESSAGE]
    text = body.decode("utf-8", errors="replace").strip()
    return " ".join(text.split())[:MAX_MESSAGE] or "no message"


def named_rows(body: bytes, count: int) -> dict[int, str]:
    """The rows an error body names: ``{"errors": [{"index": 3, "message": "…"}, …]}``,
    indexes into the request's array; nothing unless every index is a row of it."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {}
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors:
        return {}
    out: dict[int, str] = {}
    for item in errors:
        if not isinstance(item, dict):
            return {}
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            return {}
        message = item.get("message")
        out[index] = (message if isinstance(message, str) else "refused")[:MAX_MESSAGE]
    return out


def retry_after(headers: dict[str, str], now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; None if absent."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


class PinnedAdapter(HTTPAdapter):
    """Connections to ``host`` go to ``address`` (the one the boundary checked), with the
    name kept for the ``Host`` header, TLS SNI and the certificate check; a request to any
    other host is refused before it connects."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__()
        self.host = host.lower().rstrip(".")
        self.address = address

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[Any, Any]:
        found = super().build_connection_pool_key_attributes(request, verify, cert)
        host: dict[str, Any] = dict(found[0])
        kwargs: dict[str, Any] = dict(found[1])
        if str(host.get("host") or "").lower().rstrip(".") != self.host:
            raise requests.ConnectionError("the request's host is not the one checked")
        host["host"] = self.address
        if host.get("scheme") == "https":
            kwargs["server_hostname"] = self.host
            kwargs["assert_hostname"] = self.host
        return host, kwargs

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        """The name, not the address, in ``Host`` (with the port when it is not the default)."""
        netloc = urlsplit(request.url or "").netloc
        request.headers["Host"] = netloc.rsplit("@", 1)[-1]


class Client:
    """One target's connection pool; safe to share between a worker's threads.

    ``pin`` (the host's name and the address the boundary checked) sends every
    connection to that address; without it (tests only) the name is resolved per
    connection."""

    def __init__(
        self, method: str, headers: dict[str, str], pin: tuple[str, str] | None = None
    ) -> None:
        self.method = method
        self._headers = {**headers, "User-Agent": USER_AGENT}
        self._pin = pin
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy or .netrc the operator did not give
            if self._pin is not None:
                adapter = PinnedAdapter(*self._pin)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
            self._local.session = session
        return session

    def send(
        self,
        url: str,
        body: bytes,
        key: str,
        timeout_s: float,
        *,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request; a connection failure or timeout is a :class:`TransientError`.
        ``headers`` are this request's own (a webhook's signature), beside the client's."""
        headers = {
            **self._headers,
            **(headers or {}),
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        }
        timeout = max(MIN_TIMEOUT_S, timeout_s)
        try:
            r = self._session().request(
                self.method, url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            )
            content = r.content
        except requests.Timeout:
            raise TransientError(
                f"{UNAVAILABLE}: the API did not answer in {timeout:.3g} s", jitter=True
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                f"{UNAVAILABLE}: cannot reach the API ({type(exc).__name__})", jitter=True
            ) from None
        return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, content)

    def probe(self, url: str, timeout_s: float) -> int:
        """An OPTIONS request (it writes nothing): the status the API answers."""
        r = self._session().request(
            "OPTIONS", url, headers=self._headers, timeout=timeout_s, allow_redirects=False
        )
        return r.status_code


def judge(answer: Answer, rows: int, what: str) -> None:
    """Raise what a non-2xx answer means; return for a 2xx. ``what`` names the endpoint."""
    status = answer.status
    if 200 <= status < 300:
        return
    if status in REFUSED_ROWS:
        raise Refusal(status, f"HTTP {status}: {answer.message}", named_rows(answer.body, rows))
    if status == 413:
        raise TooLarge(f"HTTP 413: {answer.message}")
    if status in BUSY or status >= 500:
        wait = retry_after(answer.headers) if status in (429, 503) else None
        said = f" (retry after {wait:g} s)" if wait is not None else ""
        raise TransientError(
            f"{UNAVAILABLE}: the API answered HTTP {status}{said}: {answer.message}",
            retry_after=wait,
            jitter=True,
        )
    if status in (401, 403):
        raise PermanentError(
            f"the HTTP target refused the credentials (HTTP {status}) at {what}: {answer.message}"
        )
    if status == 404:
        raise PermanentError(f"the HTTP target has no {what} (HTTP 404): {answer.message}")
    raise PermanentError(f"the HTTP target answered HTTP {status} at {what}: {answer.message}")


# -- max_rps: one token bucket per migration, shared by every worker -------------------------

_BUCKET = """
local rate = tonumber(ARGV[1])
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then tokens = 1; at = t end
tokens = math.min(1, tokens + (t - at) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(t))
redis.call('EXPIRE', KEYS[1], 3600)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def _redis(url: str) -> redis.Redis:
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            _clients[url] = client
        return client


class RateLimit:
    """At most ``rps`` requests a second across all workers: a token bucket in Redis
    (bursts of one), where each request reserves the next token and waits for it."""

    def __init__(self, redis_url: str, key: str, rps: float) -> None:
        self._url = redis_url
        self.key = key
        self.rps = rps
        self._script: Any = None

    def reserve(self) -> float:
        """Take the next token; return how long to wait before using it (seconds)."""
        try:
            if self._script is None:
                self._script = _redis(self._url).register_script(_BUCKET)
            return float(self._script(keys=[self.key], args=[repr(float(self.rps))]))
        except redis.RedisError as exc:
            raise TransientError(f"rate limiter unavailable: {exc}") from exc

    def wait(self, deadline: float | None) -> None:
        """Wait for a token; if it comes after ``deadline``, give the chunk back for then."""
        wait = self.reserve()
        if wait <= 0:
            return
        if deadline is not None and time.monotonic() + wait > deadline:
            raise TransientError(
                f"max_rps ({self.rps:g}) reached: the next request may go in {wait:.2f} s",
                retry_after=wait,
            )
        time.sleep(wait)


# -- a 413 lowers the stream's batch size for every worker -----------------------------------

_LOWER = """
local current = tonumber(redis.call('GET', KEYS[1]))
local rows = tonumber(ARGV[1])
if current == nil or rows < current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400)
  return rows
end
return current
"""


class SharedSize:
    """The stream's batch size as the API's 413s taught it, in Redis: every worker sends
    requests no larger. Best effort: without Redis each worker learns it by itself."""

    REFRESH_S = 1.0

    def __init__(self, redis_url: str, key: str) -> None:
        self._url = redis_url
        self.key = key
        self._known: int | None = None
        self._read_at = 0.0

    def lower(self, rows: int) -> None:
        try:
            found = _redis(self._url).eval(_LOWER, 1, self.key, str(rows))
            self._known = int(found)
            self._read_at = time.monotonic()
        except (redis.RedisError, TypeError, ValueError) as exc:
            log.warning("cannot share the lowered batch size: %s", exc)

    def get(self) -> int | None:
        """The shared size (read again at most once a second), or None if none was set."""
        if time.monotonic() - self._read_at >= self.REFRESH_S:
            self._read_at = time.monotonic()
            try:
                value = _redis(self._url).get(self.key)
                self._known = int(value) if value is not None else None
            except (redis.RedisError, TypeError, ValueError):
                pass
        return self._known
