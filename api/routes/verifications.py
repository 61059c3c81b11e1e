"""``/api/v1/migrations/{id}/verify``: start a verification, read the newest report.

The API only records the request and publishes the plan task: workers plan the
ranges and compare them (:mod:`etl_tasks.verification`), so the API never reads
a source or target table here.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.auth import current_principal, require
from etl_tasks.publisher import publish_plan
from etl_tasks.tokens import allows
from etl_tasks.verification.report import latest_report, report_url
from etl_tasks.verification.requests import request_verification

bp = Blueprint("verifications", __name__, url_prefix="/api/v1/migrations")


def _ext() -> Any:
    return current_app.extensions["baton"]


@bp.post("/<id:migration_id>/verify")
@require("operator")
def start(migration_id: str) -> ResponseReturnValue:
    """202 with the verification: a new one, or the one already pending or running."""
    ext = _ext()
    _, created = request_verification(ext.db, migration_id, current_principal().actor)
    if created:
        publish_plan(ext.publisher, migration_id)  # a lost message costs one sweep
    response = jsonify(latest_report(ext.db, migration_id))
    response.status_code = 202
    response.headers["Location"] = report_url(migration_id)
    return response


@bp.get("/<id:migration_id>/verify")
@require("viewer")
def show(migration_id: str) -> ResponseReturnValue:
    """The newest report; a viewer sees sample values masked, as in the quarantine."""
    masked = not allows(current_principal().role, "operator")
    return jsonify(latest_report(_ext().db, migration_id, masked=masked))
