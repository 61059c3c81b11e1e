"""The boundary's rules, one at a time: variables, hosts, folders, URLs, names, sealing."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from etl_tasks.boundary import network
from etl_tasks.boundary.envrefs import EnvPolicy
from etl_tasks.boundary.identity import OwnStores
from etl_tasks.boundary.names import identifier_problem, is_reserved_table
from etl_tasks.boundary.network import HostPolicy
from etl_tasks.boundary.paths import PathPolicy
from etl_tasks.boundary.policy import Boundary
from etl_tasks.boundary.sealing import (
    Sealer,
    has_literal_credential,
    new_key,
    open_spec,
    storage_form,
)
from etl_tasks.boundary.sql_urls import NO_FILE, Timeouts, check_server_url, parse_sql_url
from etl_tasks.errors import BoundaryError, EndpointUnavailable, PermanentError, SpecError
from etl_tasks.spec import Endpoint

# --- environment variables ------------------------------------------------------------------


def policy(text: str | None, *, auth_on: bool = True, **env: str) -> EnvPolicy:
    return EnvPolicy(EnvPolicy.parse(text, auth_on=auth_on).rules, environ=env)


def refusal(p: EnvPolicy, name: str) -> str:
    with pytest.raises(BoundaryError) as info:
        p.resolve(name)
    return info.value.message


def test_with_auth_on_and_no_allow_list_no_variable_may_be_read() -> None:
    p = policy(None, CLOUD_DB_URL="postgresql://u@h/d")
    assert "may not be used" in refusal(p, "CLOUD_DB_URL")


def test_with_auth_off_any_variable_but_baton_ones_may_be_read() -> None:
    p = policy(None, auth_on=False, CLOUD_DB_URL="x", BATON_DATABASE_URL="y")
    assert p.resolve("CLOUD_DB_URL") == "x"
    assert "may not be used" in refusal(p, "BATON_DATABASE_URL")


def test_a_baton_variable_is_refused_even_when_a_glob_would_allow_it() -> None:
    p = policy("*", BATON_DATABASE_URL="y", baton_secret_keys="z")
    assert "may not be used" in refusal(p, "BATON_DATABASE_URL")
    assert "may not be used" in refusal(p, "baton_secret_keys")


def test_a_refused_name_reads_the_same_whether_or_not_it_is_set() -> None:
    set_ = policy("CLOUD_*", HOME_SECRET="1")
    unset = policy("CLOUD_*")
    assert refusal(set_, "HOME_SECRET") == refusal(unset, "HOME_SECRET")
    assert "not set" not in refusal(set_, "HOME_SECRET")


def test_an_allowed_variable_that_is_unset_says_so() -> None:
    assert "is not set" in refusal(policy("CLOUD_*"), "CLOUD_DB_URL")


def test_globs_and_host_bindings() -> None:
    p = EnvPolicy.parse("CLOUD_*, DB_URL@db.example.com, DB_URL@db2.example.com", auth_on=True)
    assert p.allowed("CLOUD_TOKEN") and p.allowed("DB_URL")
    assert not p.allowed("OTHER")
    assert p.hosts_for("CLOUD_TOKEN") is None
    assert p.hosts_for("DB_URL") == {"db.example.com", "db2.example.com"}


def test_a_variable_bound_to_a_host_cannot_be_used_with_another() -> None:
    env = EnvPolicy(
        EnvPolicy.parse("DB_URL@db.example.com", auth_on=True).rules,
        environ={"DB_URL": "postgresql://u@127.0.0.1/d"},
    )
    boundary = Boundary(env, HostPolicy(None), PathPolicy(None), OwnStores())
    with pytest.raises(BoundaryError) as info:
        boundary.sql_endpoint(Endpoint(url_env="DB_URL"), 1.0)
    assert info.value.field == "url_env"
    assert "this host" in info.value.message


# --- hosts ----------------------------------------------------------------------------------


def test_hosts_by_name_glob_and_network() -> None:
    p = HostPolicy.parse("db.example.com, *.corp.example, 10.1.0.0/16, 127.0.0.1")
    assert p.pick("127.0.0.1", 5432, 1.0) == "127.0.0.1"
    assert p.pick("10.1.2.3", 5432, 1.0) == "10.1.2.3"
    with pytest.raises(BoundaryError, match="not allowed"):
        p.pick("10.2.0.1", 5432, 1.0)
    with pytest.raises(BoundaryError, match="not allowed"):
        p.pick("127.0.0.2", 5432, 1.0)


def test_a_name_is_checked_by_what_it_resolves_to_and_pinned() -> None:
    p = HostPolicy.parse("127.0.0.0/8")
    assert p.pick("localhost", 5432, 2.0).startswith("127.")
    with pytest.raises(BoundaryError):
        HostPolicy.parse("10.0.0.0/8").pick("localhost", 5432, 2.0)


def test_name_resolution_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    def hangs(*_: Any) -> Any:
        time.sleep(3)
        return []

    monkeypatch.setattr(network.socket, "getaddrinfo", hangs)
    started = time.monotonic()
    with pytest.raises(EndpointUnavailable) as info:
        HostPolicy(None).pick("never-answers.example", 5432, 0.3)
    assert info.value.kind == "timeout"
    assert time.monotonic() - started < 1.5


def test_an_unknown_host_is_a_connection_failure_without_detail_in_its_message() -> None:
    with pytest.raises(EndpointUnavailable) as info:
        HostPolicy(None).pick("no-such-host.invalid", 5432, 2.0)
    message = info.value.public_message("source")
    assert message in ("cannot connect to the source", "the source did not answer in 2 s")


# --- folders --------------------------------------------------------------------------------


def test_paths_are_absolute_and_inside_the_allowed_folders(tmp_path: Path) -> None:
    inside = tmp_path / "data"
    inside.mkdir()
    p = PathPolicy.parse(str(inside))
    assert p.check(str(inside / "a.db")) == inside / "a.db"
    with pytest.raises(BoundaryError, match="absolute"):
        p.check("a.db")
    with pytest.raises(BoundaryError, match="outside"):
        p.check(str(tmp_path / "b.db"))
    with pytest.raises(BoundaryError, match="outside"):
        p.check(str(inside / ".." / "b.db"))


def test_a_symlink_cannot_lead_out_of_an_allowed_folder(tmp_path: Path) -> None:
    inside = tmp_path / "data"
    inside.mkdir()
    (tmp_path / "secret.db").write_bytes(b"")
    (inside / "link.db").symlink_to(tmp_path / "secret.db")
    with pytest.raises(BoundaryError, match="outside"):
        PathPolicy.parse(str(inside)).check(str(inside / "link.db"))


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "file:///etc/passwd",
        "http://example.com/x",
        "oracle://u:p@h/x",
        "postgresql+psycopg://u@h/d",
        "mysql+mysqldb://u@h/d",
        "mssql://u@h/d",
        "not a url",
    ],
)
def test_only_batons_own_drivers_are_accepted(url: str) -> None:
    with pytest.raises(BoundaryError, match="unsupported database kind"):
        parse_sql_url(url)


def test_a_port_that_is_not_a_number() -> None:
    with pytest.raises(BoundaryError, match="port"):
        parse_sql_url("postgresql://u:secret@h:abc/d")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h/d?host=/var/run/postgresql",
        "postgresql://u@h/d?hostaddr=10.0.0.1",
        "postgresql://u@h/d?port=6379",
        "postgresql://u@h/d?dbname=other",
        "postgresql://u@h/d?service=prod",
        "postgresql://u@h/d?passfile=/root/.pgpass",
        "postgresql://u@h/d?sslkey=/etc/ssl/private/k",
        "postgresql://u@h/d?options=-c%20statement_timeout%3D0",
        "mysql://u@h/d?local_infile=1",
        "mysql://u@h/d?read_default_file=/etc/mysql/debian.cnf",
        "mysql://u@h/d?unix_socket=/run/mysqld/mysqld.sock",
        "mysql://u@h/d?init_command=SET%20x%3D1",
        "sqlite:////tmp/x.db?uri=true",
    ],
)
def test_url_parameters_outside_the_drivers_allow_list_are_refused(url: str) -> None:
    with pytest.raises(BoundaryError, match="URL parameter"):
        parse_sql_url(url)


def test_refusals_never_echo_the_url() -> None:
    for url in (
        "postgresql://u:pw-123@h:x/d",
        "oracle://u:pw-123@h/d",
        "postgresql://u:pw-123@h/d?x=1",
    ):
        with pytest.raises(BoundaryError) as info:
            parse_sql_url(url)
        assert "pw-123" not in info.value.message


@pytest.mark.parametrize(
    ("url", "needs"),
    [
        ("postgresql:///d", "host"),
        ("postgresql://u@/d", "host"),
        ("postgresql://h/d", "user"),
        ("mysql://u@h", "database"),
    ],
)
def test_a_server_url_names_its_host_user_and_database(url: str, needs: str) -> None:
    with pytest.raises(BoundaryError, match=needs):
        check_server_url(parse_sql_url(url))


def test_ambient_credentials_never_apply_to_a_spec_connection() -> None:
    boundary = Boundary(EnvPolicy(None), HostPolicy(None), PathPolicy(None), OwnStores())
    checked = boundary.sql_endpoint(Endpoint(url="postgresql://app@localhost/d"), 2.0)
    args = checked.connect_args(Timeouts(3, 4))
    # no password in the URL: an empty one, never PGPASSWORD; no password file, no client cert
    assert args["password"] == ""
    assert args["passfile"] == args["sslcert"] == args["sslkey"] == NO_FILE
    assert not os.path.exists(NO_FILE)
    # the checked address is where it connects; every wait is bounded
    assert args["hostaddr"].startswith("127.") or args["hostaddr"] == "::1"
    assert args["connect_timeout"] == 3
    assert "statement_timeout=4000" in args["options"]
    mysql = boundary.sql_endpoint(Endpoint(url="mysql://app@127.0.0.1/d"), 2.0)
    margs = mysql.connect_args(Timeouts(3, 4))
    assert margs["local_infile"] is False and margs["read_timeout"] == 4
    assert margs["host"] == "127.0.0.1" and margs["password"] == ""


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:"])
def test_an_in_memory_sqlite_database_is_refused(url: str) -> None:
    boundary = Boundary(EnvPolicy(None), HostPolicy(None), PathPolicy(None), OwnStores())
    with pytest.raises(BoundaryError, match="in-memory"):
        boundary.sql_endpoint(Endpoint(url=url), 1.0)


def test_an_existing_file_that_is_not_a_sqlite_database_is_refused(tmp_path: Path) -> None:
    boundary = Boundary(EnvPolicy(None), HostPolicy(None), PathPolicy(None), OwnStores())
    for content in (b"", b"[section]\nkey=value\n"):
        config = tmp_path / "app.conf"
        config.write_bytes(content)
        with pytest.raises(BoundaryError, match="not a SQLite database"):
            boundary.sql_endpoint(Endpoint(url=f"sqlite:///{config}"), 1.0)
        assert config.read_bytes() == content


def test_a_sqlite_file_another_worker_is_creating_is_accepted(tmp_path: Path) -> None:
    # SQLite creates the file empty and writes its header with the first transaction: a
    # second worker checking the target in between must not take it for a stranger's file.
    boundary = Boundary(EnvPolicy(None), HostPolicy(None), PathPolicy(None), OwnStores())
    target = tmp_path / "cloud.db"
    target.touch()

    def create() -> None:
        conn = sqlite3.connect(target)
        conn.execute("CREATE TABLE t (x)")  # DDL runs outside a transaction: written now
        conn.close()

    creator = threading.Timer(0.2, create)
    creator.start()
    checked = boundary.sql_endpoint(Endpoint(url=f"sqlite:///{target}"), 1.0)
    creator.join()
    assert checked.sqlite_path == target


def test_the_state_db_file_is_refused_by_any_path_that_names_it(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    (tmp_path / "alias.db").symlink_to(state)
    os.link(state, tmp_path / "hardlink.db")
    own = OwnStores.of(f"sqlite:///{state}", [])
    boundary = Boundary(EnvPolicy(None), HostPolicy(None), PathPolicy(None), own)
    for name in ("state.db", "alias.db", "hardlink.db"):
        with pytest.raises(BoundaryError, match="state DB"):
            boundary.sql_endpoint(Endpoint(url=f"sqlite:///{tmp_path / name}"), 1.0)


def test_the_broker_port_of_this_machine_is_refused_by_any_local_address() -> None:
    own = OwnStores.of("sqlite:////tmp/x.db", ["redis://127.0.0.1:6399/0"])
    boundary = Boundary(EnvPolicy(None), HostPolicy(None), PathPolicy(None), own)
    host = socket.gethostname()
    for url in (
        "postgresql://u@127.0.0.1:6399/d",
        "postgresql://u@localhost:6399/d",
        f"postgresql://u@{host}:6399/d",
    ):
        with pytest.raises(BoundaryError, match="broker"):
            boundary.sql_endpoint(Endpoint(url=url), 2.0)
    boundary.sql_endpoint(Endpoint(url="postgresql://u@127.0.0.1:5432/d"), 2.0)


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["baton_ledger", "BATON_LEDGER", "public.baton_ledger", "baton_state_marker", "_baton_stage"],
)
def test_baton_tables_are_reserved(name: str) -> None:
    assert is_reserved_table(name)


def test_ordinary_tables_are_not_reserved() -> None:
    assert not is_reserved_table("batons") and not is_reserved_table("baton")


@pytest.mark.parametrize(
    ("name", "backend", "why"),
    [
        ("x" * 64, "postgresql", "63 bytes"),
        ("é" * 32, "postgresql", "63 bytes"),
        ("pg_catalog.pg_authid", "postgresql", "server"),
        ("information_schema.tables", "postgresql", "server"),
        ("pg_temp_3.t", "postgresql", "server"),
        ("x" * 65, "mysql", "64 characters"),
        ("mysql.user", "mariadb", "server"),
        ("orders ", "mariadb", "space"),
        ("sqlite_master", "sqlite", "SQLite"),
    ],
)
def test_identifiers_follow_each_databases_rules(name: str, backend: str, why: str) -> None:
    problem = identifier_problem(name, backend)
    assert problem is not None and why in problem


def test_ordinary_identifiers_pass() -> None:
    assert identifier_problem("x" * 63, "postgresql") is None
    assert identifier_problem("public.Order Details", "postgresql") is None
    assert identifier_problem("x" * 64, "mariadb") is None


# --- sealing --------------------------------------------------------------------------------

STORED: dict[str, Any] = {
    "name": "m",
    "source": {"url": "postgresql://u:canary-pw@h/d"},
    "target": {"url_env": "CLOUD_DB_URL"},
    "streams": [],
}


def test_sealed_endpoints_round_trip_and_rotate() -> None:
    old, new = new_key(), new_key()
    sealed = Sealer([old]).seal({"source": STORED["source"], "target": STORED["target"]})
    assert "canary-pw" not in sealed
    rotated = Sealer([new, old]).rotate(sealed)
    assert Sealer([new]).unseal(rotated)["source"] == STORED["source"]
    with pytest.raises(PermanentError, match="none of BATON_SECRET_KEYS"):
        Sealer([new]).unseal(sealed)


def test_storage_seals_when_every_worker_can_open_it() -> None:
    sealer = Sealer([new_key()])
    public, sealed = storage_form(dict(STORED), sealer, workers_can_unseal=True)
    assert public["source"] == public["target"] == {"sealed": True, "kind": "sql"}
    assert sealed is not None and "canary-pw" not in repr(public)
    assert open_spec(public, sealed, sealer) == STORED


def test_a_literal_credential_is_refused_without_keys_or_with_old_workers() -> None:
    with pytest.raises(SpecError, match="url_env"):
        storage_form(dict(STORED), None, workers_can_unseal=True)
    with pytest.raises(SpecError, match="upgrade the workers"):
        storage_form(dict(STORED), Sealer([new_key()]), workers_can_unseal=False)


def test_a_spec_without_literal_credentials_is_kept_as_is_without_keys() -> None:
    clean = {**STORED, "source": {"url": "sqlite:////data/x.db"}}
    assert storage_form(clean, None, workers_can_unseal=False) == (clean, None)


@pytest.mark.parametrize(
    ("endpoint", "literal"),
    [
        ({"url": "postgresql://u:p@h/d"}, True),
        ({"url": "postgresql://u@h/d?password=p"}, True),
        ({"url": "postgresql://u@h/d"}, False),
        ({"url_env": "X"}, False),
        ({"url": "sqlite:////x.db"}, False),
    ],
)
def test_literal_credentials_are_recognised(endpoint: dict[str, str], literal: bool) -> None:
    assert has_literal_credential(endpoint) is literal


def test_a_malformed_key_is_refused_at_start() -> None:
    with pytest.raises(PermanentError, match="malformed"):
        Sealer(["not-a-fernet-key"])


def test_urls_in_tests_are_parsed_the_same_way_sqlalchemy_does() -> None:
    assert parse_sql_url("postgres://u@h/d").drivername == "postgresql+psycopg2"
    assert parse_sql_url("mysql://u@h/d").drivername == make_url("mysql+pymysql://u@h/d").drivername
