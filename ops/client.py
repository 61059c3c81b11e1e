"""A small client for Baton's HTTP API, used by the CLI and the demo."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson
import requests
import yaml

from etl_tasks.settings import Settings
from ops import exit_codes

FULL_ID = re.compile(r"[0-9a-f]{32}")


def load_spec_file(path: Path) -> Any:
    """A spec from JSON or YAML (YAML is converted to JSON before sending)."""
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        return yaml.safe_load(text)
    return orjson.loads(text)


class ApiError(click.ClickException):
    """Raised when the API answers an error; the command exits with its status's code."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        lines = [f"HTTP {status}: {body.get('error') if isinstance(body, dict) else body}"]
        if isinstance(body, dict):
            lines += [f"  {e['path']}: {e['message']}" for e in body.get("errors", [])]
        super().__init__("\n".join(lines))
        # click exits with a ClickException's exit_code: 5 for a 404, 6 for a 409, ...
        vars(self)["exit_code"] = exit_codes.of_status(status)


class ApiUnreachable(click.ClickException):
    """Raised when the API does not answer at all."""

    exit_code = exit_codes.UNAVAILABLE


class NoSuchMigration(click.ClickException):
    """Raised when no migration's id starts with the prefix given."""

    exit_code = exit_codes.NOT_FOUND


class AmbiguousId(click.ClickException):
    """Raised when an id prefix names more than one migration (as git refuses one)."""

    exit_code = exit_codes.USAGE


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30) -> None:
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        return cls(settings.api_url, settings.api_token)

    def _check(self, resp: requests.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, body)
        return body

    def _unreachable(self, exc: Exception) -> ApiUnreachable:
        return ApiUnreachable(
            f"cannot reach the API at {self.base} (BATON_API_URL; `baton up` prints the "
            f"variables to export): {exc}"
        )

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            resp = self.session.get(self.base + path, params=params, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise self._unreachable(exc) from None
        return self._check(resp)

    def pages(
        self, path: str, params: dict[str, Any] | None = None, limit: int | None = None
    ) -> tuple[list[Any], int, str | None]:
        """Up to ``limit`` items of a list (all: None), following its pages: ``(items,
        total, next)``, ``next`` the cursor of what was left out."""
        items: list[Any] = []
        query = dict(params or {})
        while True:
            if limit is not None:
                query["limit"] = min(limit - len(items), 1000)
            page = self.get(path, query)
            items += page["items"]
            if page["next"] is None or (limit is not None and len(items) >= limit):
                return items, page["total"], page["next"]
            query["cursor"] = page["next"]

    def download(self, path: str, params: dict[str, Any]) -> Iterator[bytes]:
        """A streamed answer, piece by piece (a download of any size)."""
        try:
            resp = self.session.get(
                self.base + path, params=params, timeout=self.timeout, stream=True
            )
            if resp.status_code >= 400:
                self._check(resp)
            yield from resp.iter_content(chunk_size=65536)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise self._unreachable(exc) from None

    def resolve_migration(self, given: str) -> str:
        """The id of the one migration whose id starts with ``given`` (a full id as it is)."""
        if FULL_ID.fullmatch(given):
            return given
        if not given or len(given) > 32:
            raise NoSuchMigration(f"no migration {given!r}")
        page = self.get("/api/v1/migrations", {"prefix": given, "limit": 5})
        if page["total"] == 0:
            raise NoSuchMigration(f"no migration id starts with {given!r}")
        if page["total"] > 1:
            names = ", ".join(f"{m['id']} ({m['name']})" for m in page["items"])
            more = f" and {page['total'] - 5} more" if page["total"] > 5 else ""
            raise AmbiguousId(
                f"{given!r} is ambiguous: {page['total']} migrations start with it: "
                f"{names}{more}; give more of the id"
            )
        return str(page["items"][0]["id"])

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        try:
            resp = self.session.post(
                self.base + path,
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json", **(headers or {})},
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise self._unreachable(exc) from None
        return self._check(resp)

    def submit(self, spec: Any, idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.post("/api/v1/migrations", spec, headers)
