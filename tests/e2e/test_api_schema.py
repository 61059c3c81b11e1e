"""Schemathesis against a real ``baton api``: every operation, as an operator, as an admin
(the token operations succeed only for one) and with no token at all.

Checks: no 5xx, status codes the document lists, content types and bodies that
fit the document's schemas. Examples are few and derandomized, so the run is
deterministic and short.

The server starts in a fixture, so the schema cannot be loaded at import time
for ``@schema.parametrize()``, and schemathesis' lazy loader
(``schemathesis.pytest.from_fixture``) needs a pytest internal that pytest 9 no
longer has. So the operations table is the parametrization, and each test runs
Hypothesis over that operation's strategy itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.schemas import BaseSchema

from api.operations import OPERATIONS, Operation
from tests import services
from tests.api_process import ApiProcess
from tests.data import build_source, spec_for

EXAMPLES = 15  # per operation and run
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def _label(op: Operation) -> str:
    return f"{op.method.upper()} {op.path}"


HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def state_db() -> Iterator[str | None]:
    """A PostgreSQL state DB of the module's own, as in production (it refuses what SQLite
    stores, such as NUL in text); SQLite when no PostgreSQL runs here (never in CI)."""
    if not services.postgres_answers():
        if services.IN_CI:
            services.unavailable(f"PostgreSQL at {services.PG_ADMIN_URL}")
        yield None
        return
    with services.pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str, state_db: str | None
) -> Iterator[ApiProcess]:
    prefix = f"baton-test-{uuid.uuid4().hex[:10]}:"
    api = ApiProcess(
        tmp_path_factory.mktemp("api"),
        redis_server,
        prefix,
        state_db,
        BATON_AUTH="on",
        BATON_PREFLIGHT_TIMEOUT_S="1",
        # the run without a token fails authentication on purpose, more than 20 times
        BATON_AUTH_FAILURES_MAX="100000",
    )
    try:
        yield api.wait_ready()
    finally:
        api.close()
        services.delete_prefix(redis_server, prefix)


@pytest.fixture(scope="module")
def tokens(server: ApiProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An operator's and an admin's token; the operator submitted one migration, so lists
    have an item to check."""
    operator = server.token("operator")
    data = tmp_path_factory.mktemp("data")
    build_source(f"sqlite:///{data / 'legacy.db'}", customers=5, orders=2)
    spec = spec_for(f"sqlite:///{data / 'legacy.db'}", f"sqlite:///{data / 'target.db'}")
    resp = requests.post(
        f"{server.url}/api/v1/migrations",
        json=spec,
        headers={"Authorization": f"Bearer {operator}"},
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    return {"operator": operator, "admin": server.token("admin")}


@pytest.fixture(scope="module")
def api_schema(server: ApiProcess) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


@pytest.mark.parametrize("op", OPERATIONS, ids=_label)
@pytest.mark.parametrize("who", ["operator", "admin", "nobody"])
def test_every_operation(
    api_schema: BaseSchema, tokens: dict[str, str], who: str, op: Operation
) -> None:
    token = tokens.get(who)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    strategy = api_schema[op.path][op.method.upper()].as_strategy()

    @HYPOTHESIS
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        with requests.Session() as session:
            case.call_and_validate(headers=headers, checks=CHECKS, session=session, timeout=10)

    check()
