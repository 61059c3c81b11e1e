"""Drafting and checking specs on behalf of an operator: through the boundary, bounded."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from etl_tasks.boundary.deadline import Deadline
from etl_tasks.boundary.policy import Boundary
from etl_tasks.boundary.sql_urls import Timeouts
from etl_tasks.connectors.sql.engines import create_endpoint_engine
from etl_tasks.connectors.sql.errors import unavailable
from etl_tasks.drafting.draft import Draft, draft_spec
from etl_tasks.errors import BoundaryError, EndpointUnavailable, FieldError, SpecError
from etl_tasks.spec import Endpoint

DRAFT_NAME = "drafted-migration"


def draft_through(
    boundary: Boundary,
    source: dict[str, Any],
    target: dict[str, Any] | None,
    *,
    timeout_s: float,
    name: str | None = None,
) -> Draft:
    """A draft for endpoints a spec could name, reached as preflight reaches them."""
    deadline = Deadline(timeout_s)
    engines: list[Engine] = []
    try:
        src = _engine(boundary, "source", source, deadline, engines)
        tgt = _engine(boundary, "target", target, deadline, engines) if target else None
        try:
            return draft_spec(
                src,
                tgt,
                name=name or DRAFT_NAME,
                source_endpoint=source,
                target_endpoint=target or {"url_env": "TARGET_DB_URL"},
            )
        except sa_exc.SQLAlchemyError as exc:
            failure = unavailable(exc, timed_out=deadline.expired(), timeout_s=timeout_s)
            message = failure.public_message("source or target")
            raise SpecError([FieldError("source", message)]) from None
    finally:
        for engine in engines:
            engine.dispose()


def _engine(
    boundary: Boundary,
    which: str,
    endpoint: dict[str, Any],
    deadline: Deadline,
    engines: list[Engine],
) -> Engine:
    try:
        parsed = Endpoint.model_validate(endpoint)
        checked = boundary.sql_endpoint(parsed, deadline.remaining())
    except BoundaryError as exc:
        raise SpecError([FieldError(f"{which}/{exc.field}", exc.message)]) from None
    except EndpointUnavailable as exc:
        raise SpecError([FieldError(which, exc.public_message(which))]) from None
    except ValueError as exc:  # pydantic: not an endpoint object
        raise SpecError([FieldError(which, f"not an endpoint: {exc}")]) from None
    timeouts = Timeouts(connect_s=deadline.remaining(), io_s=deadline.remaining())
    engine = create_endpoint_engine(checked, timeouts, deadline.remaining, pool_size=1)
    engines.append(engine)
    return engine
