"""``/api/v1/migrations``: submit, list, inspect and control migrations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from api.auth import current_principal, require, require_admin_for_queries
from api.body import json_body
from api.downloads import WRITERS, quarantine_download
from etl_tasks import control, listing, views
from etl_tasks.boundary.sealing import CAPABILITY as SEALED_SPECS
from etl_tasks.boundary.sealing import storage_form
from etl_tasks.drafting.infer import with_after
from etl_tasks.errors import FieldError, SpecError
from etl_tasks.masking import mask_quarantined
from etl_tasks.paging import page_limit
from etl_tasks.preflight import preflight
from etl_tasks.publisher import publish_plan
from etl_tasks.spec import MigrationSpec, parse_spec
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import ChunkState, MigrationState
from etl_tasks.tokens import allows
from etl_tasks.workers import all_live_support

bp = Blueprint("migrations", __name__, url_prefix="/api/v1/migrations")

#: A page of chunks or quarantined rows when no limit is asked for: what these lists
#: answered before they paged, so a caller that never pages sees no change.
LIST_LIMIT = 1000


def _ext() -> Any:
    return current_app.extensions["baton"]


def _idempotency_key() -> str | None:
    """The request's ``Idempotency-Key``, as stored: scoped to the caller (see scoped_key)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= 200:
        raise SpecError([FieldError("Idempotency-Key", "must be 1 to 200 characters")])
    return control.scoped_key(current_principal().scope, key)


@bp.post("")
@require("operator")
def submit() -> ResponseReturnValue:
    body = json_body("the spec")
    spec = parse_spec(body)
    key = _idempotency_key()
    ext = _ext()
    body_hash = control.request_hash(body)
    replayed = control.find_replay(ext.db, key, body_hash) if key else None
    if replayed is not None:  # answered without preflight: the target may be down by now
        migration_id, created = replayed, False
    else:
        migration_id, created = _create(ext, spec, key, body_hash)
    if created:
        publish_plan(ext.publisher, migration_id)
    response = jsonify(views.migration_view(ext.db, migration_id))
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/migrations/{migration_id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@dataclass(frozen=True)
class Checked:
    """A spec that passed preflight, as it is to be kept."""

    spec: MigrationSpec
    keys: dict[str, list[str]]
    notes: list[str]
    storage: tuple[dict[str, Any], str | None]


def checked_spec(ext: Any, spec: MigrationSpec) -> Checked:
    """Preflight (at most BATON_PREFLIGHT_CONCURRENCY at once) and seal a spec, as a
    submission is checked; raises SpecError (422) on refusal."""
    who = current_principal()
    require_admin_for_queries(spec, who)
    # A credential written in the spec is refused before anything is contacted.
    storage_form(spec.to_stored(), ext.sealer, all_live_support(ext.db, SEALED_SPECS))
    notes: list[str] = []
    order: dict[str, list[str]] = {}
    with ext.preflight_gate.slot():
        keys = preflight(
            spec,
            ext.boundary,
            timeout_s=ext.settings.preflight_timeout_s,
            reveal_details=who.is_admin,
            notes=notes,
            order=order,
        )
    spec = with_after(spec, order)
    storage = storage_form(spec.to_stored(), ext.sealer, all_live_support(ext.db, SEALED_SPECS))
    return Checked(spec, {k: list(v) for k, v in keys.items()}, notes, storage)


def _create(ext: Any, spec: MigrationSpec, key: str | None, body_hash: str) -> tuple[str, bool]:
    """Check and record a spec."""
    who = current_principal()
    checked = checked_spec(ext, spec)
    spec, keys, notes, storage = checked.spec, checked.keys, checked.notes, checked.storage
    return control.create_migration(
        ext.db,
        spec,
        keys,
        idempotency_key=key,
        body_hash=body_hash,
        storage=storage,
        owner=who.name,
        actor=who.actor,
        notes=notes,
    )


def _cursor(after_alias: bool = False) -> str | None:
    cursor = request.args.get("cursor")
    if after_alias and "after" in request.args:
        if cursor is not None:
            raise BadRequest("give either cursor or after, not both")
        cursor = request.args["after"]
    return cursor


def _state_filter(states: set[str]) -> str | None:
    state = request.args.get("state")
    if state is not None and state not in states:
        raise BadRequest(f"unknown state {state!r}")
    return state


def _prefix() -> str | None:
    prefix = request.args.get("prefix") or None
    if prefix is not None and (len(prefix) > 32 or "\x00" in prefix):
        raise BadRequest("prefix must be the start of a migration id (at most 32 characters)")
    return prefix


@bp.get("")
@require("viewer")
def index() -> ResponseReturnValue:
    page = listing.migrations_page(
        _ext().db,
        state=_state_filter(set(MigrationState)),
        prefix=_prefix(),
        limit=page_limit(request.args),
        cursor=_cursor(),
    )
    return jsonify(page.as_dict())


@bp.get("/<id:migration_id>")
@require("viewer")
def show(migration_id: str) -> ResponseReturnValue:
    return jsonify(views.migration_view(_ext().db, migration_id))


@bp.get("/<id:migration_id>/chunks")
@require("viewer")
def chunks(migration_id: str) -> ResponseReturnValue:
    page = listing.chunks_page(
        _ext().db,
        migration_id,
        state=_state_filter(set(ChunkState)),
        limit=page_limit(request.args, LIST_LIMIT),
        cursor=_cursor(),
    )
    return jsonify(page.as_dict())


@bp.get("/<id:migration_id>/events")
@require("viewer")
def events(migration_id: str) -> ResponseReturnValue:
    """What happened to a migration, oldest first, each with who asked for it."""
    page = listing.events_page(
        _ext().db, migration_id, limit=page_limit(request.args), cursor=_cursor(after_alias=True)
    )
    return jsonify(page.as_dict())


@bp.get("/<id:migration_id>/quarantine")
@require("viewer")
def quarantine(migration_id: str) -> ResponseReturnValue:
    """Quarantined rows, values plain; a viewer sees each row's columns and reason, never a
    value. ``format=csv|jsonl`` downloads every row at once."""
    fmt = request.args.get("format", "json")
    if fmt not in ("json", *WRITERS):
        raise BadRequest(f"unknown format {fmt!r}: json, csv or jsonl")
    masked = not allows(current_principal().role, "operator")
    db = _ext().db
    if fmt != "json":
        return quarantine_download(db, migration_id, fmt, masked)
    page = listing.quarantine_page(
        db, migration_id, limit=page_limit(request.args, LIST_LIMIT), cursor=_cursor()
    )
    if masked:
        page = replace(page, items=[mask_quarantined(i) for i in page.items])
    return jsonify(page.as_dict())


CONTROLS: dict[str, Callable[[StateDB, str, str], None]] = {
    "pause": control.pause,
    "resume": control.resume,
    "cancel": control.cancel,
    "retry": control.retry,
}


def _act(migration_id: str, action: str) -> ResponseReturnValue:
    ext = _ext()
    CONTROLS[action](ext.db, migration_id, current_principal().actor)
    if action in ("resume", "retry"):
        publish_plan(ext.publisher, migration_id)
    return jsonify(views.migration_view(ext.db, migration_id))


for _action in CONTROLS:  # one rule per action, as the OpenAPI document lists them
    bp.add_url_rule(
        f"/<id:migration_id>/{_action}",
        endpoint=_action,
        view_func=require("operator")(partial(_act, action=_action)),
        methods=["POST"],
    )
