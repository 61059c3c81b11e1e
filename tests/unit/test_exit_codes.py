"""The CLI's exit codes: one table in ops/exit_codes.py, the same one in docs/operations.md."""

from __future__ import annotations

import re

from ops import exit_codes
from tests.harness import ROOT


def test_the_exit_codes_are_documented() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("## Operating from the CLI", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"\| `(\d)` \| `(\w+)` \|", section)
    documented = {int(code): name for code, name in rows}
    names = {
        name: value
        for name, value in vars(exit_codes).items()
        if name.isupper() and isinstance(value, int)
    }
    assert documented == {v: k for k, v in names.items() if k != "PROBE_REFUSED"}


def test_api_refusals_map_to_their_codes() -> None:
    assert exit_codes.of_status(404) == exit_codes.NOT_FOUND
    for status in (400, 409, 413, 415, 422):
        assert exit_codes.of_status(status) == exit_codes.REFUSED
    for status in (401, 403, 429, 500, 503):
        assert exit_codes.of_status(status) == exit_codes.UNAVAILABLE
    codes = [exit_codes.OK, exit_codes.INCOMPLETE, exit_codes.USAGE, exit_codes.FAILED]
    codes += [exit_codes.TIMED_OUT, exit_codes.NOT_FOUND, exit_codes.REFUSED]
    assert len({*codes, exit_codes.UNAVAILABLE}) == 8
