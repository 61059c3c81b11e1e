"""Preflight: check a spec against the real source and target before accepting it.

Everything first goes through the boundary (:mod:`etl_tasks.boundary`): what
the spec may reach is decided before anything is contacted. Preflight as a
whole has one deadline; every connection, answer and name lookup is bounded
by what is left of it. Every problem is collected (not just the first) and
located by a path into the spec. Connection failures read as a few fixed
messages (the driver's own text could map the internal network); only an
admin sees the detail. Nothing is written anywhere: a refused spec creates
nothing, not even a SQLite file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from etl_tasks.boundary.deadline import Deadline
from etl_tasks.boundary.policy import Boundary
from etl_tasks.boundary.sql_urls import SqlEndpoint, Timeouts
from etl_tasks.connectors.sql.engines import create_endpoint_engine
from etl_tasks.connectors.sql.errors import unavailable
from etl_tasks.drafting.infer import infer_after
from etl_tasks.endpoints import FileEndpoint, HttpEndpoint
from etl_tasks.errors import BoundaryError, EndpointUnavailable, FieldError, SpecError
from etl_tasks.notifications import webhook
from etl_tasks.preflight_files import FileSide, FileStreamCheck, open_file_side
from etl_tasks.preflight_http import check_http_target
from etl_tasks.preflight_streams import StreamCheck
from etl_tasks.spec import Endpoint, MigrationSpec, Notify, Stream


class Problems(list[FieldError]):
    def add(self, path: str, message: str) -> None:
        self.append(FieldError(path, message))


@dataclass
class _Context:
    boundary: Boundary
    deadline: Deadline
    reveal: bool
    problems: Problems

    def unavailable(self, which: str, field: str, exc: EndpointUnavailable) -> None:
        message = exc.public_message(which)
        if self.reveal and exc.detail:
            message += f": {exc.detail}"
        self.problems.add(f"{which}/{field}", message)


@dataclass
class Side:
    """One endpoint as preflight sees it."""

    engine: Engine
    backend: str
    fresh: bool  # a SQLite file that does not exist yet: every table is missing


def preflight(
    spec: MigrationSpec,
    boundary: Boundary,
    *,
    timeout_s: float = 5.0,
    reveal_details: bool = False,
    notes: list[str] | None = None,
    order: dict[str, list[str]] | None = None,
) -> dict[str, list[str]]:
    """Check the spec against the real databases; return each stream's resolved key.

    ``notes`` receives what the operator should know but that refuses nothing;
    ``order`` the ``after`` inferred from the target's foreign keys for the streams that
    give none (:func:`etl_tasks.drafting.infer.with_after` writes it into the spec).
    """
    ctx = _Context(boundary, Deadline(timeout_s), reveal_details, Problems())
    source = _open_source(ctx, spec)
    target: Side | None = None
    if isinstance(spec.target, HttpEndpoint):  # each side is checked by its own kind's rules
        target_ok = check_http_target(
            spec, boundary, ctx.deadline, ctx.problems.add, reveal_details
        )
    else:
        target = _open_sql(ctx, spec, "target", must_exist=False)
        target_ok = target is not None
    keys: dict[str, list[str]] = {}
    try:
        if source is not None and target_ok:
            for i, stream in enumerate(spec.streams):
                checked = _stream_check(i, spec, stream, source, target, ctx.problems, notes)
                keys[stream.stream_name] = _guarded(ctx, checked)
            if target is not None and not ctx.problems and not target.fresh and order is not None:
                _infer(ctx, spec, target, order, notes)
    finally:
        for side in (source, target):
            if isinstance(side, Side):
                side.engine.dispose()
    if spec.notify is not None:
        _check_notify(ctx, spec.notify)
    if ctx.problems:
        raise SpecError(ctx.problems)
    return keys


def _check_notify(ctx: _Context, notify: Notify) -> None:
    """The webhook's variables allowed and set, its host allowed: nothing is sent to it."""
    try:
        webhook(ctx.boundary, notify, ctx.deadline.remaining())
    except BoundaryError as exc:
        ctx.problems.add(exc.field, exc.message)
    except EndpointUnavailable as exc:
        message = exc.public_message("webhook")
        ctx.problems.add("notify/url_env", f"{message}: {exc.detail}" if ctx.reveal else message)


def _infer(
    ctx: _Context,
    spec: MigrationSpec,
    target: Side,
    order: dict[str, list[str]],
    notes: list[str] | None,
) -> None:
    try:
        inferred, said = infer_after(spec, target.engine)
    except sa_exc.SQLAlchemyError as exc:
        failure = unavailable(exc, timed_out=ctx.deadline.expired(), timeout_s=ctx.deadline.seconds)
        ctx.problems.add("target", failure.public_message("target"))
        return
    order.update(inferred)
    if notes is not None:
        notes.extend(said)


def _field(endpoint: Endpoint) -> str:
    return "url" if endpoint.url is not None else "url_env"


def _open_source(ctx: _Context, spec: MigrationSpec) -> Side | FileSide | None:
    """The source side, by its kind: each kind has its own checks; the target's stay SQL's."""
    if not isinstance(spec.source, FileEndpoint):
        return _open_sql(ctx, spec, "source", must_exist=True)
    if spec.verify:
        ctx.problems.add("verify", "verify compares a SQL source with the target, not files")
    try:
        return open_file_side(ctx.boundary, spec.source)
    except BoundaryError as exc:
        ctx.problems.add(f"source/file/{exc.field or 'path'}", exc.message)
    return None


def _stream_check(
    index: int,
    spec: MigrationSpec,
    stream: Stream,
    source: Side | FileSide,
    target: Side | None,
    problems: Problems,
    notes: list[str] | None,
) -> StreamCheck:
    if isinstance(source, FileSide):
        return FileStreamCheck(index, spec, stream, source, target, problems, notes)
    return StreamCheck(index, spec, stream, source, target, problems, notes)


def _open_sql(ctx: _Context, spec: MigrationSpec, which: str, *, must_exist: bool) -> Side | None:
    try:
        endpoint = spec.sql(which)
    except SpecError as exc:
        for error in exc.errors:
            ctx.problems.add(error.path, error.message)
        return None
    return _open(ctx, which, endpoint, must_exist=must_exist)


def _open(ctx: _Context, which: str, endpoint: Endpoint, *, must_exist: bool) -> Side | None:
    try:
        checked = ctx.boundary.sql_endpoint(endpoint, ctx.deadline.remaining())
        fresh = _sqlite_fresh(checked, must_exist)
        return _connect(ctx, checked, fresh)
    except BoundaryError as exc:
        ctx.problems.add(f"{which}/{exc.field or _field(endpoint)}", exc.message)
    except EndpointUnavailable as exc:
        ctx.unavailable(which, _field(endpoint), exc)
    return None


def _sqlite_fresh(checked: SqlEndpoint, must_exist: bool) -> bool:
    path = checked.sqlite_path
    if path is None or path.exists():
        return False
    if must_exist:
        raise BoundaryError(f"SQLite file {path} does not exist", "url")
    if not path.parent.is_dir():
        raise BoundaryError(f"folder {path.parent} does not exist", "url")
    if not os.access(path.parent, os.W_OK):
        raise BoundaryError(f"folder {path.parent} is not writable", "url")
    return True


def _connect(ctx: _Context, checked: SqlEndpoint, fresh: bool) -> Side:
    deadline = ctx.deadline
    timeouts = Timeouts(connect_s=deadline.remaining(), io_s=deadline.remaining())
    engine = create_endpoint_engine(checked, timeouts, deadline.remaining, pool_size=1)
    if not fresh:  # connecting would create the file: a refusal creates nothing
        try:
            with engine.connect():
                pass
        except sa_exc.SQLAlchemyError as exc:
            engine.dispose()
            raise unavailable(
                exc, timed_out=deadline.expired(), timeout_s=deadline.seconds
            ) from None
        except BaseException:
            engine.dispose()
            raise
    return Side(engine, checked.backend, fresh)


def _guarded(ctx: _Context, check: StreamCheck) -> list[str]:
    """Run one stream's checks; a database failing half-way is a located problem, not a 500."""
    path = f"streams/{check.index}"
    try:
        return check.run()
    except BoundaryError as exc:
        ctx.problems.add(path, exc.message)
    except EndpointUnavailable as exc:
        ctx.problems.add(path, exc.public_message("source or target"))
    except sa_exc.SQLAlchemyError as exc:
        failure = unavailable(exc, timed_out=ctx.deadline.expired(), timeout_s=ctx.deadline.seconds)
        message = (
            failure.public_message("source or target")
            if failure.kind == "timeout"
            else "the source or target refused to describe this stream's tables"
        )
        if ctx.reveal:
            message += f": {failure.detail}"
        ctx.problems.add(path, message)
    return []
