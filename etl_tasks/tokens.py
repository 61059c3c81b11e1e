"""API tokens and the principals they stand for: shown once at creation, only a SHA-256 kept.

Roles are ordered: a ``viewer`` reads, an ``operator`` also submits and controls
migrations, an ``admin`` also manages tokens. A token's row is what anyone may
see of it (id, name, role, created, revoked); the token itself never is, after
the answer that created it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from etl_tasks.errors import BatonError, Conflict, NotFound
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import ApiToken

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
NAME_MAX = 200  # characters in a token's name (the column's size)
_ID_MAX = 2**63 - 1  # largest id a BIGINT holds; anything above names no token


@dataclass(frozen=True)
class Principal:
    """Who is asking: a token's holder, or the local user when auth is off."""

    name: str
    role: str
    token_id: int | None = None

    @property
    def actor(self) -> str:
        """How events record this principal: ``token 3 (alice)``, or ``local``."""
        return self.name if self.token_id is None else f"token {self.token_id} ({self.name})"

    @property
    def scope(self) -> str:
        """What an ``Idempotency-Key`` is scoped to: one token (or the local user)."""
        return self.name if self.token_id is None else f"token:{self.token_id}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


#: With ``BATON_AUTH=off`` (loopback only) every caller is this admin.
LOCAL = Principal(name="local", role="admin")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def token_view(row: ApiToken) -> dict[str, Any]:
    """What may be shown of a token: never its hash."""
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "created_at": _iso(row.created_at),
        "revoked_at": _iso(row.revoked_at),
    }


def check_new_token(name: str, role: str) -> None:
    """Raise :class:`BatonError` unless ``name`` and ``role`` may name a new token."""
    if role not in ROLES:
        raise BatonError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > NAME_MAX:
        raise BatonError(f"a token's name must be 1 to {NAME_MAX} characters")


def issue_token(db: StateDB, name: str, role: str) -> tuple[dict[str, Any], str]:
    """A new random token for ``role``: its row and the token, which the caller shows once."""
    check_new_token(name, role)
    token = "bt_" + secrets.token_urlsafe(32)
    with db.session() as s:
        row = ApiToken(name=name, role=role, token_hash=_digest(token), created_at=db.now(s))
        s.add(row)
        s.flush()
        view = token_view(row)
    return view, token


def create_token(db: StateDB, name: str, role: str) -> str:
    """A new random token for ``role``; the caller shows it once."""
    return issue_token(db, name, role)[1]


def authenticate(db: StateDB, token: str) -> Principal | None:
    """The principal a token stands for, or ``None`` when it is unknown or revoked."""
    with db.reading() as s:
        row = s.scalar(
            select(ApiToken).where(
                ApiToken.token_hash == _digest(token), ApiToken.revoked_at.is_(None)
            )
        )
        return None if row is None else Principal(row.name, row.role, row.id)


def principal_of(db: StateDB, token_id: int) -> Principal | None:
    """The principal of a token known by its id (a dashboard session), unless revoked."""
    if not 0 < token_id <= _ID_MAX:
        return None
    with db.reading() as s:
        row = s.get(ApiToken, token_id)
        if row is None or row.revoked_at is not None:
            return None
        return Principal(row.name, row.role, row.id)


def allows(role: str, needed: str) -> bool:
    order: list[str] = list(ROLES)
    return order.index(role) >= order.index(needed)


def list_tokens(db: StateDB) -> list[dict[str, Any]]:
    """Every token ever made, oldest first, revoked ones included."""
    with db.reading() as s:
        return [token_view(r) for r in s.scalars(select(ApiToken).order_by(ApiToken.id))]


def revoke_token(db: StateDB, id_or_name: int | str) -> dict[str, Any]:
    """Revoke a token given by id, or by the name of exactly one live token; return its row.

    Revoking a revoked token changes nothing. A string of digits is an id first, a
    name only when no token has that id.
    """
    with db.session() as s:
        row = _find(s, id_or_name)
        if row.revoked_at is None:
            row.revoked_at = db.now(s)
        return token_view(row)


def _find(s: Session, id_or_name: int | str) -> ApiToken:
    if isinstance(id_or_name, int):
        return _by_id(s, id_or_name)
    if id_or_name.isdecimal():
        try:
            return _by_id(s, int(id_or_name))
        except NotFound:
            pass
    return _by_name(s, id_or_name)


def _by_id(s: Session, token_id: int) -> ApiToken:
    row = s.get(ApiToken, token_id) if 0 < token_id <= _ID_MAX else None
    if row is None:
        raise NotFound(f"no token {token_id}")
    return row


def _by_name(s: Session, name: str) -> ApiToken:
    live = list(
        s.scalars(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))
    )
    if not live:
        raise NotFound(f"no live token named {name!r}")
    if len(live) > 1:
        ids = ", ".join(str(r.id) for r in live)
        raise Conflict(f"{len(live)} live tokens are named {name!r} ({ids}): give an id")
    return live[0]
