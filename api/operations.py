"""Every operation of the API, as a table: what :mod:`api.openapi` documents.

One row per path and method: who may call it, what it takes and what it
answers. A test checks the table against the app's own routes, so a route
cannot exist undocumented, nor a row without its route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from api.schemas import (
    ChunkList,
    DraftRequest,
    DrainRequested,
    EventList,
    Health,
    MigrationList,
    MigrationView,
    QuarantineList,
    QuarantinePurged,
    Readiness,
    ReplayRequest,
    ReplayStarted,
    SpecChecked,
    SpecDraft,
    TokenCreate,
    TokenCreated,
    TokenPage,
    TokenView,
    VerificationReport,
    WorkerList,
)
from etl_tasks.paging import MAX_LIMIT
from etl_tasks.spec import MigrationSpec
from etl_tasks.state.enums import ChunkState, MigrationState

#: What an answer holds when it is not a model: a media type and its schema.
Media = tuple[str, dict[str, Any]]
#: An answer's body: a model (JSON), a media type, or a list of them (one per media type).
Body = type[BaseModel] | Media | list[type[BaseModel] | Media]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # path, query or header
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    role: str | None  # the role a token needs; None: no token at all
    answers: dict[int, tuple[str, Body]]  # status: (description, body)
    errors: tuple[int, ...] = ()  # beyond 401, 403 and 429, which the role implies
    body: type[BaseModel] | None = None
    body_required: bool = True
    params: tuple[Param, ...] = field(default=())


MIGRATION_ID = Param("id", "path", {"type": "string"}, "the migration's id", required=True)
TOKEN_ID = Param("id", "path", {"type": "integer", "minimum": 1}, "the token's id", required=True)
MIGRATION_STATE = Param(
    "state", "query", {"type": "string", "enum": list(MigrationState)}, "only this state"
)
CHUNK_STATE = Param("state", "query", {"type": "string", "enum": list(ChunkState)}, "only this")
LIMIT = Param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    f"items per page, at most {MAX_LIMIT}",
)
CURSOR = Param("cursor", "query", {"type": "string"}, "the next of the previous page")
AFTER = Param(
    "after", "query", {"type": "string", "pattern": "^[0-9]+$"}, "only events after this id"
)
PREFIX = Param(
    "prefix", "query", {"type": "string", "maxLength": 32}, "only ids starting with this"
)
FORMAT = Param(
    "format",
    "query",
    {"type": "string", "enum": ["json", "csv", "jsonl"]},
    "json (default): a page; csv or jsonl: every row, streamed",
)
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 200},
    "the same key (from the same token) and body answer the first migration again",
)


def _controls() -> list[Operation]:
    does = {
        "pause": "Pause a migration: steps in hand finish, no new step starts",
        "resume": "Resume a paused migration",
        "cancel": "Cancel a migration for good",
        "retry": "Run a failed migration again from its failed chunks",
    }
    return [
        Operation(
            "post",
            f"/api/v1/migrations/{{id}}/{action}",
            f"{action}Migration",
            summary,
            "operator",
            {200: ("the migration, after the change", MigrationView)},
            (404, 409),
            params=(MIGRATION_ID,),
        )
        for action, summary in does.items()
    ]


SPEC_OPERATIONS: list[Operation] = [
    Operation(
        "post",
        "/api/v1/specs/draft",
        "draftSpec",
        "Draft a complete spec from a source's schema (and a target's, for its dialect)",
        "operator",
        {200: ("the drafted spec, with comments on what to check", SpecDraft)},
        (400, 413, 415, 422),
        body=DraftRequest,
    ),
    Operation(
        "post",
        "/api/v1/specs/check",
        "checkSpec",
        "Run a spec's whole preflight without submitting it; nothing is created",
        "operator",
        {200: ("the spec passes preflight", SpecChecked)},
        (400, 413, 415, 422),
        body=MigrationSpec,
    ),
]

OPERATIONS: list[Operation] = [
    Operation(
        "post",
        "/api/v1/migrations",
        "submitMigration",
        "Submit a migration (checked against its source and target first)",
        "operator",
        {201: ("created, or replayed for the same Idempotency-Key", MigrationView)},
        (400, 409, 413, 415, 422),
        body=MigrationSpec,
        params=(IDEMPOTENCY_KEY,),
    ),
    Operation(
        "get",
        "/api/v1/migrations",
        "listMigrations",
        "Migrations, newest first, a page at a time",
        "viewer",
        {200: ("the migrations", MigrationList)},
        (400,),
        params=(MIGRATION_STATE, PREFIX, LIMIT, CURSOR),
    ),
    Operation(
        "get",
        "/api/v1/migrations/{id}",
        "getMigration",
        "A migration with its streams, throughput and ETA",
        "viewer",
        {200: ("the migration", MigrationView)},
        (404,),
        params=(MIGRATION_ID,),
    ),
    Operation(
        "get",
        "/api/v1/migrations/{id}/chunks",
        "listChunks",
        "A migration's chunks, a page at a time (1000 unless limit says otherwise)",
        "viewer",
        {200: ("the chunks", ChunkList)},
        (400, 404),
        params=(MIGRATION_ID, CHUNK_STATE, LIMIT, CURSOR),
    ),
    Operation(
        "get",
        "/api/v1/migrations/{id}/quarantine",
        "listQuarantine",
        "Quarantined rows with their reasons, values plain (masked for viewers): a page "
        "(1000 unless limit says otherwise), or every row as CSV or JSON Lines",
        "viewer",
        {
            200: (
                "the quarantined rows",
                [
                    QuarantineList,
                    ("text/csv", {"type": "string"}),
                    ("application/x-ndjson", {"type": "string"}),
                ],
            )
        },
        (400, 404),
        params=(MIGRATION_ID, FORMAT, LIMIT, CURSOR),
    ),
    Operation(
        "get",
        "/api/v1/migrations/{id}/events",
        "listEvents",
        "What happened to a migration and who asked for it, oldest first, a page at a time",
        "viewer",
        {200: ("the events", EventList)},
        (400, 404),
        params=(MIGRATION_ID, LIMIT, CURSOR, AFTER),
    ),
    *_controls(),
    Operation(
        "post",
        "/api/v1/migrations/{id}/quarantine/purge",
        "purgeQuarantine",
        "Remove a finished migration's quarantined values and keys now (counts and masked "
        "reasons stay); an event names who did it",
        "operator",
        {200: ("how many rows were purged", QuarantinePurged)},
        (404, 409),
        params=(MIGRATION_ID,),
    ),
    Operation(
        "post",
        "/api/v1/migrations/{id}/quarantine/replay",
        "replayQuarantine",
        "Read the quarantined rows again from the source, by their keys, through the spec "
        "(optionally with corrected columns for some streams, checked by preflight); the "
        "migration runs again. The body is optional",
        "operator",
        {202: ("the replay is planned; the migration runs again", ReplayStarted)},
        (400, 404, 409, 413, 415, 422),
        body=ReplayRequest,
        body_required=False,
        params=(MIGRATION_ID,),
    ),
    *SPEC_OPERATIONS,
    Operation(
        "post",
        "/api/v1/migrations/{id}/verify",
        "verifyMigration",
        "Compare a succeeded migration's target with its source, range by range "
        "(or join the verification already under way)",
        "operator",
        {202: ("the verification, pending or under way", VerificationReport)},
        (404, 409),
        params=(MIGRATION_ID,),
    ),
    Operation(
        "get",
        "/api/v1/migrations/{id}/verify",
        "getVerification",
        "The newest verification's report (sample values masked for viewers)",
        "viewer",
        {200: ("the report", VerificationReport)},
        (404,),
        params=(MIGRATION_ID,),
    ),
    Operation(
        "get",
        "/api/v1/workers",
        "listWorkers",
        "Live workers and what they are doing",
        "viewer",
        {200: ("the workers", WorkerList)},
    ),
    Operation(
        "post",
        "/api/v1/workers/{name}/drain",
        "drainWorker",
        "Ask a worker to drain and leave; its heartbeat picks the request up, so the API "
        "need not reach the worker's probe",
        "operator",
        {202: ("the request is recorded", DrainRequested)},
        (404,),
        params=(
            Param("name", "path", {"type": "string"}, "a name `GET /api/v1/workers` lists", True),
        ),
    ),
    Operation(
        "get",
        "/api/v1/tokens",
        "listTokens",
        "Every API token (never the token itself)",
        "admin",
        {200: ("the tokens", TokenPage)},
    ),
    Operation(
        "post",
        "/api/v1/tokens",
        "createToken",
        "Make an API token; the answer is the only place it is shown",
        "admin",
        {201: ("the new token", TokenCreated)},
        (400, 413, 415, 422),
        body=TokenCreate,
    ),
    Operation(
        "delete",
        "/api/v1/tokens/{id}",
        "revokeToken",
        "Revoke a token (revoking it again changes nothing)",
        "admin",
        {200: ("the revoked token", TokenView)},
        (404,),
        params=(TOKEN_ID,),
    ),
    Operation("get", "/healthz", "health", "Liveness", None, {200: ("alive", Health)}),
    Operation(
        "get",
        "/readyz",
        "readiness",
        "Readiness: the state DB answers",
        None,
        {200: ("ready", Readiness), 503: ("not ready, and why", Readiness)},
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics: the API's request counters and state-DB gauges cached for "
        "BATON_METRICS_CACHE_S",
        None,
        {200: ("the text exposition format", ("text/plain", {"type": "string"}))},
    ),
    Operation(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        None,
        {200: ("the API's OpenAPI 3.1 document", ("application/json", {"type": "object"}))},
    ),
]
