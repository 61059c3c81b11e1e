"""Every row arrives equal, or is quarantined with its reason: never changed, never missing.

A differential test: Hypothesis draws a table with a column of every type the source
dialect supports and a few rows of adversarial values (tests/fidelity/strategies.py);
the table is migrated by real worker processes into each target dialect, with
``create_target``; then both sides are read raw and compared by the suite's own
canonical forms (tests/fidelity/oracle.py), and by Baton's verification as well.

``BATON_TEST_FIDELITY_EXAMPLES`` sets the examples per source dialect (each one migrates into
all three targets): a few by default, so ``make test`` stays within its budget; ``make
fidelity`` runs many.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import time
import uuid
from typing import Any

import psycopg2
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from etl_tasks.state.models import Event
from etl_tasks.verify import decode_key_text
from etl_tasks.views import list_quarantine, migration_view
from tests.checks import assert_migrated
from tests.data import submit
from tests.fidelity.conftest import REFUSED_BY_SOURCE, STATS, Fidelity
from tests.fidelity.oracle import canonical, key_canonical, maria_connect, read_rows
from tests.fidelity.strategies import MOODS, SOURCES, TARGETS, Col, Table, tables

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("BATON_TEST_FIDELITY_EXAMPLES", "4"))
PREFLIGHT_S = 60.0


#: Each source dialect; PostgreSQL twice: its streams into PostgreSQL pass through as COPY
#: text by default, and take the parsed path with ``BATON_NATIVE_COPY=off``.
RUNS = [(source, "default") for source in SOURCES] + [("postgresql", "parsed")]
#: The parsed path is every other pair's path too: make test leaves its PostgreSQL run to
#: make fidelity.
PARAMS = [
    pytest.param(s, p, id=f"{s}-{p}", marks=[pytest.mark.fidelity] if p == "parsed" else [])
    for s, p in RUNS
]


@pytest.mark.parametrize(("source", "path"), PARAMS)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=list(HealthCheck),
    # Each example is a few real migrations: shrinking a failure would take minutes, and
    # the failure message already shows every differing value with its key.
    phases=[Phase.explicit, Phase.generate],
)
@given(data=st.data())
def test_every_row_arrives_equal_or_is_quarantined_with_a_reason(
    request: pytest.FixtureRequest, source: str, path: str, data: st.DataObject
) -> None:
    fidelity: Fidelity = request.getfixturevalue(
        "fidelity" if path == "default" else "fidelity_parsed"
    )
    name = f"f{uuid.uuid4().hex[:10]}"
    table = data.draw(tables(source, f"{name}_mood"), label="table")
    kept = create_source(source, fidelity.sources[source], name, table)
    src_rows = read_rows(source, fidelity.sources[source], name, table.columns)
    assert len(src_rows) == kept
    migrations = {}
    for target in TARGETS:
        spec = spec_for(fidelity, source, target, name, table)
        # preflight reads rows of up to 2 MiB on a shared 2-core machine: more than its 5 s
        mid = submit(fidelity.cluster.db, fidelity.cluster.publisher, spec, PREFLIGHT_S)
        migrations[target] = (mid, spec)
    problems: list[str] = []
    for target, (mid, spec) in migrations.items():
        view = wait_finished(fidelity, mid)
        if view["state"] != "succeeded":
            problems.append(f"{source} → {target}: migration {view['state']}: {view['error']}")
            continue
        problems += judge(fidelity, source, target, (mid, view), spec, table, src_rows)
        if source == target == "postgresql":
            problems += path_taken(fidelity, mid, passed_through=path == "default")
    assert not problems, "\n".join(problems)


def path_taken(fidelity: Fidelity, mid: str, *, passed_through: bool) -> list[str]:
    """A PostgreSQL → PostgreSQL stream (column for column, identical types) passed its rows
    through as COPY text, or (``BATON_NATIVE_COPY=off``) took the parsed path, as asked."""
    with fidelity.cluster.db.reading() as s:
        paths = list(
            s.scalars(
                select(Event.message).where(Event.migration_id == mid, Event.kind == "stream_path")
            )
        )
    if len(paths) == 1 and ("COPY text" in paths[0]) == passed_through:
        return []
    expected = "COPY text" if passed_through else "parsed"
    return [f"postgresql → postgresql: expected {expected}, got {paths}"]


def spec_for(fidelity: Fidelity, source: str, target: str, name: str, table: Table) -> Any:
    carried_as = {c.name: c.carried_as[target] for c in table.columns if target in c.carried_as}
    stream: dict[str, Any] = {
        "source_table": name,
        "target_table": f"{name}_{target[:2]}",
        "create_target": True,
    }
    if carried_as:
        stream["as"] = carried_as
    return {
        "name": f"fidelity {source} → {target}",
        "source": {"url": fidelity.sources[source]},
        "target": {"url": fidelity.targets[target]},
        "chunk_rows": table.chunk_rows,
        "streams": [stream],
    }


def wait_finished(fidelity: Fidelity, mid: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = migration_view(fidelity.cluster.db, mid)
        if view["state"] in ("succeeded", "failed", "cancelled"):
            return view
        time.sleep(0.1)
    raise AssertionError(f"migration {mid} not finished in {timeout_s}s\n{fidelity.cluster.logs()}")


# --- the source, written raw ------------------------------------------------------------------


def _key_sql(dialect: str, key_kind: str) -> str:
    if key_kind == "int":
        return {"sqlite": "INTEGER", "postgresql": "integer", "mariadb": "INT"}[dialect]
    return {
        "sqlite": "TEXT NOT NULL",
        "postgresql": "varchar(40)",
        # binary and no-pad: keys differing by case, accent or a trailing space are distinct
        "mariadb": "VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
    }[dialect]


def create_source(dialect: str, url: str, name: str, table: Table) -> int:
    """The table in the source, its rows inserted one by one; how many the source kept."""
    cols = table.columns
    key = _key_sql(dialect, table.key_kind)
    if dialect == "postgresql":
        quoted = [f'"{c.name}" {c.sql}' for c in cols]
        ddl = f'CREATE TABLE "{name}" ("k" {key} PRIMARY KEY, {", ".join(quoted)})'
        labels = ", ".join(f"'{m}'" for m in MOODS)
        marks = ", ".join(["%s", *(f"CAST(%s AS {c.sql})" for c in cols)])
        return _insert_pg(
            url, [f'CREATE TYPE "{name}_mood" AS ENUM ({labels})', ddl], name, marks, table
        )
    if dialect == "mariadb":
        quoted = [f"`{c.name}` {c.sql}" for c in cols]
        ddl = f"CREATE TABLE `{name}` (`k` {key} PRIMARY KEY, {', '.join(quoted)})"
        return _insert_maria(url, ddl, name, table)
    quoted = [f'"{c.name}" {c.sql}'.rstrip() for c in cols]
    ddl = f'CREATE TABLE "{name}" ("k" {key} PRIMARY KEY, {", ".join(quoted)})'
    return _insert_sqlite(url, ddl, name, table)


def _values(row: dict[str, Any], cols: list[Col]) -> list[Any]:
    return [row["k"], *(row[c.name] for c in cols)]


def _pg_float(value: Any) -> Any:
    """A float as PostgreSQL's text: psycopg2 writes -0.0 as a numeric literal, which has no
    negative zero, so the source would hold 0."""
    if not isinstance(value, float):
        return value
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _insert_pg(url: str, setup: list[str], name: str, marks: str, table: Table) -> int:
    conn = psycopg2.connect(url)
    kept = 0
    try:
        with conn.cursor() as cur:
            for sql in setup:
                cur.execute(sql)
            conn.commit()
            for row in table.rows:
                try:
                    values = [_pg_float(v) for v in _values(row, table.columns)]
                    cur.execute(f'INSERT INTO "{name}" VALUES ({marks})', values)
                    conn.commit()
                    kept += 1
                except (psycopg2.Error, ValueError) as exc:
                    conn.rollback()
                    REFUSED_BY_SOURCE[f"postgresql: {type(exc).__name__}"] += 1
    finally:
        conn.close()
    return kept


def _insert_maria(url: str, ddl: str, name: str, table: Table) -> int:
    import pymysql

    conn = maria_connect(url)
    kept = 0
    marks = ", ".join(["%s"] * (len(table.columns) + 1))
    try:
        with conn.cursor() as cur:
            cur.execute(ddl)
            for row in table.rows:
                values = [_maria_value(v) for v in _values(row, table.columns)]
                try:
                    cur.execute(f"INSERT INTO `{name}` VALUES ({marks})", values)
                    kept += 1
                except pymysql.Error as exc:
                    REFUSED_BY_SOURCE[f"mariadb: {exc.args[0]}"] += 1
    finally:
        conn.close()
    return kept


def _maria_value(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:  # the session is in UTC
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _insert_sqlite(url: str, ddl: str, name: str, table: Table) -> int:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    kept = 0
    marks = ", ".join(["?"] * (len(table.columns) + 1))
    try:
        conn.execute(ddl)
        for row in table.rows:
            try:
                conn.execute(f'INSERT INTO "{name}" VALUES ({marks})', _values(row, table.columns))
                kept += 1
            except (sqlite3.Error, OverflowError) as exc:
                REFUSED_BY_SOURCE[f"sqlite: {type(exc).__name__}"] += 1
        conn.commit()
    finally:
        conn.close()
    return kept


# --- the judgement ----------------------------------------------------------------------------


def _short(value: Any, width: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _reason_class(reason: str) -> str:
    """A reason without its values, to count reasons of one kind together."""
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "…", reason)
    text = re.sub(r"\b\d[\d.eE+-]*\b", "N", text)
    return text[:110]


def _equal(kind: str, want: str | None, got: str | None, target: str) -> bool:
    if want == got:
        return True
    # a timestamp with a UTC offset into MariaDB's DATETIME is kept as its UTC instant
    if kind == "timestamp" and target == "mariadb" and want and want.startswith("instant "):
        return want.removeprefix("instant ") == got
    return False


def judge(
    fidelity: Fidelity,
    source: str,
    target: str,
    migration: tuple[str, dict[str, Any]],
    spec: dict[str, Any],
    table: Table,
    src_rows: list[tuple[Any, ...]],
) -> list[str]:
    """Problems with one migration: rows missing, changed, doubled or from nowhere, and
    counts that do not add up."""
    mid, view = migration
    pair = f"{source} → {target}"
    stream = spec["streams"][0]
    got_rows = read_rows(target, fidelity.targets[target], stream["target_table"], table.columns)
    want = {key_canonical(table.key_kind, r[0]): r for r in src_rows}
    problems: list[str] = []
    got = _by_key(pair, table, got_rows, problems)
    quarantined = _quarantined(pair, table, fidelity, mid, problems)
    stats = STATS[(source, target)]
    stats.examples += 1
    stats.rows += len(want)
    for k, row in want.items():
        if k in got and k in quarantined:
            problems.append(f"{pair}: key {k!r} is both loaded and quarantined")
        elif k in quarantined:
            stats.quarantined += 1
            stats.reasons[_reason_class(quarantined[k])] += 1
        elif k not in got:
            problems.append(f"{pair}: key {k!r} is missing, and not quarantined")
        else:
            stats.carried += 1
            problems += _differences(pair, target, k, table.columns, row, got[k])
    problems += [
        f"{pair}: key {k!r} is in the target, not in the source" for k in got.keys() - want.keys()
    ]
    problems += [
        f"{pair}: quarantined key {k!r} is no source key" for k in quarantined.keys() - want.keys()
    ]
    counted = (view["rows_loaded"], view["rows_quarantined"])
    if counted != (len(got_rows), len(quarantined)):
        problems.append(
            f"{pair}: the migration counts {counted} rows loaded and quarantined; "
            f"the target holds {len(got_rows)}, the quarantine {len(quarantined)}"
        )
    if not problems:  # and Baton's own verification agrees, counts included
        try:
            assert_migrated(fidelity.cluster.db, mid, spec)
        except AssertionError as exc:
            problems.append(f"{pair}: Baton's verification disagrees: {_short(exc, 600)}")
    return problems


def _by_key(
    pair: str, table: Table, rows: list[tuple[Any, ...]], problems: list[str]
) -> dict[str, tuple[Any, ...]]:
    got: dict[str, tuple[Any, ...]] = {}
    for r in rows:
        k = key_canonical(table.key_kind, r[0])
        if k in got:
            problems.append(f"{pair}: key {k!r} is in the target twice")
        got[k] = r
    return got


def _quarantined(
    pair: str, table: Table, fidelity: Fidelity, mid: str, problems: list[str]
) -> dict[str, str]:
    """The migration's quarantined rows, key → reason, read from the state DB."""
    out: dict[str, str] = {}
    for q in list_quarantine(fidelity.cluster.db, mid):
        (value,) = decode_key_text(q["key"])
        k = key_canonical(table.key_kind, value)
        if not q["reason"]:
            problems.append(f"{pair}: key {k!r} quarantined without a reason")
        out[k] = q["reason"]
    return out


def _differences(
    pair: str, target: str, k: str, cols: list[Col], row: tuple[Any, ...], got: tuple[Any, ...]
) -> list[str]:
    out = []
    for c, s, t in zip(cols, row[1:], got[1:], strict=True):
        w, g = canonical(c.kind, s), canonical(c.kind, t)
        if not _equal(c.kind, w, g, target):
            out.append(
                f"{pair}: key {k!r}, column {c.name} ({c.sql}): changed, not quarantined:"
                f" source {_short(s)} = {_short(w)}; target {_short(t)} = {_short(g)}"
            )
    return out
