"""``baton chaos``: migrations under injected faults, then proof that nothing was lost.

The demo legacy DB (105,500 rows, 210 of them dirty) is migrated into PostgreSQL by
three workers (one prefork) while faults strike, each when the migration has made
some progress and still has work left, so every fault hits a running migration. A
migration that ends before the faults do is followed by another into a fresh target
database. Each migration is then verified row by row: rows lost, rows duplicated,
values equal, counts equal to the target's ledger. One line per fault, one per
migration, then the verdict. The long tier then runs the HTTP outage scenario
(:mod:`ops.chaos.http_outage`: an HTTP API down for a minute mid-migration), which
``--tier http-outage`` runs alone.
"""

from __future__ import annotations

import contextlib
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, distinct, func, select, tuple_
from sqlalchemy import exc as sa_exc

from etl_tasks.bindings import target_key
from etl_tasks.boundary.policy import Boundary
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.connectors.sql.ledger import committed_chunks
from etl_tasks.connectors.sql.queries import reflect_table
from etl_tasks.connectors.sql.shape import source_shape
from etl_tasks.control import create_migration
from etl_tasks.preflight import preflight
from etl_tasks.publisher import publish_plan
from etl_tasks.settings import Settings
from etl_tasks.spec import MigrationSpec, parse_spec
from etl_tasks.state.db import StateDB, upgrade
from etl_tasks.verify import StreamCheck, quarantine_keys, verify
from etl_tasks.views import migration_view
from ops.chaos.faults import FAULTS, FaultRecord, Lab
from ops.chaos.http_outage import OUTAGE_S, OutageResult, run_outage
from ops.chaos.services import OwnPostgres, OwnRedis, Workers
from ops.demo_data import DemoStats, build_legacy_db, demo_spec
from ops.timings import FAST_TIMINGS
from worker.celery_app import CeleryPublisher, create_celery

Out = Callable[[str], None]
FINISHED = ("succeeded", "failed", "cancelled")

#: Short enough that a lost step is taken over within seconds.
CHAOS_TIMINGS: dict[str, Any] = FAST_TIMINGS
RECOVERY_TIMEOUT_S = 90.0  # a migration that does not move for this long after a fault is stuck
FINISH_TIMEOUT_S = 240.0  # the last migration's time to finish once the faults are over


@dataclass(frozen=True)
class Tier:
    """How many faults, how far apart (in chunks done), within what time."""

    name: str
    faults: int
    spacing_chunks: int
    time_limit_s: float
    random_kinds: bool
    campaign: bool = True  # migrations into PostgreSQL under the faults above
    http_outage_s: float = 0.0  # then a migration into an HTTP API down this long mid-way


TIERS: dict[str, Tier] = {
    "short": Tier("short", len(FAULTS), 4, 180.0, random_kinds=False),
    "long": Tier("long", 50, 3, 1800.0, random_kinds=True, http_outage_s=OUTAGE_S),
    "http-outage": Tier("http-outage", 0, 0, 0.0, False, campaign=False, http_outage_s=OUTAGE_S),
}


@dataclass
class Submitted:
    number: int
    id: str
    spec: dict[str, Any]


@dataclass
class MigrationResult:
    """One migration, verified: what the state DB says and what the target holds."""

    number: int
    state: str
    rows_loaded: int = 0
    rows_quarantined: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    ledger_rows: int = 0
    rows_lost: int = 0
    rows_duplicated: int = 0
    checksum_equal: bool = True
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state == "succeeded" and not self.problems

    def line(self) -> str:
        return (
            f"migration {self.number} {self.state}: {self.rows_loaded:,} rows loaded, "
            f"{self.rows_quarantined} quarantined, chunks {self.chunks_done}/{self.chunks_total} "
            f"(ledger {self.ledger_rows}), lost {self.rows_lost}, duplicated "
            f"{self.rows_duplicated}, checksum {'equal' if self.checksum_equal else 'DIFFERENT'}"
        )


@dataclass
class Verdict:
    """PASS only if nothing was lost or doubled, every value equal, every migration
    succeeded, every SIGTERMed worker exited 0 and the migration moved after every fault."""

    faults: list[FaultRecord]
    migrations: list[MigrationResult]
    problems: list[str]
    notes: list[str] = field(default_factory=list)  # worth knowing, not a failure
    elapsed_s: float = 0.0
    outage: OutageResult | None = None  # the HTTP outage scenario, when the tier runs it

    @property
    def rows_lost(self) -> int:
        return sum(m.rows_lost for m in self.migrations)

    @property
    def rows_duplicated(self) -> int:
        return sum(m.rows_duplicated for m in self.migrations)

    @property
    def checksum_equal(self) -> bool:
        return all(m.checksum_equal for m in self.migrations)

    @property
    def max_recovery_s(self) -> float:
        return max((f.recovery_s or 0.0 for f in self.faults), default=0.0)

    @property
    def passed(self) -> bool:
        clean = self.rows_lost == 0 and self.rows_duplicated == 0 and self.checksum_equal
        ran = bool(self.migrations) or self.outage is not None
        return clean and ran and self.all_problems() == []

    def all_problems(self) -> list[str]:
        found = list(self.problems)
        if self.outage is not None:
            found += [f"http outage: {p}" for p in self.outage.problems]
        found += [f"migration {m.number}: {p}" for m in self.migrations for p in m.problems]
        found += [
            f"migration {m.number} {m.state}" for m in self.migrations if m.state != "succeeded"
        ]
        for n, f in enumerate(self.faults, 1):
            if f.recovery_s is None:
                found.append(f"fault {n} {f.kind}: the migration never moved again")
            if any(code != 0 for code in f.exit_codes):
                found.append(f"fault {n} {f.kind}: a SIGTERMed worker exited {f.exit_codes}")
        return found

    def line(self) -> str:
        return (
            f"verdict: {'PASS' if self.passed else 'FAIL'} faults={len(self.faults)} "
            f"migrations={len(self.migrations)} rows_lost={self.rows_lost} "
            f"rows_duplicated={self.rows_duplicated} "
            f"checksum_equal={'yes' if self.checksum_equal else 'no'} "
            f"max_recovery={self.max_recovery_s:.1f}s"
        )


def fault_line(number: int, record: FaultRecord) -> str:
    outcome = (
        f"recovered in {record.recovery_s:.1f} s"
        if record.recovery_s is not None
        else f"NOT recovered within {RECOVERY_TIMEOUT_S:.0f} s"
    )
    return f"fault {number} {record.kind}: {record.detail} → {outcome}"


# --------------------------------------------------------------------------- setup


def chaos_settings(redis: OwnRedis, state_url: str) -> Settings:
    return Settings(broker_url=redis.url, database_url=state_url, auth="off", **CHAOS_TIMINGS)


def start_lab(workdir: Path, stack: contextlib.ExitStack) -> Lab:
    """This run's own Redis, two PostgreSQL servers (state DB, target) and three workers."""
    logs = workdir / "logs"
    redis = OwnRedis(workdir / "redis")
    stack.callback(redis.close)
    state_pg = OwnPostgres(logs, "state-postgres")
    stack.callback(state_pg.close)
    target_pg = OwnPostgres(logs, "target-postgres")
    stack.callback(target_pg.close)
    state_url = state_pg.create_database("baton_state")
    upgrade(state_url)
    settings = chaos_settings(redis, state_url)
    workers = Workers(settings, logs)
    stack.callback(workers.close)
    for prefork in (False, False, True):
        workers.start(prefork=prefork)
    db = StateDB(state_url)
    stack.callback(db.dispose)
    workers.wait_ready()
    return Lab(settings, redis, state_pg, target_pg, workers, db)


def fault_kinds(tier: Tier, rng: random.Random) -> list[str]:
    """Short: each kind once, in order. Long: each kind once, the rest drawn, shuffled."""
    kinds = list(FAULTS)
    if not tier.random_kinds:
        return kinds
    kinds += rng.choices(list(FAULTS), k=max(0, tier.faults - len(kinds)))
    rng.shuffle(kinds)
    return kinds


# --------------------------------------------------------------------------- verification


def _ledger_rows(target: Engine, migration_id: str) -> dict[str, int]:
    with target.connect() as conn:
        return committed_chunks(conn, migration_id)


def _distinct_keys(spec: MigrationSpec, name: str, source: Engine, target: Engine) -> int:
    """Distinct target keys of one stream: fewer than its rows means some row is doubled."""
    stream = spec.stream(name)
    tkey, _ = target_key(stream, source_shape(source, stream)[0])
    table = reflect_table(target, stream.target_table)
    names = tkey or [c.name for c in table.primary_key.columns]
    cols = [table.c[n] for n in names]
    key = cols[0] if len(cols) == 1 else tuple_(*cols)
    with target.connect() as conn:
        return int(conn.execute(select(func.count(distinct(key)))).scalar_one())


def judge_stream(
    result: MigrationResult,
    check: StreamCheck,
    st: dict[str, Any],
    ledger: int,
    keys: int,
    dirty: int,
) -> None:
    """Fold one stream's check into the migration's result."""
    result.rows_lost += max(len(check.missing), check.expected_rows - check.target_rows)
    result.rows_lost += max(0, check.bad_rows - dirty)  # good rows hidden in the quarantine
    result.rows_duplicated += check.target_rows - keys + max(0, ledger - st["chunks_done"])
    result.checksum_equal = result.checksum_equal and not check.different
    result.ledger_rows += ledger
    name = check.name
    if check.unexpected:
        result.problems.append(f"{name}: {len(check.unexpected)} rows not in the source")
    if st["rows_quarantined"] != check.bad_rows:
        result.problems.append(
            f"{name}: {st['rows_quarantined']} quarantined, {check.bad_rows} bad"
        )
    if not st["chunks_done"] == st["chunks_total"] == ledger:
        result.problems.append(
            f"{name}: chunks {st['chunks_done']}/{st['chunks_total']}, ledger {ledger}"
        )
    if st["rows_loaded"] != check.target_rows:
        result.problems.append(f"{name}: {st['rows_loaded']} loaded, {check.target_rows} in target")


def check_migration(db: StateDB, sub: Submitted, stats: DemoStats) -> MigrationResult:
    """Verify one finished migration against the source, row by row."""
    view = migration_view(db, sub.id)
    result = MigrationResult(sub.number, view["state"])
    if view["state"] != "succeeded":
        result.problems.append(f"ended {view['state']}: {view['error']}")
    for key in ("rows_loaded", "rows_quarantined", "chunks_done", "chunks_total"):
        setattr(result, key, view[key])
    spec = parse_spec(sub.spec)
    source = create_sql_engine(spec.sql("source").unchecked_url())
    target = create_sql_engine(spec.sql("target").unchecked_url())
    try:
        checks = verify(spec, source, target, quarantine_keys(db, sub.id))
        ledger = _ledger_rows(target, sub.id)
        streams = {st["name"]: st for st in view["streams"]}
        for c in checks:
            keys = _distinct_keys(spec, c.name, source, target)
            dirty = stats.dirty.get(spec.stream(c.name).source_name, 0)
            judge_stream(result, c, streams[c.name], ledger.get(c.name, 0), keys, dirty)
    finally:
        source.dispose()
        target.dispose()
    return result


# --------------------------------------------------------------------------- the campaign


class OutOfTime(Exception):
    """The tier's time limit passed before every fault was injected."""


class Campaign:
    """Migrations back to back, a fault each time the current one has moved far enough."""

    def __init__(
        self, lab: Lab, stats: DemoStats, tier: Tier, rng: random.Random, out: Out, started: float
    ) -> None:
        self.lab, self.stats, self.tier, self.rng, self.out = lab, stats, tier, rng, out
        self.app = create_celery(lab.settings)
        self.publisher = CeleryPublisher(self.app)
        self.deadline = started + tier.time_limit_s
        self.current: Submitted | None = None
        self.mark = 0  # chunks done before the next fault may strike
        self.faults: list[FaultRecord] = []
        self.results: list[MigrationResult] = []
        self.problems: list[str] = []
        self.notes: list[str] = []

    def run(self) -> Verdict:
        try:
            self.submit()
            for kind in fault_kinds(self.tier, self.rng):
                self.await_trigger()
                self.inject(kind)
        except OutOfTime:
            self.problems.append(
                f"time limit of {self.tier.time_limit_s:.0f} s reached after "
                f"{len(self.faults)} faults"
            )
        except Exception as exc:  # a fault that could not be injected: report, then verify
            trace = self.lab.workers.log_dir / "harness-error.log"
            trace.write_text(traceback.format_exc())
            self.problems.append(f"harness error after {len(self.faults)} faults: {exc!r}; {trace}")
        finally:
            self.finish_current(FINISH_TIMEOUT_S)
            self.app.close()
        if len(self.faults) < self.tier.faults:
            self.problems.append(f"only {len(self.faults)} of {self.tier.faults} faults ran")
        return Verdict(self.faults, self.results, self.problems, self.notes)

    def submit(self) -> None:
        """A new migration of the legacy DB into a fresh target database."""
        number = len(self.results) + 1
        target_url = self.lab.target_pg.create_database(f"chaos_target_{number}")
        spec = demo_spec(f"sqlite:///{Path(self.stats.path).resolve()}", target_url)
        spec["name"] = f"chaos-{number}"
        parsed = parse_spec(spec)
        keys = preflight(parsed, Boundary.from_settings(self.lab.settings))
        migration_id, _ = create_migration(self.lab.db, parsed, keys)
        publish_plan(self.publisher, migration_id)
        self.current = Submitted(number, migration_id, spec)
        self.mark = self.tier.spacing_chunks

    def view(self) -> dict[str, Any] | None:
        """The current migration's progress; ``None`` while the state DB is unreachable."""
        assert self.current is not None
        try:
            return migration_view(self.lab.db, self.current.id)
        except sa_exc.SQLAlchemyError:
            return None

    def await_trigger(self) -> None:
        """Wait until the migration is far enough along and still has work left."""
        while True:
            if time.monotonic() > self.deadline:
                raise OutOfTime()
            self.note_exited()
            view = self.view()
            if view is not None and view["state"] in FINISHED:
                self.finish_current(FINISH_TIMEOUT_S)
                self.submit()
            elif view is not None and self.ripe(view):
                return
            time.sleep(0.1)

    def ripe(self, view: dict[str, Any]) -> bool:
        """Running, past the mark, and not on its last few chunks (a fault must hit work)."""
        left = view["chunks_total"] - view["chunks_done"]
        near_end = view["fully_planned"] and left < 3
        return view["state"] == "running" and view["chunks_done"] >= self.mark and not near_end

    def note_exited(self) -> None:
        """Say which workers died on their own (not a loss: replaced, as k8s would)."""
        after = f" after fault {len(self.faults)} {self.faults[-1].kind}" if self.faults else ""
        for worker, code in self.lab.workers.replace_exited():
            self.notes.append(f"worker {worker.short} exited {code} by itself{after}")
            self.out(f"note: {self.notes[-1]}; see {worker.log_path}; replaced")

    def inject(self, kind: str) -> None:
        self.note_exited()
        record = FAULTS[kind](self.lab, self.rng)
        record.recovery_s = self.recovery(record)
        self.faults.append(record)
        self.out(fault_line(len(self.faults), record))
        self.note_exited()
        self.lab.workers.wait_ready()  # replacements are up before the next fault
        view = self.view()
        self.mark = (view["chunks_done"] if view else self.mark) + self.tier.spacing_chunks

    def recovery(self, record: FaultRecord) -> float | None:
        """Seconds from the fault's end until chunks_done grows (or the migration ends)."""
        base: int | None = None
        while time.monotonic() < record.ended_at + RECOVERY_TIMEOUT_S:
            view = self.view()
            if view is not None and base is None:
                base = view["chunks_done"]
            if view is not None and (
                view["chunks_done"] > (base or 0) or view["state"] in FINISHED
            ):
                return time.monotonic() - record.ended_at
            time.sleep(0.05)
        return None

    def finish_current(self, timeout_s: float) -> None:
        """Wait for the current migration to end (or time out), then verify it."""
        if self.current is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            view = self.view()
            if view is not None and view["state"] in FINISHED:
                break
            time.sleep(0.2)
        result = check_migration(self.lab.db, self.current, self.stats)
        self.results.append(result)
        self.out(result.line())
        self.current = None


def http_outage(lab: Lab, stats: DemoStats, out: Out, outage_s: float) -> OutageResult:
    """The HTTP outage scenario on the lab's workers, published through its own Celery app."""
    app = create_celery(lab.settings)
    try:
        return run_outage(lab, stats, CeleryPublisher(app), out, outage_s)
    finally:
        app.close()


def run(tier: str, workdir: Path, out: Out = print, seed: int = 7) -> Verdict:
    """Run one tier in ``workdir`` (logs in ``workdir/logs``); print and return the verdict."""
    plan = TIERS[tier]
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    stats = build_legacy_db(workdir / "legacy.db")
    with contextlib.ExitStack() as stack:
        lab = start_lab(workdir, stack)
        verdict = Verdict([], [], [])
        if plan.campaign:
            verdict = Campaign(lab, stats, plan, random.Random(seed), out, started).run()
        if plan.http_outage_s:
            verdict.outage = http_outage(lab, stats, out, plan.http_outage_s)
    verdict.elapsed_s = time.monotonic() - started
    for problem in verdict.all_problems():
        out(f"problem: {problem}")
    out(verdict.line())
    return verdict
