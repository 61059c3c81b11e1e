"""``POST /api/v1/migrations/{id}/quarantine/purge``: a finished migration's quarantined
values removed at once (they are personal data); counts and masked reasons stay."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.auth import current_principal, require
from etl_tasks.retention import purge_quarantine

bp = Blueprint("retention", __name__, url_prefix="/api/v1/migrations")


@bp.post("/<id:migration_id>/quarantine/purge")
@require("operator")
def purge(migration_id: str) -> ResponseReturnValue:
    """404 for an unknown migration; 409 while it may still quarantine rows."""
    db = current_app.extensions["baton"].db
    purged = purge_quarantine(db, migration_id, current_principal().actor)
    return jsonify({"migration_id": migration_id, "purged": purged})
