"""Who may ``POST /drain`` on a worker's probe: whoever holds ``BATON_PROBE_TOKEN``.

Draining a worker stops it taking steps, so anyone who can reach the probe could
stall every migration by draining the fleet. The probe binds ``0.0.0.0`` in
containers, and a service mesh delivers outside traffic from ``127.0.0.1``, so
there is no trusted address: every drain request carries the token, as
``Authorization: Bearer <token>``. A worker without a token refuses every drain
request (SIGTERM still drains it). The ``GET`` answers stay open: they tell only
counts.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

BEARER = "bearer"
NO_TOKEN = (
    "POST /drain is disabled on this worker: set BATON_PROBE_TOKEN and send it as "
    "'Authorization: Bearer <token>' (SIGTERM still drains the worker)"
)
WRONG_TOKEN = "missing or wrong probe token: send 'Authorization: Bearer <BATON_PROBE_TOKEN>'"
# Where a token this short could be guessed over the network; `baton up` makes 43 characters.
SHORT_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Refusal:
    """Why a drain request is refused: 403 (no token configured) or 401 (not the token)."""

    status: int
    error: str


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER or not token:
        return None
    return token


def drain_refusal(configured: str | None, authorization: str | None) -> Refusal | None:
    """``None`` when the request may drain the worker, else why not.

    The comparison takes the same time whatever the sent token shares with the right
    one. Header values arrive decoded as Latin-1, so they are compared as the bytes
    that were sent.
    """
    if not configured:
        return Refusal(403, NO_TOKEN)
    sent = bearer_token(authorization)
    if sent is None:
        return Refusal(401, WRONG_TOKEN)
    if not hmac.compare_digest(sent.encode("latin-1", "replace"), configured.encode()):
        return Refusal(401, WRONG_TOKEN)
    return None


def token_problem(configured: str | None) -> str | None:
    """What a worker should warn about at start, if anything, given its probe token."""
    if not configured:
        return "BATON_PROBE_TOKEN is not set: the probe refuses every POST /drain (403)"
    if len(configured) < SHORT_TOKEN_CHARS:
        return f"BATON_PROBE_TOKEN is shorter than {SHORT_TOKEN_CHARS} characters: easy to guess"
    return None
