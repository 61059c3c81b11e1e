"""One exception hierarchy for all of Baton.

Whether a failure is retried or not is decided by its *type*, never by its
message: ``TransientError`` means "try again later", ``PermanentError`` means
"retrying cannot help".
"""

from __future__ import annotations

from dataclasses import dataclass


class BatonError(Exception):
    """Raised for any failure Baton itself understands."""


class TransientError(BatonError):
    """Raised when a step failed for a reason that may pass (a target down, a timeout).

    ``connection`` is False when the database answered (a deadlock, a lock timeout):
    such an error repeating identically is taken as the data's, not as an outage.
    ``retry_after`` is how long the other side asked to be left alone (an HTTP
    ``Retry-After``): the chunk waits that long instead of the usual backoff. ``jitter``
    spreads the backoff at random (full jitter), so workers that failed together against
    one API do not come back together.
    """

    def __init__(
        self,
        message: str = "",
        *,
        connection: bool = True,
        retry_after: float | None = None,
        jitter: bool = False,
    ) -> None:
        super().__init__(message)
        self.connection = connection
        self.retry_after = retry_after
        self.jitter = jitter


class Unsupported(TransientError):
    """Raised when this worker lacks what a migration needs (an endpoint kind, a spec form
    of a newer version): during a rolling deploy a worker that has it takes the chunk over.

    The chunk waits, like for an outage, and no attempt is counted: it is not the data's
    fault, and the migration must not fail on an older worker.
    """


class PermanentError(BatonError):
    """Raised when a step failed for a reason that retrying cannot fix."""


@dataclass(frozen=True)
class FieldError:
    """One problem with a submitted spec, located by a JSON-pointer-like path."""

    path: str
    message: str


class SpecError(PermanentError):
    """Raised when a spec is invalid or fails preflight; carries every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


class BoundaryError(PermanentError):
    """Raised when a spec names something it may not reach (docs/security.md)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field  # where in the endpoint object: "url", "url_env", ...


class EndpointUnavailable(TransientError):
    """Raised when a source or target cannot be reached; ``kind`` picks a fixed message.

    ``detail`` is the driver's own text: it can map the internal network, so only
    admins and logs see it.
    """

    def __init__(self, kind: str, detail: str = "", timeout_s: float | None = None) -> None:
        super().__init__(detail or kind)
        self.kind = kind  # "connect", "timeout" or "credentials"
        self.detail = detail
        self.timeout_s = timeout_s

    def public_message(self, which: str) -> str:
        if self.kind == "timeout":
            return f"the {which} did not answer in {self.timeout_s or 0:g} s"
        if self.kind == "credentials":
            return f"the {which} refused the credentials"
        return f"cannot connect to the {which}"


class BadRowError(PermanentError):
    """Raised when one source row cannot be transformed or written; it is quarantined.

    ``retry_later``: the row may load once other rows have (it references a row that is
    not in the target yet), so it is read again after the rest of its stream.
    """

    def __init__(
        self, reason: str, column: str | None = None, *, retry_later: bool = False
    ) -> None:
        super().__init__(reason if column is None else f"{column}: {reason}")
        self.reason = reason
        self.column = column
        self.retry_later = retry_later


class LeaseLost(BatonError):
    """Raised when a step's lease was taken over (its fencing token is stale): it must stop."""


class StagingMissing(BatonError):
    """Raised when a step's staged input is gone (staging Redis restarted or TTL passed)."""


class NotFound(BatonError):
    """Raised when a migration, chunk or worker asked for does not exist."""


class StateDBMissing(NotFound):
    """Raised when a command that reads the state DB finds no SQLite file where it looked
    (it would otherwise create an empty one and answer as if nothing existed)."""


class Conflict(BatonError):
    """Raised when a control action does not fit the migration's current state."""


class BadQuery(BatonError):
    """Raised when a list is asked for with a limit, cursor or format it cannot honour."""
