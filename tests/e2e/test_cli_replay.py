"""``baton quarantine ID --replay`` against a real ``baton api``: what it asks for, what it
prints, and its exit codes (no worker runs: a test moves the migration itself)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from etl_tasks.state.db import StateDB
from ops import exit_codes
from tests.e2e import test_cli_operators as cli
from tests.e2e.test_cli_operators import Baton, _quarantine, _set_state, _submitted

# One API for this module, as the operators' CLI tests have theirs.
server, db, spec_file = cli.server, cli.db, cli.spec_file
operator, viewer = cli.operator, cli.viewer

pytestmark = pytest.mark.slow


def test_replay_from_the_cli(
    operator: Baton, viewer: Baton, db: StateDB, spec_file: Path, tmp_path: Path
) -> None:
    # Given a succeeded migration with three quarantined rows
    mid = _submitted(operator, spec_file)
    _quarantine(db, mid, 3)
    _set_state(db, mid, "succeeded")
    # A viewer may not replay (7), and --wait or --columns alone are a usage error (2)
    assert viewer("quarantine", mid, "--replay").exit_code == exit_codes.UNAVAILABLE
    assert operator("quarantine", mid, "--wait").exit_code == exit_codes.USAGE
    # A revision naming no stream of the migration is refused (6), and changes nothing
    bad = tmp_path / "columns.json"
    bad.write_text(json.dumps({"streams": {"nope": {"columns": {"id": "id"}}}}))
    refused = operator("quarantine", mid, "--replay", "--columns", str(bad))
    assert refused.exit_code == exit_codes.REFUSED, refused.output
    assert "streams/nope" in refused.output
    # When an operator replays them
    started = operator.json("quarantine", mid[:10], "--replay")
    # Then the three rows are read again and the migration runs again
    assert (started["rows"], started["chunks"], started["migration"]["state"]) == (
        3,
        1,
        "running",
    )
    # And a second replay is refused while it runs (6); an unknown id is not found (5)
    again = operator("quarantine", mid, "--replay")
    assert again.exit_code == exit_codes.REFUSED and "already running" in again.output
    assert operator("quarantine", "ffff", "--replay").exit_code == exit_codes.NOT_FOUND


def test_replay_and_wait_ends_with_the_migrations_outcome(
    operator: Baton, db: StateDB, spec_file: Path
) -> None:
    mid = _submitted(operator, spec_file)
    _quarantine(db, mid, 2)
    _set_state(db, mid, "failed")
    ends = threading.Timer(1.0, _set_state, (db, mid, "succeeded"))  # as a worker would
    ends.start()
    try:
        result = operator("quarantine", mid, "--replay", "--wait")
    finally:
        ends.join()
    assert result.exit_code == exit_codes.OK, result.output
    assert "replaying 2 quarantined rows" in result.stdout
