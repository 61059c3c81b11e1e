"""Public sample databases migrated whole, as a new user would, then compared row by row.

Each case loads a sample (``tests/samples.py``, ``tests/data/samples/``) into a
database of its own, drafts its spec, runs it with the in-process driver into
an empty PostgreSQL or MariaDB database, and compares every table in the
canonical form of ``tests/row_compare.py``, then with Baton's own verification.

The spec is the one ``baton spec init`` drafts (``etl_tasks.drafting``): every
base table a stream, keyed, created in the target, ordered by foreign keys,
with ``"as"`` for the columns the other dialect has no counterpart for (a
PostgreSQL array or a MySQL SET as JSON, a MySQL geometry as its WKT).
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from etl_tasks.connectors.sql.engines import create_sql_engine
from tests.checks import assert_migrated
from tests.data import submit
from tests.harness import Driver
from tests.row_compare import compare_tables
from tests.samples import migration_problems, sample_spec

SOURCES = {
    "pagila": "pagila_url",  # PostgreSQL
    "sakila": "sakila_url",  # MariaDB
    "chinook": "chinook_url",  # SQLite
    "northwind": "northwind_url",  # SQLite
}
TARGETS = {"postgresql": "pg_url", "mariadb": "mariadb_url"}


def case(sample: str, target: str) -> object:
    """The SQLite samples into PostgreSQL in `make test`; every pair in `make fidelity`."""
    deep = target == "mariadb" or sample in ("pagila", "sakila")
    marks = [pytest.mark.fidelity] if deep else []
    return pytest.param(sample, target, id=f"{sample}-to-{target}", marks=marks)


CASES = [case(sample, target) for sample in SOURCES for target in TARGETS]


# SQLAlchemy warns about types it does not know (MariaDB's geometry) and reads them untyped,
# as it does in production; what then becomes of the values is what this test checks.
@pytest.mark.filterwarnings("ignore:Did not recognize type:sqlalchemy.exc.SAWarning")
@pytest.mark.parametrize(("sample", "target"), CASES)
def test_sample_database_migrates_row_for_row(
    sample: str, target: str, driver: Driver, request: pytest.FixtureRequest
) -> None:
    # Given the sample in a database of its own, an empty target, and a spec for every table
    source_url = request.getfixturevalue(SOURCES[sample])
    target_url = request.getfixturevalue(TARGETS[target])
    spec = sample_spec(source_url, target_url, sample)
    # When the in-process driver runs the migration to its end
    migration_id = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(migration_id)
    # Then it succeeded and set no row aside
    problems = migration_problems(driver.rt.db, migration_id)
    assert not problems, "\n".join(problems)
    # And every target table equals its source table, row by row
    diffs = [d.describe() for d in compare_tables(spec) if not d.ok]
    assert not diffs, "\n".join(diffs)
    # And Baton's own verification agrees, stream by stream
    assert_migrated(driver.rt.db, migration_id, spec, expected_bad={})


def test_northwind_loads_into_a_schema_with_foreign_keys_without_an_after(
    northwind_url: str, pg_url: str, driver: Driver
) -> None:
    # Given Northwind's tables in the target, with every foreign key its SQLite file declares
    spec = sample_spec(northwind_url, pg_url, "northwind")
    schema_id = submit(driver.rt.db, driver.publisher, spec)  # a first run makes the tables
    driver.run_to_end(schema_id)
    assert not migration_problems(driver.rt.db, schema_id)
    references = _add_foreign_keys(northwind_url, pg_url)
    assert len(references) >= 10, references
    # And a spec that says nothing about order: no 'after' anywhere, every table existing
    for stream in spec["streams"]:
        stream.pop("after", None)
        stream["create_target"] = False
    assert not any("after" in s for s in spec["streams"])
    # When it runs
    migration_id = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(migration_id)
    # Then the order came from the target's foreign keys: nothing refused, nothing set aside
    problems = migration_problems(driver.rt.db, migration_id)
    assert not problems, "\n".join(problems)
    assert_migrated(driver.rt.db, migration_id, spec, expected_bad={})
    diffs = [d.describe() for d in compare_tables(spec) if not d.ok]
    assert not diffs, "\n".join(diffs)


def _add_foreign_keys(source_url: str, target_url: str) -> list[str]:
    """Empty the target's tables and give them the source's foreign keys (self-references
    included); the statements that did so."""
    source, target = create_sql_engine(source_url), create_sql_engine(target_url)
    statements: list[str] = []
    try:
        inspector = inspect(source)
        tables = [t for t in inspector.get_table_names() if not t.startswith("sqlite_")]
        quote = target.dialect.identifier_preparer.quote
        with target.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(quote(t) for t in tables)}"))
            for table in tables:
                for n, fk in enumerate(inspector.get_foreign_keys(table)):
                    sql = (
                        f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(f'fk_{table}_{n}')} "
                        f"FOREIGN KEY ({', '.join(map(quote, fk['constrained_columns']))}) "
                        f"REFERENCES {quote(fk['referred_table'])} "
                        f"({', '.join(map(quote, fk['referred_columns']))})"
                    )
                    conn.execute(text(sql))
                    statements.append(sql)
    finally:
        source.dispose()
        target.dispose()
    return statements
