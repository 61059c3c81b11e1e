"""The API's request and response bodies as pydantic models.

Request models validate what callers send; response models describe what the
views answer (the views build plain dicts in :mod:`etl_tasks.views`), and both
feed the OpenAPI document (:mod:`api.openapi`). Response models accept fields
they do not list, so a later version may add fields (never remove or rename one).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from etl_tasks.spec import ColumnSpec
from etl_tasks.state.enums import (
    ChunkState,
    MigrationState,
    QuarantineStatus,
    Step,
    StreamState,
    VerificationState,
    WorkerState,
)
from etl_tasks.tokens import NAME_MAX

Timestamp = str  # ISO 8601, UTC, with a trailing Z


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- errors ----------------------------------------------------------------------------------


class Error(_Response):
    """Every error the API answers: a sentence saying what went wrong."""

    error: str


class Problem(_Response):
    """One problem with a request, located by a slash-separated path into its body."""

    path: str
    message: str


class InvalidBody(_Response):
    """422: every problem found in the request, each at its path."""

    error: str
    errors: list[Problem]


# --- migrations ------------------------------------------------------------------------------


class StreamView(_Response):
    name: str
    state: StreamState
    rows_loaded: int
    rows_quarantined: int
    rows_sent_again: int | None = Field(
        None,
        description="an HTTP target's rows sent again after a request of theirs got no "
        "answer (each may have been applied); absent for other targets",
    )
    rows_gone: int = Field(0, description="rows a replay found gone from the source")
    chunks_total: int
    chunks_done: int
    chunks_failed: int
    fully_planned: bool
    rows_estimate: int | None = Field(
        None, description="the source's estimate of the stream's rows; null: unknown"
    )
    started_at: Timestamp | None
    finished_at: Timestamp | None


class MigrationSummary(_Response):
    id: str
    name: str
    state: MigrationState
    waiting_reason: str | None
    error: str | None
    source: dict[str, Any] = Field(description="the source, its secrets masked")
    target: dict[str, Any] = Field(description="the target, its secrets masked")
    delivery: Literal["exactly_once", "at_least_once"] | None = Field(
        None,
        description="an HTTP target's guarantee, as its spec declares it; null for a "
        "transactional target (exactly once)",
    )
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    updated_at: Timestamp


class VerificationLink(_Response):
    """The newest verification of a migration, and where its report is."""

    id: int
    state: VerificationState
    report_url: str = Field(description="GET it for the report")


class Pruned(_Response):
    """Retention removed a finished migration's details (BATON_RETENTION_DAYS)."""

    at: Timestamp
    after_days: float | None
    message: str


class QuarantinePurged(_Response):
    """What ``POST …/quarantine/purge`` removed."""

    migration_id: str
    purged: int = Field(description="quarantined rows whose values and key were removed")


class MigrationView(MigrationSummary):
    verification: VerificationLink | None = Field(
        description="the newest verification; null: never verified"
    )
    streams: list[StreamView]
    duplicates_possible: bool | None = Field(
        None,
        description="an HTTP target with delivery at_least_once sent a row again after its "
        "answer was lost, so the API may hold it twice; absent for other targets",
    )
    rows_loaded: int
    rows_quarantined: int
    rows_gone: int = Field(0, description="rows a replay found gone from the source")
    chunks_total: int
    chunks_done: int
    fully_planned: bool
    elapsed_s: float
    throughput_rows_per_s: float = Field(
        description="while running: rows/s over the last 30 s of running; afterwards: the "
        "average over the running time"
    )
    eta_s: float | None = Field(
        description="seconds left: each stream's rows still expected times its own recent "
        "cost per row (step time), over the workers' recent pace; null until chunks finish, "
        "and unless running"
    )
    rows_expected: int = Field(
        0,
        description="rows the migration is expected to handle: each stream's source estimate "
        "or what planning has seen, whichever is larger",
    )
    percent: float = Field(
        0.0, description="rows handled over rows expected; below 100 until it succeeded"
    )
    rows_per_s: float = Field(0.0, description="rows/s over the last 30 s of running")
    paused_s: float = Field(0.0, description="seconds paused so far")
    pruned: Pruned | None = Field(
        None, description="set once retention removed its chunks, events and quarantine"
    )


class _Page(_Response):
    total: int = Field(description="how many items the filters match, on every page")
    next: str | None = Field(
        description="send it back as cursor for the next page; null: this is the last page"
    )


class MigrationList(_Page):
    items: list[MigrationSummary]


class ChunkView(_Response):
    id: int
    stream: str
    seq: int
    state: ChunkState
    step: Step
    lower: list[Any] | None = Field(description="exclusive key bound; null: from the start")
    upper: list[Any] | None = Field(description="inclusive key bound; null: open-ended")
    attempts: int
    retries: int
    worker: str | None
    lease_owner: str | None
    rows_in: int | None
    rows_out: int | None
    rows_quarantined: int | None
    last_error: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    timings_ms: dict[str, int] = Field(
        description="milliseconds each step of the chunk took, by step name"
    )
    extract_ms: int | None = Field(description="deprecated: timings_ms['extract']")
    transform_ms: int | None = Field(description="deprecated: timings_ms['transform']")
    load_ms: int | None = Field(description="deprecated: timings_ms['load']")


class ChunkList(_Page):
    items: list[ChunkView]


class QuarantinedRowView(_Response):
    id: int
    stream: str
    chunk_id: int
    key: str = Field(description="the row's key, JSON-encoded as Baton stores it")
    key_values: list[Any] | None = Field(description="the row's key, values plain")
    reason: str = Field(description="why it was refused; literal values masked for viewers")
    row: dict[str, Any] | None = Field(
        description="the row, values plain JSON (decimals as strings, dates and times "
        "ISO 8601, bytes base64); every value '***' for viewers"
    )
    status: QuarantineStatus = Field(
        description="quarantined: set aside for good; deferred or retrying: refused for a "
        "foreign key, read again once its stream has loaded; gone: no longer in the source"
    )


class QuarantineList(_Page):
    items: list[QuarantinedRowView]


class EventView(_Response):
    id: int = Field(description="increasing: send the last one seen as after")
    at: Timestamp
    kind: str = Field(description="submitted, pause, resume, cancel, retry, migration_failed, …")
    message: str
    actor: str | None = Field(
        description="who asked for it ('token 3 (alice)', 'local'); null when Baton itself did it"
    )
    chunk_id: int | None


class EventList(_Page):
    items: list[EventView]


# --- verification ----------------------------------------------------------------------------


class VerificationSample(_Response):
    """A row that differs, its values as canonical text (docs/spec.md, "Canonical forms")."""

    kind: Literal["missing", "unexpected", "different"]
    key: list[str | None] = Field(description="the target key, canonical")
    columns: list[str] = Field(description="the differing columns (all, for a whole row)")
    expected: dict[str, str | None] | None = Field(
        description="what the source says; null for an unexpected row; '***' for viewers"
    )
    found: dict[str, str | None] | None = Field(
        description="what the target holds; null for a missing row; '***' for viewers"
    )


class MismatchedRange(_Response):
    seq: int
    chunk_id: int | None = Field(description="the chunk whose key range it is")
    lower: list[Any] | None = Field(description="exclusive key bound; null: from the start")
    upper: list[Any] | None = Field(description="inclusive key bound; null: open-ended")
    missing: int
    unexpected: int
    different: int


class StreamVerification(_Response):
    name: str
    state: VerificationState
    equal: bool = Field(description="every range compared, none differs")
    source_rows: int
    target_rows: int
    expected_absent: int = Field(description="source rows quarantined: not in the target")
    compared: int = Field(description="rows found on both sides and compared")
    missing: int
    unexpected: int
    different: int
    ranges_total: int
    ranges_done: int
    ranges_failed: int
    mismatched_ranges: list[MismatchedRange] = Field(description="the first 20")
    mismatched_ranges_total: int
    samples: list[VerificationSample] = Field(description="up to 5 rows that differ")
    error: str | None = Field(description="why a range could not be compared")


class VerificationReport(_Response):
    id: int
    migration_id: str
    state: VerificationState
    equal: bool = Field(description="every stream is equal")
    trigger: Literal["operator", "spec"]
    requested_by: str | None
    error: str | None
    report_url: str
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    ranges_total: int
    ranges_done: int
    ranges_failed: int
    streams: list[StreamVerification]


# --- workers, probes ------------------------------------------------------------------------


class WorkerView(_Response):
    name: str
    version: str
    host: str
    pid: int
    state: WorkerState
    in_flight: int
    steps_done: int
    probe_url: str | None = Field(description="the worker's probe; null for viewers")
    capabilities: dict[str, Any] = Field(
        default_factory=dict,
        description="what the worker can do: endpoint kinds, message schemas, sealed specs",
    )
    started_at: Timestamp
    last_heartbeat: Timestamp
    drain_requested_at: Timestamp | None = Field(
        None, description="when a drain was asked for through the API; null: none"
    )


class WorkerList(_Response):
    items: list[WorkerView]


class DrainRequested(_Response):
    name: str
    drain_requested_at: Timestamp = Field(
        description="recorded: the worker's next heartbeat (BATON_WORKER_HEARTBEAT_S) "
        "stops it taking steps; once its steps in flight finish it shuts down warm"
    )


class Health(_Response):
    status: Literal["ok"]
    version: str


class Readiness(_Response):
    ready: bool
    version: str | None = None
    reason: str | None = None


# --- tokens ----------------------------------------------------------------------------------


class TokenCreate(_Request):
    """A new token: who holds it and what it may do."""

    name: str = Field(min_length=1, max_length=NAME_MAX)
    role: Literal["viewer", "operator", "admin"]


class TokenView(_Response):
    id: int
    name: str
    role: Literal["viewer", "operator", "admin"]
    created_at: Timestamp
    revoked_at: Timestamp | None


class TokenCreated(TokenView):
    token: str = Field(description="the bearer token, shown in this answer only")


class TokenPage(_Response):
    items: list[TokenView]
    next: str | None = Field(description="cursor of the next page; null: this is the last")


# --- specs -----------------------------------------------------------------------------------


class DraftRequest(_Request):
    """What to draft a spec from: the source (and the target, to draft for its dialect)."""

    source: dict[str, Any] = Field(description="an endpoint, as in a spec")
    target: dict[str, Any] | None = Field(None, description="an endpoint, as in a spec")
    name: str | None = Field(None, min_length=1, max_length=200)


class SpecDraft(_Response):
    spec: dict[str, Any] = Field(description="a complete spec, ready to submit")
    comments: dict[str, str] = Field(description="path in the spec → what to know about it")
    notes: list[str]


class SpecChecked(_Response):
    ok: bool
    keys: dict[str, list[str]] = Field(description="each stream's key, as preflight resolved it")
    notes: list[str]


# --- quarantine replay -----------------------------------------------------------------------


class StreamAmendment(_Request):
    """A stream's corrected column mapping, in the spec's own form."""

    columns: dict[str, ColumnSpec] = Field(
        description="target column → source column, {from, transform, args} or {value}"
    )


class ReplayRequest(_Request):
    """An optional spec revision for the replay: streams by name, each with its columns."""

    streams: dict[str, StreamAmendment] = Field(default_factory=dict)


class ReplayStarted(_Response):
    migration_id: str
    rows: int = Field(description="quarantined rows read again")
    chunks: int = Field(description="key-set chunks planned for them")
    streams: dict[str, int] = Field(description="rows read again, per stream")
    not_replayable: int = Field(description="rows whose key is NULL: they cannot be read by key")
    revised_streams: list[str] = Field(description="streams whose columns this replay revised")
    migration: MigrationView
