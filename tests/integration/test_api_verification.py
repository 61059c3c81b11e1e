"""``POST`` and ``GET /api/v1/migrations/{id}/verify`` through Flask's test client, with the
verification's tasks run by an in-process driver on the same state DB."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.schemas import MigrationView, VerificationReport
from etl_tasks.settings import Settings
from tests.harness import Driver
from tests.integration.api_support import MIGRATIONS, PLAN_TASK, Api, Spec, bearer, make_api


@pytest.fixture
def both(make_settings: Callable[..., Settings]) -> Iterator[tuple[Api, Driver]]:
    """An API with tokens on, and a driver running steps on the same state DB."""
    settings = make_settings(auth="on")
    driver = Driver(settings)
    yield make_api(settings), driver
    driver.close()


def run_published(api: Api, driver: Driver) -> None:
    """Deliver what the API published (plan messages), then everything that follows."""
    for task, _, kwargs in api.publisher.sent:
        driver.publisher.queue.append((task, dict(kwargs)))
    api.publisher.sent.clear()
    driver.run()


def succeeded(api: Api, driver: Driver, spec: Spec) -> tuple[str, dict[str, str]]:
    operator = bearer(api.token("operator", "ops"))
    mid = api.created(spec, operator)
    run_published(api, driver)
    assert driver.run_to_end(mid) == "succeeded"
    return mid, operator


def test_verify_answers_202_then_the_report_and_the_migration_links_it(
    both: tuple[Api, Driver], spec: Spec
) -> None:
    api, driver = both
    mid, operator = succeeded(api, driver, spec)
    viewer = bearer(api.token("viewer"))
    path = f"{MIGRATIONS}/{mid}/verify"
    # Given a migration never verified: no report
    assert api.client.get(path, headers=viewer).status_code == 404
    # When an operator asks, twice
    first = api.client.post(path, headers=operator)
    again = api.client.post(path, headers=operator)
    # Then both get the same pending verification, and one plan message went out
    assert first.status_code == again.status_code == 202, first.get_data(as_text=True)
    assert first.headers["Location"] == path
    body = first.get_json()
    assert (body["state"], body["trigger"]) == ("pending", "operator")
    assert body["requested_by"].endswith("(ops)")  # the actor, as events name it
    assert again.get_json()["id"] == body["id"]
    assert [t for t, _, _ in api.publisher.sent] == [PLAN_TASK]
    VerificationReport.model_validate(body)
    # When the workers have run it
    run_published(api, driver)
    # Then a viewer reads the report, and the migration points at it
    report = api.client.get(path, headers=viewer)
    assert report.status_code == 200
    data = VerificationReport.model_validate(report.get_json())
    assert data.state == "equal" and data.equal
    assert [(s.name, s.state, s.source_rows) for s in data.streams] == [
        ("Customers", "equal", 40),
        ("order_lines", "equal", 30),
    ]
    view = MigrationView.model_validate(
        api.client.get(f"{MIGRATIONS}/{mid}", headers=viewer).get_json()
    )
    assert view.verification is not None
    assert (view.verification.state, view.verification.report_url) == ("equal", path)


def test_a_viewer_sees_sample_values_masked_an_operator_whole(
    both: tuple[Api, Driver], spec: Spec
) -> None:
    api, driver = both
    mid, operator = succeeded(api, driver, spec)
    target = spec["target"]["url"].removeprefix("sqlite:///")
    with sqlite3.connect(target) as conn:
        conn.execute("""UPDATE "Customers" SET email = 'x@y.example' WHERE "CustomerId" = 3""")
    path = f"{MIGRATIONS}/{mid}/verify"
    assert api.client.post(path, headers=operator).status_code == 202
    run_published(api, driver)
    seen = {}
    for role in ("viewer", "operator", "admin"):
        body = api.client.get(path, headers=bearer(api.token(role))).get_json()
        assert body["state"] == "different"
        (sample,) = body["streams"][0]["samples"]
        seen[role] = (sample["key"], sample["columns"], sample["expected"], sample["found"])
    assert seen["viewer"] == (["3"], ["email"], {"email": "***"}, {"email": "***"})
    assert seen["operator"] == seen["admin"]
    assert seen["operator"] == (
        ["3"],
        ["email"],
        {"email": "user3@example.com"},
        {"email": "x@y.example"},
    )


def test_verify_refusals(both: tuple[Api, Driver], spec: Spec) -> None:
    api, _ = both
    operator = bearer(api.token("operator"))
    unknown = f"{MIGRATIONS}/{'0' * 32}/verify"
    assert api.client.post(unknown, headers=operator).status_code == 404
    assert api.client.get(unknown, headers=operator).status_code == 404
    # A migration that has not succeeded yet (nothing ran it): 409, and nothing recorded
    mid = api.created(spec, operator)
    path = f"{MIGRATIONS}/{mid}/verify"
    refused = api.client.post(path, headers=operator)
    assert refused.status_code == 409
    assert "cannot verify a migration that is pending" in refused.get_json()["error"]
    assert api.client.get(path, headers=operator).status_code == 404
    # Only operators start one; everyone needs a token
    assert api.client.post(path, headers=bearer(api.token("viewer"))).status_code == 403
    assert api.client.post(path).status_code == 401
    assert api.client.get(path).status_code == 401


def test_both_operations_are_in_the_openapi_document(api: Api, tmp_path: Path) -> None:
    doc = api.client.get("/openapi.json").get_json()
    item = doc["paths"]["/api/v1/migrations/{id}/verify"]
    assert item["post"]["operationId"] == "verifyMigration"
    assert set(item["post"]["responses"]) >= {"202", "401", "403", "404", "409", "429"}
    assert item["get"]["operationId"] == "getVerification"
    assert set(item["get"]["responses"]) >= {"200", "401", "404", "429"}
    ref = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/VerificationReport")
