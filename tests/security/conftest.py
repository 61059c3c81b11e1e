"""The attack suite: a real API (gunicorn, auth on) and real workers, attacked as an operator.

Every test asserts that an attack is refused *and* that nothing was read,
written or created: the state DB, the target and the file system are checked
afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from etl_tasks.boundary.sealing import new_key
from etl_tasks.settings import Settings
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import ApiToken, Migration
from etl_tasks.tokens import create_token
from ops.timings import FAST_TIMINGS
from tests import services
from tests.api_process import ApiProcess

ROLES = ("viewer", "operator", "admin")


@dataclass
class Live:
    """One running API with a token per role."""

    settings: Settings
    api: ApiProcess
    db: StateDB
    tokens: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, role: str = "operator", **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if role:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return requests.request(method, self.api.url + path, headers=headers, timeout=30, **kw)

    def submit(self, spec: dict[str, Any], role: str = "operator") -> Any:
        return self.request("POST", "/api/v1/migrations", role, json=spec)

    def migrations(self) -> int:
        with self.db.reading() as s:
            return int(s.scalar(select(func.count()).select_from(Migration)) or 0)

    def token_rows(self) -> list[tuple[Any, ...]]:
        with self.db.reading() as s:
            rows = s.execute(select(ApiToken.name, ApiToken.role, ApiToken.token_hash)).all()
        return sorted(tuple(r) for r in rows)


#: What every attacked API runs with, beyond the suite's settings.
LIVE_SETTINGS: dict[str, Any] = {
    "auth": "on",
    "env_allowed": "LEGACY_*,TARGET_*,SILENT_*",
    "preflight_timeout_s": 3.0,
}


def _start_live(settings: Settings, workdir: Path, env: dict[str, str] | None = None) -> Live:
    db = StateDB(settings.database_url)
    every = {**settings.as_env(), **(env or {})}
    api = ApiProcess(
        workdir, settings.broker_url, settings.key_prefix, settings.database_url, **every
    )
    live = Live(settings, api, db)
    for role in ROLES:
        live.tokens[role] = create_token(db, f"{role}-1", role)
    try:
        api.wait_ready()
    except BaseException:
        _stop_live(live)
        raise
    return live


def _stop_live(live: Live) -> None:
    live.api.close()
    live.db.dispose()


@pytest.fixture
def live_factory(
    make_settings: Callable[..., Settings],
    pg_state_url_factory: Callable[[], str],
    tmp_path: Path,
) -> Iterator[Callable[..., Live]]:
    """Start an API with auth on, a PostgreSQL state DB and secret keys (overridable)."""
    started: list[Live] = []

    def start(env: dict[str, str] | None = None, **overrides: Any) -> Live:
        values: dict[str, Any] = {
            **LIVE_SETTINGS,
            "database_url": pg_state_url_factory(),
            "secret_keys": new_key(),
        }
        values.update(overrides)
        workdir = tmp_path / f"api-{len(started)}"
        workdir.mkdir()
        live = _start_live(make_settings(**values), workdir, env)
        started.append(live)
        return live

    yield start
    for live in started:
        _stop_live(live)


@pytest.fixture(scope="module")
def refusing_live(
    redis_server: str, pg_state_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """One API for a module's tests that only send what it must refuse: nothing any of
    them sends is stored, so none can see another's, and each no longer starts an API
    of its own (seconds each)."""
    prefix = f"baton-test-{uuid.uuid4().hex[:10]}:"
    with services.pg_state_database(pg_state_template) as url:
        settings = Settings(
            broker_url=redis_server,
            database_url=url,
            key_prefix=prefix,
            secret_keys=new_key(),
            **FAST_TIMINGS,
            **LIVE_SETTINGS,
        )
        live = _start_live(settings, tmp_path_factory.mktemp("api"))
        try:
            yield live
        finally:
            _stop_live(live)
            services.delete_prefix(redis_server, prefix)


@pytest.fixture
def live(live_factory: Callable[..., Live]) -> Live:
    return live_factory()


def errors_of(resp: Any, status: int = 422) -> dict[str, str]:
    """``{path: message}`` of a refusal, after checking its status and shape."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    return {e["path"]: e["message"] for e in body.get("errors", [])}
