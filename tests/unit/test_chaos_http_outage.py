"""The chaos harness's HTTP outage scenario is wired into the long tier (the run itself,
a minute of outage, is `make chaos`, or `baton chaos --tier http-outage` alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etl_tasks.endpoints import HttpEndpoint
from etl_tasks.spec import parse_spec
from ops.chaos import run as chaos_run
from ops.chaos.http_outage import OUTAGE_S, OutageResult, http_spec, target_keys
from ops.demo_data import DemoStats


def test_the_scenario_migrates_the_demo_db_into_an_http_api() -> None:
    stats = DemoStats("/tmp/legacy.db", {}, {})
    spec = http_spec(stats, "http://127.0.0.1:9/v1/{table}/import")

    parsed = parse_spec(spec)

    assert isinstance(parsed.target, HttpEndpoint)
    assert all(not s.create_target for s in parsed.streams)
    assert target_keys(spec) == {
        "customers": ["customer_id"],
        "products": ["sku"],
        "invoices": ["invoice_id"],
        "invoice_lines": ["invoice_id", "line_no"],
    }


@pytest.mark.parametrize(
    ("tier", "campaign", "outage_s"),
    [("short", True, None), ("long", True, OUTAGE_S), ("http-outage", False, OUTAGE_S)],
)
def test_the_long_tier_ends_with_a_minute_long_http_outage(
    tier: str,
    campaign: bool,
    outage_s: float | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a harness whose lab, campaign and scenario only say that they ran
    ran: dict[str, Any] = {}

    class Campaign:
        def __init__(self, *args: Any) -> None:
            ran["campaign"] = True

        def run(self) -> chaos_run.Verdict:
            return chaos_run.Verdict([], [chaos_run.MigrationResult(1, "succeeded")], [])

    def outage(lab: Any, stats: Any, out: Any, seconds: float) -> OutageResult:
        ran["outage_s"] = seconds
        return OutageResult(state="succeeded")

    monkeypatch.setattr(chaos_run, "build_legacy_db", lambda path: DemoStats(str(path), {}, {}))
    monkeypatch.setattr(chaos_run, "start_lab", lambda workdir, stack: None)
    monkeypatch.setattr(chaos_run, "Campaign", Campaign)
    monkeypatch.setattr(chaos_run, "http_outage", outage)

    # When the tier runs
    verdict = chaos_run.run(tier, tmp_path, out=lambda line: None)

    # Then the long tier runs the campaign and then the outage; http-outage only the latter
    assert ran.get("campaign", False) is campaign
    assert ran.get("outage_s") == outage_s
    assert verdict.passed
    assert (verdict.outage is not None) is (outage_s is not None)
