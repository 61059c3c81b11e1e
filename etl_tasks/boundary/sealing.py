"""Secrets at rest: a spec's endpoints stored encrypted, as a whole, in the state DB.

Keys come from ``BATON_SECRET_KEYS`` (Fernet keys, comma-separated, newest
first): the newest seals, every one unseals, so keys rotate without a
flag day (``baton secrets rotate`` re-seals everything with the newest).
Without keys, a spec that writes a credential into its URL is refused with a
pointer to ``url_env``; ``baton up`` and ``baton demo`` make a key in their own
folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.engine import make_url

from etl_tasks.errors import FieldError, PermanentError, SpecError
from etl_tasks.spec import endpoint_kind
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Migration

SEALED_FIELDS = ("source", "target")
SECRET_PARAMS = ("password", "passwd", "pwd", "secret", "token", "sslpassword", "key")
CAPABILITY = "sealed_specs"  # what a worker that can unseal advertises
PLACEHOLDER: dict[str, Any] = {"sealed": True}


class SealingError(PermanentError):
    """Raised when secret keys are missing, malformed, or cannot open a sealed spec."""


def parse_keys(text: str | None) -> list[str]:
    return [k.strip() for k in (text or "").split(",") if k.strip()]


class Sealer:
    """Seals and unseals endpoint objects with the configured keys."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SealingError("no secret keys: set BATON_SECRET_KEYS")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError) as exc:
            raise SealingError(f"BATON_SECRET_KEYS holds a malformed key: {exc}") from None

    @classmethod
    def from_text(cls, text: str | None) -> Sealer | None:
        keys = parse_keys(text)
        return cls(keys) if keys else None

    def seal(self, endpoints: Mapping[str, Any]) -> str:
        return self._fernet.encrypt(orjson.dumps(dict(endpoints))).decode()

    def unseal(self, token: str) -> dict[str, Any]:
        try:
            value = orjson.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise PermanentError(
                "cannot open this migration's sealed endpoints: none of BATON_SECRET_KEYS "
                "is the key they were sealed with"
            ) from None
        assert isinstance(value, dict)
        return value

    def rotate(self, token: str) -> str:
        """The same endpoints sealed again with the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SealingError(
                "a sealed spec opens with none of BATON_SECRET_KEYS: keep its old key listed"
            ) from None


def new_key() -> str:
    return Fernet.generate_key().decode()


def has_literal_credential(endpoint: Mapping[str, Any]) -> bool:
    """Whether an endpoint object carries a secret itself (not by environment reference)."""
    url = endpoint.get("url")
    if not isinstance(url, str):
        return False
    try:
        u = make_url(url)
    except Exception:  # not parsable: preflight refuses it anyway
        return "@" in url
    if u.password:
        return True
    return any(p in name.lower() for name in u.query for p in SECRET_PARAMS)


def split_sealed(stored: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the spec with its endpoints replaced by a placeholder, the endpoints)."""
    endpoints = {f: stored[f] for f in SEALED_FIELDS}
    public = {
        **stored,
        **{f: {**PLACEHOLDER, "kind": endpoint_kind(stored[f])} for f in SEALED_FIELDS},
    }
    return public, endpoints


def join_sealed(public: dict[str, Any], endpoints: Mapping[str, Any]) -> dict[str, Any]:
    return {**public, **{f: endpoints[f] for f in SEALED_FIELDS}}


def open_spec(stored: dict[str, Any], sealed: str | None, sealer: Sealer | None) -> dict[str, Any]:
    """A stored spec with its endpoints, unsealed when they were sealed."""
    if sealed is None:
        return stored
    if sealer is None:
        raise SealingError(
            "this migration's endpoints are sealed and this process has no BATON_SECRET_KEYS"
        )
    return join_sealed(stored, sealer.unseal(sealed))


def storage_form(
    stored: dict[str, Any], sealer: Sealer | None, workers_can_unseal: bool
) -> tuple[dict[str, Any], str | None]:
    """How a submitted spec is kept: ``(spec JSON, sealed endpoints or None)``.

    Sealed whenever there are keys and every live worker can open a sealed spec
    (versions side by side: an older worker could not). A credential written in the
    spec is never kept in clear: without sealing it is refused.
    """
    if sealer is not None and workers_can_unseal:
        public, endpoints = split_sealed(stored)
        return public, sealer.seal(endpoints)
    literal = [f for f in SEALED_FIELDS if has_literal_credential(stored[f])]
    if not literal:
        return stored, None
    if sealer is None:
        why = (
            "a credential written in the spec is only kept sealed, and BATON_SECRET_KEYS is "
            "not set: give the URL by url_env instead"
        )
    else:
        why = (
            "a credential written in the spec is only kept sealed, and a running worker "
            "cannot open sealed specs yet (upgrade the workers first): give the URL by "
            "url_env meanwhile"
        )
    raise SpecError([FieldError(f"{field}/url", why) for field in literal])


def rotate_all(db: StateDB, sealer: Sealer) -> int:
    """Seal every sealed spec again with the newest key; return how many were."""
    done = 0
    with db.session() as s:
        for mig in s.scalars(select(Migration).where(Migration.sealed.is_not(None))):
            assert mig.sealed is not None
            mig.sealed = sealer.rotate(mig.sealed)
            done += 1
    return done
