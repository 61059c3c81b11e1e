"""``/api/v1/tokens`` (admins only): list, create and revoke API tokens."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.auth import require
from api.body import json_body, parse_body
from api.schemas import TokenCreate
from etl_tasks import tokens
from etl_tasks.state.db import StateDB

bp = Blueprint("tokens", __name__, url_prefix="/api/v1/tokens")


def _db() -> StateDB:
    db: StateDB = current_app.extensions["baton"].db
    return db


@bp.get("")
@require("admin")
def index() -> ResponseReturnValue:
    return jsonify({"items": tokens.list_tokens(_db()), "next": None})


@bp.post("")
@require("admin")
def create() -> ResponseReturnValue:
    """A new token, shown in this answer only."""
    wanted = parse_body(TokenCreate, json_body("the token's name and role"))
    row, token = tokens.issue_token(_db(), wanted.name, wanted.role)
    return jsonify({**row, "token": token}), 201


@bp.delete("/<int:token_id>")
@require("admin")
def revoke(token_id: int) -> ResponseReturnValue:
    return jsonify(tokens.revoke_token(_db(), token_id))
