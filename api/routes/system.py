"""Health, readiness, workers, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from api.auth import current_principal, require
from api.metrics import render_metrics
from api.openapi import openapi_document
from etl_tasks import __version__
from etl_tasks.tokens import allows
from etl_tasks.workers import list_workers, request_drain

bp = Blueprint("system", __name__)


def _ext() -> Any:
    return current_app.extensions["baton"]


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify({"status": "ok", "version": __version__})


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    try:
        with _ext().db.reading() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:
        return jsonify({"ready": False, "reason": f"state DB: {exc}"}), 503
    return jsonify({"ready": True, "version": __version__})


@bp.get("/api/v1/workers")
@require("viewer")
def workers() -> ResponseReturnValue:
    """Live workers; a viewer is not told where their probes listen."""
    items = list_workers(_ext().db)
    if not allows(current_principal().role, "operator"):
        items = [{**w, "probe_url": None} for w in items]
    return jsonify({"items": items})


@bp.post("/api/v1/workers/<name>/drain")
@require("operator")
def drain_worker(name: str) -> ResponseReturnValue:
    """Record a drain request; the worker's own heartbeat acts on it (it may listen for
    probes on loopback only, out of the API's reach)."""
    return jsonify(request_drain(_ext().db, name)), 202


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    body, content_type = render_metrics(current_app)
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document(__version__))
