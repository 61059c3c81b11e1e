"""Baton's own state DB is never a spec's source or target, however it is named.

Comparing URLs is not enough (other addresses, host names, a proxy alias, URL
parameters that move the connection): the server itself is asked whether it
is a Baton state DB, in preflight and again in every worker.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.control import create_migration
from etl_tasks.publisher import publish_plan
from etl_tasks.spec import parse_spec
from etl_tasks.state.models import Migration
from tests import services
from tests.data import build_source, sqlite_url
from tests.harness import WorkerProcess, wait_for
from tests.security.conftest import Live, errors_of
from tests.tcp_proxy import TcpProxy
from worker.celery_app import CeleryPublisher, create_celery

STATE = "is a Baton state DB"


def _spec(source: dict[str, Any], target: dict[str, Any], **stream: Any) -> dict[str, Any]:
    return {
        "name": "attack",
        "source": source,
        "target": target,
        "streams": [{"source_table": "Customer", "target_table": "stolen", **stream}],
    }


@pytest.fixture
def legacy(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "legacy.db")
    build_source(url, customers=20, orders=2)
    return url


def _state_url(live: Live, **parts: Any) -> str:
    return make_url(live.settings.database_url).set(**parts).render_as_string(hide_password=False)


def _variants(live: Live, proxy: TcpProxy) -> dict[str, str]:
    return {
        "as configured": live.settings.database_url,
        "localhost": _state_url(live, host="localhost"),
        "the machine's name": _state_url(live, host=socket.gethostname()),
        "an alias through a proxy": _state_url(live, host="127.0.0.1", port=proxy.port),
        "postgres:// scheme": live.settings.database_url.replace("postgresql://", "postgres://"),
    }


def test_the_state_db_by_url_env_is_refused_even_when_every_name_is_allowed(
    live_factory: Any, legacy: str, pg_url: str
) -> None:
    live = live_factory(env_allowed="*")
    for name in ("BATON_DATABASE_URL", "BATON_BROKER_URL", "BATON_SECRET_KEYS"):
        spec = _spec({"url_env": name}, {"url": pg_url}, source_table="migrations")
        errors = errors_of(live.submit(spec))
        assert "may not be used" in errors["source/url_env"]
    assert live.migrations() == 0


def test_the_state_db_by_any_address_is_refused_as_a_source(
    refusing_live: Live, legacy: str, pg_url: str
) -> None:
    live = refusing_live
    proxy = TcpProxy("127.0.0.1", 5432).start()
    try:
        for how, url in _variants(live, proxy).items():
            spec = _spec(
                {"url": url}, {"url": pg_url}, source_table="migrations", create_target=True
            )
            errors = errors_of(live.submit(spec))
            assert STATE in errors.get("source/url", ""), (how, errors)
    finally:
        proxy.stop()
    assert live.migrations() == 0
    engine = create_sql_engine(pg_url)  # the operator's own target got no table
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('stolen')")).scalar() is None
    engine.dispose()


def test_the_state_db_is_refused_as_a_target_and_no_token_changes(
    refusing_live: Live, legacy: str
) -> None:
    live = refusing_live
    before = live.token_rows()
    proxy = TcpProxy("127.0.0.1", 5432).start()
    try:
        for how, url in _variants(live, proxy).items():
            columns = {"id": "CustomerId", "name": "FullName"}
            spec = _spec({"url": legacy}, {"url": url}, target_table="api_tokens", columns=columns)
            errors = errors_of(live.submit(spec))
            assert STATE in errors.get("target/url", ""), (how, errors)
    finally:
        proxy.stop()
    assert live.token_rows() == before
    assert live.migrations() == 0


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("?host=/var/run/postgresql", "URL parameter"),
        ("?hostaddr=127.0.0.1", "URL parameter"),
        ("?port=5432", "URL parameter"),
        ("?dbname={db}", "URL parameter"),
        ("?service=baton", "URL parameter"),
        ("?passfile=/root/.pgpass", "URL parameter"),
    ],
)
def test_url_parameters_that_would_move_the_connection_are_refused(
    refusing_live: Live, legacy: str, query: str, why: str
) -> None:
    live = refusing_live
    state_db = make_url(live.settings.database_url).database
    url = "postgresql://postgres@127.0.0.1:5432/postgres" + query.format(db=state_db)
    errors = errors_of(live.submit(_spec({"url": legacy}, {"url": url}, create_target=True)))
    assert why in errors["target/url"]
    assert live.migrations() == 0


def test_a_unix_socket_is_refused(refusing_live: Live, legacy: str) -> None:
    live = refusing_live
    state_db = make_url(live.settings.database_url).database
    for url in (f"postgresql://postgres@/{state_db}", f"postgresql:///{state_db}"):
        errors = errors_of(live.submit(_spec({"url": legacy}, {"url": url}, create_target=True)))
        assert "host" in errors["target/url"]


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("target_table", "baton_ledger"),
        ("target_table", "public.baton_ledger"),
        ("target_table", "BATON_LEDGER"),
        ("target_table", "baton_state_marker"),
        ("source_table", "baton_ledger"),
    ],
)
def test_baton_tables_are_reserved(
    refusing_live: Live, legacy: str, pg_url: str, field: str, name: str
) -> None:
    live = refusing_live
    spec = _spec({"url": legacy}, {"url": pg_url}, write="upsert")
    spec["streams"][0][field] = name
    errors = errors_of(live.submit(spec))
    assert "baton_* tables are Baton's own" in errors[f"streams/0/{field}"]
    assert live.migrations() == 0


def test_a_worker_refuses_the_state_db_even_when_preflight_was_skipped(
    live: Live, legacy: str, tmp_path: Path
) -> None:
    # Given a migration recorded without preflight (an older API, or allow-lists that
    # differ between the API and the workers) whose target is the state DB's token table
    before = live.token_rows()
    columns = {
        "id": "CustomerId",
        "name": "FullName",
        "role": {"value": "admin"},
        "token_hash": "Email",
        "created_at": "CreatedAt",
    }
    target = {"url": _state_url(live, host="localhost")}
    spec = parse_spec(_spec({"url": legacy}, target, target_table="api_tokens", columns=columns))
    migration_id, _ = create_migration(live.db, spec, {"api_tokens": ["CustomerId"]})
    worker = WorkerProcess(live.settings, "guard", tmp_path)
    app = create_celery(live.settings)
    try:
        worker.wait_ready()
        # When a real worker takes it
        publish_plan(CeleryPublisher(app), migration_id)

        def failed() -> str | None:
            with live.db.reading() as s:
                mig = s.get(Migration, migration_id)
                return mig.error if mig is not None and mig.state == "failed" else None

        error = wait_for(failed, 60, what="the migration to fail")
    finally:
        worker.close()
        app.close()
    # Then the migration fails with the reason, and not one token row changed
    assert STATE in str(error)
    assert live.token_rows() == before


def test_a_mariadb_state_db_is_refused_by_url_and_by_a_qualified_table_name(
    live_factory: Any, legacy: str, mariadb_url: str
) -> None:
    # Given an API whose state DB is a MariaDB database, and an operator's own database
    # on the same server
    if not services.mariadb_answers():
        services.unavailable("MariaDB")
    with services.mariadb_database() as state_url:
        live = live_factory(database_url=state_url)
        state_db = make_url(state_url).database
        before = live.token_rows()
        # When a spec names the state DB itself, or reaches it from the operator's own
        # database with a qualified table name (MySQL lets a user do that)
        direct = _spec({"url": legacy}, {"url": state_url}, target_table="api_tokens")
        into_state = {"target_table": f"{state_db}.api_tokens"}
        qualified = _spec({"url": legacy}, {"url": mariadb_url}, **into_state)
        direct_errors = errors_of(live.submit(direct))
        qualified_errors = errors_of(live.submit(qualified))
        # Then both are refused and no token row changed
        assert STATE in direct_errors["target/url"]
        assert STATE in qualified_errors["streams/0"]
        assert live.token_rows() == before
        assert live.migrations() == 0
