"""``/api/v1/specs``: draft a spec from a source's schema, or check one without submitting."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.auth import current_principal, require, require_admin_for_queries
from api.body import json_body, parse_body
from api.schemas import DraftRequest
from etl_tasks.drafting.service import draft_through
from etl_tasks.preflight import preflight
from etl_tasks.spec import parse_spec

bp = Blueprint("specs", __name__, url_prefix="/api/v1/specs")


def _ext() -> Any:
    return current_app.extensions["baton"]


@bp.post("/draft")
@require("operator")
def draft() -> ResponseReturnValue:
    """A complete spec drafted from the source's schema (and the target's, when given)."""
    wanted = parse_body(DraftRequest, json_body("the endpoints to draft from"))
    ext = _ext()
    with ext.preflight_gate.slot():
        drafted = draft_through(
            ext.boundary,
            wanted.source,
            wanted.target,
            timeout_s=ext.settings.preflight_timeout_s,
            name=wanted.name,
        )
    return jsonify({"spec": drafted.spec, "comments": drafted.comments, "notes": drafted.notes})


@bp.post("/check")
@require("operator")
def check() -> ResponseReturnValue:
    """The whole preflight of a spec, creating nothing: 200, or 422 with every problem."""
    spec = parse_spec(json_body("the spec"))
    require_admin_for_queries(spec, current_principal())
    ext = _ext()
    notes: list[str] = []
    with ext.preflight_gate.slot():
        keys = preflight(
            spec,
            ext.boundary,
            timeout_s=ext.settings.preflight_timeout_s,
            reveal_details=current_principal().is_admin,
            notes=notes,
        )
    return jsonify({"ok": True, "keys": keys, "notes": notes})
