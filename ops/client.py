"""A small client for Baton's HTTP API, used by the CLI and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
import requests
import yaml

from etl_tasks.settings import Settings


def load_spec_file(path: Path) -> Any:
    """A spec from JSON or YAML (YAML is converted to JSON before sending)."""
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        return yaml.safe_load(text)
    return orjson.loads(text)


class ApiError(click.ClickException):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        lines = [f"HTTP {status}: {body.get('error') if isinstance(body, dict) else body}"]
        if isinstance(body, dict):
            lines += [f"  {e['path']}: {e['message']}" for e in body.get("errors", [])]
        super().__init__("\n".join(lines))


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

    def get(self, path: str) -> Any:
        try:
            return self._check(self.session.get(self.base + path, timeout=self.timeout))
        except requests.ConnectionError as exc:
            raise click.ClickException(f"cannot reach the API at {self.base}: {exc}") from None

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        try:
            resp = self.session.post(
                self.base + path,
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json", **(headers or {})},
                timeout=self.timeout,
            )
        except requests.ConnectionError as exc:
            raise click.ClickException(f"cannot reach the API at {self.base}: {exc}") from None
        return self._check(resp)

    def submit(self, spec: Any, idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.post("/api/v1/migrations", spec, headers)
