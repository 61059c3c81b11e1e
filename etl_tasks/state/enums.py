"""Status values, as ``str`` enums so they read the same in the DB, the API and logs."""

from __future__ import annotations

from enum import StrEnum

from etl_tasks.constants import next_step


class MigrationState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (MigrationState.SUCCEEDED, MigrationState.FAILED, MigrationState.CANCELLED)


class StreamState(StrEnum):
    PENDING = "pending"  # waiting for the streams it comes after, or for its prepare step
    RUNNING = "running"  # prepared; chunks are planned and executed
    DONE = "done"
    FAILED = "failed"


class ChunkState(StrEnum):
    PENDING = "pending"  # planned, not yet claimed
    RUNNING = "running"  # some step has claimed it at least once
    DONE = "done"
    FAILED = "failed"


class QuarantineStatus(StrEnum):
    """Where a set-aside row stands; the state DB stores NULL for ``QUARANTINED``."""

    QUARANTINED = "quarantined"  # set aside for good, with its reason
    DEFERRED = "deferred"  # refused for a foreign key: read again once its stream has loaded
    RETRYING = "retrying"  # in a key-set chunk that reads it again
    GONE = "gone"  # no longer in the source when it was read again


class Step(StrEnum):
    EXTRACT = "extract"
    TRANSFORM = "transform"
    LOAD = "load"

    @property
    def next(self) -> Step | None:
        """The step after this one, as :data:`etl_tasks.constants.PIPELINE` orders them."""
        after = next_step(self.value)
        return None if after is None else Step(after.name)


class WorkerState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    STOPPED = "stopped"


class VerificationState(StrEnum):
    PENDING = "pending"  # asked for: waits for its migration to succeed, or to be planned
    RUNNING = "running"  # its ranges are planned and being compared
    EQUAL = "equal"  # every range compared, no difference
    DIFFERENT = "different"  # every range compared, some differ
    FAILED = "failed"  # a range could not be compared (or its migration was cancelled)

    @property
    def finished(self) -> bool:
        return self in (
            VerificationState.EQUAL,
            VerificationState.DIFFERENT,
            VerificationState.FAILED,
        )


class RangeState(StrEnum):
    PENDING = "pending"  # planned, not yet claimed
    RUNNING = "running"  # claimed at least once
    DONE = "done"  # compared; its result is recorded
    FAILED = "failed"
