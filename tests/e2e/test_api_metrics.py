"""A real ``baton api`` with two gunicorn processes: /metrics sums the requests of both."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import requests

from tests import services
from tests.api_process import ApiProcess

pytestmark = pytest.mark.slow

HEALTHZ = re.compile(
    r'^baton_api_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', re.M
)


def test_every_gunicorn_process_counts_into_one_sum(tmp_path: Path, redis_server: str) -> None:
    # Given the API under gunicorn with two processes, counting into a folder of its own
    prefix = f"baton-test-{uuid.uuid4().hex[:10]}:"
    metrics_dir = tmp_path / "metrics"
    api = ApiProcess(
        tmp_path,
        redis_server,
        prefix,
        processes=2,
        BATON_AUTH="off",
        BATON_LIVE="off",
        BATON_METRICS_DIR=str(metrics_dir),
    )
    try:
        api.wait_ready()
        # When 40 requests come, each on a new connection (either process may take it)
        for _ in range(39):
            assert requests.get(f"{api.url}/healthz", timeout=5).ok
        # Then every scrape, whichever process answers it, counts all of them
        for _ in range(6):
            text = requests.get(f"{api.url}/metrics", timeout=5).text
            match = HEALTHZ.search(text)
            assert match is not None, text
            assert float(match.group(1)) == 40.0
        assert "baton_state_age_seconds" in text  # the state DB's gauges, cached
        # And the counts live in one folder, which the API removes when it stops
        # (one file per process that counted: both, unless one took every connection)
        (folder,) = metrics_dir.iterdir()
        assert list(folder.glob("counter_*.db"))
    finally:
        api.close()
        services.delete_prefix(redis_server, prefix)
    assert list(metrics_dir.iterdir()) == []
