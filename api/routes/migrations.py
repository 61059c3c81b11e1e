"""``/api/v1/migrations``: submit, list, inspect and control migrations."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from api.auth import current_principal, require, require_admin_for_queries
from api.body import json_body
from etl_tasks import control, views
from etl_tasks.boundary.sealing import CAPABILITY as SEALED_SPECS
from etl_tasks.boundary.sealing import storage_form
from etl_tasks.drafting.infer import with_after
from etl_tasks.errors import FieldError, SpecError
from etl_tasks.masking import mask_quarantined
from etl_tasks.preflight import preflight
from etl_tasks.publisher import publish_plan
from etl_tasks.spec import MigrationSpec, parse_spec
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import ChunkState, MigrationState
from etl_tasks.tokens import allows
from etl_tasks.workers import all_live_support

bp = Blueprint("migrations", __name__, url_prefix="/api/v1/migrations")


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


def _create(ext: Any, spec: MigrationSpec, key: str | None, body_hash: str) -> tuple[str, bool]:
    """Seal, preflight (at most BATON_PREFLIGHT_CONCURRENCY at once) and record a spec."""
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


@bp.get("")
@require("viewer")
def index() -> ResponseReturnValue:
    state = request.args.get("state")
    if state is not None and state not in set(MigrationState):
        raise BadRequest(f"unknown state {state!r}")
    return jsonify({"items": views.list_migrations(_ext().db, state)})


@bp.get("/<id:migration_id>")
@require("viewer")
def show(migration_id: str) -> ResponseReturnValue:
    return jsonify(views.migration_view(_ext().db, migration_id))


@bp.get("/<id:migration_id>/chunks")
@require("viewer")
def chunks(migration_id: str) -> ResponseReturnValue:
    state = request.args.get("state")
    if state is not None and state not in set(ChunkState):
        raise BadRequest(f"unknown state {state!r}")
    return jsonify({"items": views.list_chunks(_ext().db, migration_id, state)})


@bp.get("/<id:migration_id>/quarantine")
@require("viewer")
def quarantine(migration_id: str) -> ResponseReturnValue:
    """Quarantined rows; a viewer sees each row's columns and reason, never a value."""
    views.migration_view(_ext().db, migration_id)  # 404 for an unknown id
    items = views.list_quarantine(_ext().db, migration_id)
    if not allows(current_principal().role, "operator"):
        items = [mask_quarantined(item) for item in items]
    return jsonify({"items": items})


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
