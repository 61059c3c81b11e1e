"""API tokens: shown once at creation, only their SHA-256 kept."""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

from sqlalchemy import select

from etl_tasks.errors import BatonError
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import ApiToken

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: StateDB, name: str, role: str) -> str:
    """A new random token for ``role``; the caller shows it once."""
    if role not in ROLES:
        raise BatonError(f"role must be one of {', '.join(ROLES)}")
    token = "bt_" + secrets.token_urlsafe(32)
    with db.session() as s:
        s.add(ApiToken(name=name, role=role, token_hash=_digest(token), created_at=db.now(s)))
    return token


def role_of(db: StateDB, token: str) -> str | None:
    """The token's role, or ``None`` when it is unknown or revoked."""
    with db.reading() as s:
        row = s.scalar(
            select(ApiToken).where(
                ApiToken.token_hash == _digest(token), ApiToken.revoked_at.is_(None)
            )
        )
        return None if row is None else row.role


def allows(role: str, needed: str) -> bool:
    order: list[str] = list(ROLES)
    return order.index(role) >= order.index(needed)
