"""``POST /api/v1/migrations/{id}/quarantine/replay``: read the quarantined rows again.

The body is optional. Without one, the rows are read again through the spec as
it is (the source was fixed). With ``{"streams": {NAME: {"columns": {...}}}}``
the named streams' column mappings are replaced for the replay and kept: the
amended spec is validated and preflighted exactly as a submission is (422 with
every problem, 429 when too many checks run), and stored as a spec revision in
the same transaction that plans the replay (:mod:`etl_tasks.replay`). A refusal
changes nothing.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import current_principal, require
from api.body import json_body, parse_body
from api.errors import InvalidRequest
from api.routes.migrations import checked_spec
from api.schemas import ReplayRequest
from etl_tasks import replay, views
from etl_tasks.boundary.sealing import open_spec
from etl_tasks.errors import FieldError
from etl_tasks.publisher import publish_plan
from etl_tasks.spec import parse_spec

bp = Blueprint("replay", __name__, url_prefix="/api/v1/migrations")


@bp.post("/<id:migration_id>/quarantine/replay")
@require("operator")
def replay_quarantine(migration_id: str) -> ResponseReturnValue:
    ext = current_app.extensions["baton"]
    raw = _body()
    asked = parse_body(ReplayRequest, raw) if raw is not None else ReplayRequest()
    stored = replay.check_replayable(ext.db, migration_id)  # 404 or 409 before any preflight
    revision = None
    if asked.streams:
        assert isinstance(raw, dict)
        revision = _revision(ext, stored, raw["streams"])
    who = current_principal()
    started = replay.replay(ext.db, migration_id, who.actor, revision)
    publish_plan(ext.publisher, migration_id)
    body = {**started.as_dict(), "migration": views.migration_view(ext.db, migration_id)}
    return jsonify(body), 202


def _body() -> object | None:
    """The request's JSON, or None when it has no body at all."""
    if not request.content_length and "chunked" not in request.headers.get("Transfer-Encoding", ""):
        return None
    return json_body("the replay request")


def _revision(ext: Any, stored: dict[str, Any], amended: dict[str, Any]) -> replay.Revision:
    """The migration's spec with the amended streams' columns, checked like a submission."""
    spec = copy.deepcopy(open_spec(stored["spec"], stored["sealed"], ext.sealer))
    by_name = {(s.get("name") or s.get("target_table")): s for s in spec.get("streams", [])}
    unknown = [n for n in amended if n not in by_name]
    if unknown:
        why = "this migration has no stream of this name"
        raise InvalidRequest([FieldError(f"streams/{n}", why) for n in unknown])
    columns: dict[str, tuple[Any, Any]] = {}
    for name, change in amended.items():
        stream = by_name[name]
        columns[name] = (stream.get("columns"), change["columns"])
        stream["columns"] = change["columns"]
    checked = checked_spec(ext, parse_spec(spec))
    public, sealed = checked.storage
    return replay.Revision(public, sealed, columns)
