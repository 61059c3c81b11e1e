"""``/api/v1/migrations``: submit, list, inspect and control migrations."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from api.auth import require
from etl_tasks import control, views
from etl_tasks.boundary.sealing import CAPABILITY as SEALED_SPECS
from etl_tasks.boundary.sealing import storage_form
from etl_tasks.errors import FieldError, SpecError
from etl_tasks.preflight import preflight
from etl_tasks.publisher import publish_plan
from etl_tasks.spec import parse_spec
from etl_tasks.state.enums import ChunkState, MigrationState
from etl_tasks.workers import all_live_support

bp = Blueprint("migrations", __name__, url_prefix="/api/v1/migrations")


def _ext() -> Any:
    return current_app.extensions["baton"]


def _json_body() -> object:
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        raise UnsupportedMediaType("send the spec as application/json")
    raw = request.get_data(cache=False)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None


@bp.post("")
@require("operator")
def submit() -> ResponseReturnValue:
    body = _json_body()
    spec = parse_spec(body)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 200:
        raise SpecError([FieldError("Idempotency-Key", "must be 1 to 200 characters")])
    ext = _ext()
    body_hash = control.request_hash(body)
    replayed = control.find_replay(ext.db, key, body_hash) if key else None
    if replayed is not None:  # answered without preflight: the target may be down by now
        migration_id, created = replayed, False
    else:
        storage = storage_form(spec.to_stored(), ext.sealer, all_live_support(ext.db, SEALED_SPECS))
        with ext.preflight_gate.slot():
            keys = preflight(
                spec,
                ext.boundary,
                timeout_s=ext.settings.preflight_timeout_s,
                reveal_details=ext.settings.auth == "off",
            )
        migration_id, created = control.create_migration(
            ext.db, spec, keys, idempotency_key=key, body_hash=body_hash, storage=storage
        )
    if created:
        publish_plan(ext.publisher, migration_id)
    response = jsonify(views.migration_view(ext.db, migration_id))
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/migrations/{migration_id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("")
@require("viewer")
def index() -> ResponseReturnValue:
    state = request.args.get("state")
    if state is not None and state not in set(MigrationState):
        raise BadRequest(f"unknown state {state!r}")
    return jsonify({"items": views.list_migrations(_ext().db, state)})


@bp.get("/<migration_id>")
@require("viewer")
def show(migration_id: str) -> ResponseReturnValue:
    return jsonify(views.migration_view(_ext().db, migration_id))


@bp.get("/<migration_id>/chunks")
@require("viewer")
def chunks(migration_id: str) -> ResponseReturnValue:
    state = request.args.get("state")
    if state is not None and state not in set(ChunkState):
        raise BadRequest(f"unknown state {state!r}")
    return jsonify({"items": views.list_chunks(_ext().db, migration_id, state)})


@bp.get("/<migration_id>/quarantine")
@require("viewer")
def quarantine(migration_id: str) -> ResponseReturnValue:
    views.migration_view(_ext().db, migration_id)  # 404 for an unknown id
    return jsonify({"items": views.list_quarantine(_ext().db, migration_id)})


_CONTROLS = {
    "pause": control.pause,
    "resume": control.resume,
    "cancel": control.cancel,
    "retry": control.retry,
}


@bp.post("/<migration_id>/<action>")
@require("operator")
def act(migration_id: str, action: str) -> ResponseReturnValue:
    fn = _CONTROLS.get(action)
    if fn is None:
        return jsonify({"error": f"unknown action {action!r}"}), 404
    ext = _ext()
    fn(ext.db, migration_id)
    if action in ("resume", "retry"):
        publish_plan(ext.publisher, migration_id)
    return jsonify(views.migration_view(ext.db, migration_id))
