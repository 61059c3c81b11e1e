"""Operating from the CLI against a real ``baton api``: the controls, events, quarantined
rows, waiting with ``--strict`` and ``--timeout``, id prefixes and the exit codes.

The commands run in this process (click's runner, real HTTP to the API process);
no worker runs, so migrations stay where a test puts them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update

from etl_tasks.codec import quarantine_key
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Chunk, Migration, QuarantinedRow, Stream
from ops import exit_codes
from ops.cli import main
from tests import services
from tests.api_process import ApiProcess
from tests.data import build_source, spec_for, sqlite_url

pytestmark = pytest.mark.slow

ROW = {"amount": {"$": "dec", "v": "12.50"}, "paid_at": {"$": "dt", "v": "2024-01-02T03:04:05"}}
PLAIN = {"amount": "12.50", "paid_at": "2024-01-02T03:04:05"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[ApiProcess]:
    """One API for the module, on a PostgreSQL state DB when one runs (always in CI)."""
    with _state_db() as url:
        prefix = f"baton-test-{uuid.uuid4().hex[:10]}:"
        api = ApiProcess(tmp_path_factory.mktemp("api"), redis_server, prefix, url, BATON_AUTH="on")
        try:
            yield api.wait_ready()
        finally:
            api.close()
            services.delete_prefix(redis_server, prefix)


def _state_db() -> Any:
    if services.postgres_answers() or services.IN_CI:
        return services.pg_database()
    from contextlib import nullcontext

    return nullcontext(None)


@pytest.fixture(scope="module")
def db(server: ApiProcess) -> Iterator[StateDB]:
    state = StateDB(server.database_url)
    yield state
    state.dispose()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    build_source(sqlite_url(data / "legacy.db"), customers=5, orders=2)
    path = data / "spec.json"
    path.write_text(json.dumps(spec_for(sqlite_url(data / "legacy.db"), sqlite_url(data / "t.db"))))
    return path


class Baton:
    """``baton`` as one token's holder runs it."""

    def __init__(self, server: ApiProcess, token: str) -> None:
        self.env = {"BATON_API_URL": server.url, "BATON_API_TOKEN": token}

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False)

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def operator(server: ApiProcess) -> Baton:
    return Baton(server, server.token("operator", "cli-op"))


@pytest.fixture(scope="module")
def viewer(server: ApiProcess) -> Baton:
    return Baton(server, server.token("viewer", "cli-viewer"))


def _submitted(operator: Baton, spec_file: Path) -> str:
    return str(operator.json("submit", str(spec_file))["id"])


def _set_state(db: StateDB, migration_id: str, state: str) -> None:
    with db.session() as s:
        s.execute(update(Migration).where(Migration.id == migration_id).values(state=state))


def _quarantine(db: StateDB, migration_id: str, n: int) -> None:
    with db.session() as s:
        stream = s.scalars(select(Stream).where(Stream.migration_id == migration_id)).first()
        assert stream is not None
        now = db.now(s)
        chunk = Chunk(
            migration_id=migration_id,
            stream_id=stream.id,
            seq=0,
            state="done",
            step="load",
            created_at=now,
        )
        s.add(chunk)
        s.flush()
        s.add_all(
            QuarantinedRow(
                migration_id=migration_id,
                stream_id=stream.id,
                chunk_id=chunk.id,
                key=quarantine_key([i]),
                reason=f"amount: too large: '{i}'",
                row=ROW,
                fencing_token=1,
                created_at=now,
            )
            for i in range(n)
        )


def test_controls_and_events_by_id_prefix(operator: Baton, viewer: Baton, spec_file: Path) -> None:
    # Given a migration, known by a prefix of its id
    mid = _submitted(operator, spec_file)
    short = mid[:10]
    # When an operator pauses, resumes and cancels it by that prefix
    paused = operator("pause", short)
    assert paused.exit_code == 0 and mid in paused.stdout and "paused" in paused.stdout
    assert operator.json("resume", short)["state"] == "running"
    # Then a control its state does not allow is refused (6), and says why
    again = operator("resume", short)
    assert again.exit_code == exit_codes.REFUSED and "409" in again.output
    assert operator("cancel", mid).exit_code == 0
    assert operator("retry", short).exit_code == exit_codes.REFUSED
    # And a viewer may read, not control (the API refuses the token's role: 7)
    assert viewer("pause", short).exit_code == exit_codes.UNAVAILABLE
    # And the events tell who did what, oldest first
    events = viewer.json("events", short)
    asked = [(e["kind"], e["actor"]) for e in events["items"] if e["actor"]]
    assert [kind for kind, _ in asked] == ["submitted", "pause", "resume", "cancel"]
    assert all(actor.endswith("(cli-op)") for _, actor in asked)
    assert events["total"] == len(events["items"]) and events["next"] is None
    last = events["items"][-1]["id"]
    page = viewer.json("events", short, "--after", str(events["items"][-3]["id"]), "--limit", "1")
    assert len(page["items"]) == 1 and page["total"] == len(events["items"]) and page["next"]
    table = viewer("events", short)
    assert table.exit_code == 0 and "cli-op" in table.stdout and str(last) in table.stdout
    assert viewer.json("status", short)["id"] == mid
    assert viewer("quarantine", short).stdout == "no quarantined rows\n"
    assert viewer("events", short, "--after", str(last)).stdout == f"no events after event {last}\n"


def test_unknown_and_ambiguous_ids(operator: Baton, db: StateDB) -> None:
    # Given two migrations whose ids share a prefix
    with db.session() as s:
        now = db.now(s)
        for tail in ("1", "2"):
            s.add(
                Migration(
                    id="abcabc" + tail * 26,
                    name=f"twin-{tail}",
                    spec={},
                    state="paused",
                    created_at=now,
                    updated_at=now,
                )
            )
    # Then the shared prefix is refused as ambiguous (2), naming both
    ambiguous = operator("status", "abcabc")
    assert ambiguous.exit_code == exit_codes.USAGE
    assert "ambiguous" in ambiguous.output and "twin-1" in ambiguous.output
    assert "abcabc" + "2" * 26 in ambiguous.output
    # And one more character names one of them
    assert operator.json("status", "abcabc2")["name"] == "twin-2"
    # And ids no migration has are not found (5), for every command
    for args in (["pause", "fff0"], ["events", "0" * 32], ["quarantine", "ffff"], ["watch", "ff"]):
        assert operator(*args).exit_code == exit_codes.NOT_FOUND, args
    assert operator("verify", "fff0").exit_code == exit_codes.NOT_FOUND


def test_quarantine_to_stdout(operator: Baton, viewer: Baton, db: StateDB, spec_file: Path) -> None:
    # Given a migration with more quarantined rows than one page
    mid = _submitted(operator, spec_file)
    _quarantine(db, mid, 1050)
    # When an operator writes them as JSON Lines, then as CSV
    lines = operator("quarantine", mid[:8], "--jsonl")
    table = operator("quarantine", mid[:8], "--csv")
    # Then every row is there, values plain
    assert lines.exit_code == 0 and table.exit_code == 0
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(rows) == 1050 and rows[0]["row"] == PLAIN and rows[7]["key_values"] == [7]
    parsed = list(csv.DictReader(io.StringIO(table.stdout)))
    assert len(parsed) == 1050 and json.loads(parsed[3]["row"]) == PLAIN
    # And a page as JSON says how many there are; a table says what it left out
    page = operator.json("quarantine", mid, "--limit", "10")
    assert len(page["items"]) == 10 and page["total"] == 1050 and page["next"]
    shown = operator("quarantine", mid)
    assert "100 of 1050 shown" in shown.stderr
    # And a viewer sees the values masked, in every form
    masked = viewer("quarantine", mid, "--jsonl").stdout.splitlines()
    assert {json.dumps(json.loads(m)["row"]) for m in masked} == {
        json.dumps({"amount": "***", "paid_at": "***"})
    }
    assert "12.50" not in viewer("quarantine", mid, "--csv").stdout


def test_waiting_ends_with_the_migrations_outcome(
    operator: Baton, db: StateDB, spec_file: Path
) -> None:
    # Given a migration no worker moves: waiting for it times out (4)
    timed_out = operator("submit", str(spec_file), "--wait", "--timeout", "0.5")
    assert timed_out.exit_code == exit_codes.TIMED_OUT, timed_out.output
    mid = re.search(r"submitted ([0-9a-f]{32})", timed_out.stdout)
    assert mid is not None
    assert "timed out" in timed_out.stderr
    migration_id = mid.group(1)
    # When it has succeeded with quarantined rows: 0, but 1 with --strict
    _set_state(db, migration_id, "succeeded")
    assert operator("watch", migration_id).exit_code == exit_codes.OK
    _quarantine(db, migration_id, 2)
    strict = operator("watch", migration_id[:9], "--strict")
    assert strict.exit_code == exit_codes.INCOMPLETE and "2 rows" in strict.stderr
    final = operator("watch", migration_id, "--strict", "--json")
    assert final.exit_code == exit_codes.INCOMPLETE
    assert json.loads(final.stdout)["rows_quarantined"] == 2
    # And failed or cancelled: 3
    for state in ("failed", "cancelled"):
        _set_state(db, migration_id, state)
        assert operator("watch", migration_id).exit_code == exit_codes.FAILED
    # And a spec the API refuses: 6
    bad = spec_file.parent / "bad.json"
    bad.write_text(json.dumps({"name": "x"}))
    assert operator("submit", str(bad), "--wait").exit_code == exit_codes.REFUSED


def test_lists_are_items_and_ids_are_whole(operator: Baton, spec_file: Path) -> None:
    assert operator.json("workers") == {"items": []}
    for _ in range(2):  # a page of one has a next page, whichever tests ran here before
        _submitted(operator, spec_file)
    listed = operator.json("status", "--limit", "1")
    assert len(listed["items"]) == 1 and listed["total"] >= 1 and listed["next"]
    long_name = json.loads(spec_file.read_text())
    long_name["name"] = "a-migration-with-a-rather-long-name-" * 4
    named = spec_file.parent / "long.json"
    named.write_text(json.dumps(long_name))
    mid = _submitted(operator, named)
    out = CliRunner().invoke(main, ["status"], env={**operator.env, "COLUMNS": "40"}).stdout
    assert mid in out and long_name["name"] in out


def test_quarantine_purge(operator: Baton, viewer: Baton, db: StateDB, spec_file: Path) -> None:
    # Given a migration with quarantined rows, still running
    mid = _submitted(operator, spec_file)
    _quarantine(db, mid, 3)
    _set_state(db, mid, "running")
    # Then --purge is refused while it may quarantine more (6), and to a viewer (7)
    refused = operator("quarantine", mid[:8], "--purge")
    assert refused.exit_code == exit_codes.REFUSED and "409" in refused.output
    _set_state(db, mid, "succeeded")
    assert viewer("quarantine", mid[:8], "--purge").exit_code == exit_codes.UNAVAILABLE
    # When an operator purges the ended migration's quarantine
    done = operator("quarantine", mid[:8], "--purge")
    assert (
        done.exit_code == 0 and f"purged the values of 3 quarantined rows of {mid}" in done.stdout
    )
    # Then the rows stay, counted, without values, keys or the values their reasons quoted
    page = operator.json("quarantine", mid)
    assert page["total"] == 3
    assert {(i["row"] is None, i["key"], i["reason"]) for i in page["items"]} == {
        (True, "null", "amount: too large: '***'")
    }
    assert operator.json("quarantine", mid, "--purge") == {"migration_id": mid, "purged": 0}
    # And once retention has pruned it, its status says so
    with db.session() as s:
        s.execute(
            update(Migration)
            .where(Migration.id == mid)
            .values(pruned_at=db.now(s), summary={"retention_days": 30, "streams": {}})
        )
    assert "details pruned after 30 days" in operator("status", mid[:8]).stdout


def test_api_unreachable_is_7(tmp_path: Path) -> None:
    env = {"BATON_API_URL": "http://127.0.0.1:9", "BATON_API_TOKEN": "x"}
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == exit_codes.UNAVAILABLE and "cannot reach" in result.output
