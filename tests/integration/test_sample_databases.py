"""Public sample databases migrated whole, as a new user would, then compared row by row.

Each case loads a sample (``tests/samples.py``, ``tests/data/samples/``) into a
database of its own, drafts the spec a new user would write (every base table a
stream, created in the target, keyed by its primary key, after the tables it
references), runs it with the in-process driver into an empty PostgreSQL or
MariaDB database, and compares every table in the canonical form of
``tests/row_compare.py``.

A case that fails today carries a strict xfail naming its known failures, the
one that stops the migration first. When a fix makes such a case pass, strict
xfail reports the XPASS as a failure: then remove the mark (or shorten its
reason, if the case still fails for the rest).
"""

from __future__ import annotations

import pytest

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


def case(sample: str, target: str, *fails_today: str) -> object:
    """A case; one that fails today is a strict xfail giving these reasons."""
    marks = []
    if fails_today:
        reason = "; ".join(fails_today) + ". Passes now? Remove this mark."
        marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason))
    return pytest.param(sample, target, marks=marks, id=f"{sample}-to-{target}")


ENUM_ON_PG = "film.rating (enum): create_target fails: 'PostgreSQL ENUM type requires a name.'"
SET_STAGED = (
    "film.special_features (SET): extract fails: 'TypeError: cannot stage a value of type set', "
    "retried forever"
)
CASES = [
    case("pagila", "postgresql", ENUM_ON_PG),
    case(
        "pagila",
        "mariadb",
        "film.special_features (text[]): create_target fails: MySQLTypeCompiler "
        "can't render element of type ARRAY",
        "every timestamptz (each last_update, rental.rental_date and return_date, "
        "payment.payment_date in payment's key) arrives as DATETIME(6) without its offset",
    ),
    case(
        "sakila",
        "postgresql",
        ENUM_ON_PG,
        SET_STAGED,
        "staff.password (VARCHAR(40) BINARY): create_target fails: "
        '\'collation "utf8mb4_bin" for encoding "UTF8" does not exist\'',
        "address.location (GEOMETRY) is created as TEXT and holds the '\\x…' text of its bytes",
    ),
    case(
        "sakila",
        "mariadb",
        "address.location (GEOMETRY) is created as TEXT, which refuses every value "
        "(1366 'Incorrect string value'); the chunk's quarantine then overflows the ledger: "
        "(1406, \"Data too long for column 'quarantine' at row 1\")",
        SET_STAGED,
    ),
    case("chinook", "postgresql"),
    case("chinook", "mariadb"),
    case("northwind", "postgresql"),
    case("northwind", "mariadb"),
]


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
    driver.run()
    # Then it succeeded and set no row aside
    problems = migration_problems(driver.rt.db, migration_id)
    assert not problems, "\n".join(problems)
    # And every target table equals its source table, row by row
    diffs = [d.describe() for d in compare_tables(spec) if not d.ok]
    assert not diffs, "\n".join(diffs)
