"""The contract suite's fixtures: each test runs once per connector, on a system of its own.

A test module says which connectors it judges (``KINDS``: :data:`SOURCES` or
:data:`TARGETS`); the ``case`` fixture is that connector on a system of the test's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.connectors import SOURCES, TARGETS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        kinds = getattr(metafunc.module, "KINDS", TARGETS)
        metafunc.parametrize("case_kind", list(kinds))


@pytest.fixture
def case(case_kind: str, tmp_path: Path) -> Iterator[Any]:
    """One connector (as a source or as a target) on a system of this test's own."""
    factory = SOURCES.get(case_kind) or TARGETS[case_kind]
    with factory(tmp_path) as made:
        yield made
