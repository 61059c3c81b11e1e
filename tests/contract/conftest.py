"""The contract suite's fixtures: each test runs once per connector, on a system of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.connectors import CASES, Case


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    """One connector (source and target) on a database of this test's own."""
    with CASES[request.param](tmp_path) as made:
        yield made
