"""Building a stream's HTTP target from a worker's runtime (the registry calls this).

The endpoint goes through this worker's boundary once per stream and process
(host allow-list, the credential's variable); the rows' columns and types are
what the stream's source and transforms produce, since the API declares none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etl_tasks.bindings import produced_types
from etl_tasks.boundary.http_urls import http_access
from etl_tasks.boundary.policy import worker_timeouts
from etl_tasks.connectors.http.client import Client, RateLimit, SharedSize
from etl_tasks.connectors.http.target import HttpTarget
from etl_tasks.endpoints import HttpEndpoint
from etl_tasks.errors import BoundaryError, PermanentError, Unsupported

if TYPE_CHECKING:
    from etl_tasks.runtime import Runtime

RATE_KEY = "http-rate:{migration_id}"
SIZE_KEY = "http-batch-rows:{migration_id}:{stream}"


def target(rt: Runtime, migration_id: str, stream: str) -> HttpTarget:
    spec = rt.spec(migration_id)
    endpoint = spec.target
    if not isinstance(endpoint, HttpEndpoint):
        raise Unsupported(f"not an HTTP target: {endpoint.kind}")
    settings = endpoint.http
    st = spec.stream(stream)
    binding = rt.binding(migration_id, stream)
    try:
        access = http_access(rt.boundary, settings, worker_timeouts(rt.settings).connect_s)
    except BoundaryError as exc:
        raise PermanentError(f"target/{exc.field}: {exc.message}") from exc
    if not binding.target_key:
        raise PermanentError("an HTTP target needs every key column copied unchanged")
    redis_url, prefix = rt.settings.effective_staging_url, rt.settings.key_prefix
    rate = None
    if settings.max_rps is not None:
        key = prefix + RATE_KEY.format(migration_id=migration_id)
        rate = RateLimit(redis_url, key, settings.max_rps)
    size_key = prefix + SIZE_KEY.format(migration_id=migration_id, stream=stream)
    return HttpTarget(
        rt.db,
        Client(settings.method, access.headers, pin=(access.host, access.address)),
        access.url_for(st.target_table),
        binding.target_key,
        produced_types(st, binding.source.table, binding.source_types),
        batch_rows=settings.batch_rows,
        rows_field=settings.rows_field,
        timeout_s=settings.timeout_s,
        rate=rate,
        shared_size=SharedSize(redis_url, size_key),
    )
