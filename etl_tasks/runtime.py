"""Per-process context for steps: settings, state DB, staging, engines and caches.

Built once per worker process (after any fork) and passed to every step.
What is derived from a migration's spec is cached. A spec changes only when a
quarantine replay amends a stream's columns (a spec revision), which also moves
the migration's ``updated_at``: a claim that sees it moved since this process last
looked hands the stored spec's digest to :meth:`Runtime.follow_spec`, which forgets
what was derived from an older revision.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import orjson
import redis
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy import exc as sa_exc

from etl_tasks.bindings import StreamBinding, bind_stream, source_key
from etl_tasks.boundary.policy import Boundary, worker_timeouts
from etl_tasks.boundary.sealing import Sealer, open_spec
from etl_tasks.boundary.sql_urls import SqlEndpoint
from etl_tasks.connectors import registry
from etl_tasks.connectors.base import Source, Target
from etl_tasks.connectors.files.factory import binding as file_binding
from etl_tasks.connectors.sql.engines import EngineCache
from etl_tasks.connectors.sql.errors import error_reason, is_transient_error
from etl_tasks.connectors.sql.shape import source_shape
from etl_tasks.endpoints import FileEndpoint
from etl_tasks.errors import NotFound, PermanentError, TransientError, Unsupported
from etl_tasks.native_stage import pass_through_refusal
from etl_tasks.preflight_keys import unique_not_null
from etl_tasks.publisher import Publisher
from etl_tasks.settings import Settings
from etl_tasks.spec import Endpoint, MigrationSpec, endpoint_kind
from etl_tasks.staging import StagingStore
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Event, Migration
from etl_tasks.system_slots import End, System, SystemSlots, system_of
from etl_tasks.values.path import ValuePath, build_path

ENDS = ("source", "target")
T = TypeVar("T")

PASS_THROUGH = "rows travel as PostgreSQL COPY text (pass-through)"

log = logging.getLogger(__name__)


def spec_digest(stored: dict[str, Any], sealed: str | None) -> str:
    """A stored spec's revision, as a digest of what the state DB holds for it."""
    return hashlib.sha256(orjson.dumps([stored, sealed], option=orjson.OPT_SORT_KEYS)).hexdigest()


class Runtime:
    def __init__(
        self, settings: Settings, publisher: Publisher, worker_name: str = "local"
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.worker_name = worker_name
        self.db = StateDB(settings.database_url)
        self.staging = StagingStore(
            settings.effective_staging_url, settings.key_prefix, settings.staging_ttl_s
        )
        self.slots = SystemSlots(self.staging.client, settings.key_prefix, settings.lease_s)
        self.boundary = Boundary.from_settings(settings)
        self.sealer = Sealer.from_text(settings.secret_keys)
        # As many pooled connections per endpoint as steps run at once: a connection past
        # the pool is closed when returned, and the next step pays a new server session.
        self.engines = EngineCache(
            worker_timeouts(settings), max_engines=16, pool_size=settings.worker_concurrency
        )
        self._lock = threading.RLock()
        self._specs: dict[str, MigrationSpec] = {}
        self._digests: dict[str, str] = {}  # the revision each cached spec was read from
        self._looked: dict[str, Any] = {}  # updated_at when the spec was last compared
        self._endpoints: dict[tuple[str, str], SqlEndpoint] = {}
        self._bindings: dict[tuple[str, str], StreamBinding] = {}
        self._paths: dict[tuple[str, str], ValuePath] = {}
        self._native: dict[tuple[str, str], bool] = {}
        self._sources: dict[tuple[str, str], Source] = {}
        self._targets: dict[tuple[str, str], Target] = {}
        self._systems: dict[tuple[str, str], System | None] = {}
        self._broker: redis.Redis | None = None
        self._building: dict[tuple[int, tuple[str, str]], threading.Lock] = {}

    def broker_redis(self) -> redis.Redis | None:
        """A client of the broker, when it is Redis (the sweeper watches its epoch key)."""
        if not self.settings.broker_is_redis:
            return None
        with self._lock:
            if self._broker is None:
                self._broker = redis.Redis.from_url(
                    self.settings.broker_url, socket_timeout=5, socket_connect_timeout=5
                )
            return self._broker

    def spec(self, migration_id: str) -> MigrationSpec:
        with self._lock:
            cached = self._specs.get(migration_id)
        if cached is not None:
            return cached
        with self.db.reading() as s:
            mig = s.get(Migration, migration_id)
            if mig is None:
                raise NotFound(f"migration {migration_id} not found")
            stored, sealed = mig.spec, mig.sealed
        digest = spec_digest(stored, sealed)
        opened = open_spec(stored, sealed, self.sealer)
        try:
            spec = MigrationSpec.model_validate(opened)
        except ValidationError as exc:
            # The API validated it when it was submitted: a newer version wrote it.
            kinds = ", ".join(f"{w} {endpoint_kind(opened.get(w) or {})}" for w in ENDS)
            raise Unsupported(f"the migration's spec needs a newer worker ({kinds})") from exc
        with self._lock:
            self._specs[migration_id] = spec
            self._digests[migration_id] = digest
        return spec

    def spec_may_have_changed(self, migration_id: str, updated_at: Any) -> bool:
        """Whether the migration's row changed since its spec was last compared here (a
        revision moves ``updated_at``; so do pauses and waits, which change no spec)."""
        with self._lock:
            return migration_id not in self._looked or self._looked[migration_id] != updated_at

    def follow_spec(self, migration_id: str, digest: str, updated_at: Any = None) -> None:
        """Forget what was derived from an older revision of the migration's spec (its
        endpoints stay: a revision changes a stream's columns, never where they are);
        ``updated_at`` is the migration's, read with the spec."""
        with self._lock:
            self._looked[migration_id] = updated_at
            known = self._digests.get(migration_id)
            if known is None or known == digest:
                return
            self._specs.pop(migration_id, None)
            self._digests.pop(migration_id, None)
            for cache in (self._bindings, self._sources, self._targets, self._paths):
                for k in [k for k in cache if k[0] == migration_id]:
                    cache.pop(k)

    def endpoint(self, migration_id: str, which: str) -> SqlEndpoint:
        """The migration's source or target, checked against this worker's boundary once
        (its address stays pinned while the migration runs here)."""
        key = (migration_id, which)
        with self._lock:
            cached = self._endpoints.get(key)
        if cached is not None:
            return cached
        spec = self.spec(migration_id)
        endpoint = spec.source if which == "source" else spec.target
        if not isinstance(endpoint, Endpoint):
            raise Unsupported(f"this worker has no SQL connection for {endpoint.kind} {which}s")
        checked = self.boundary.sql_endpoint(endpoint, worker_timeouts(self.settings).connect_s)
        with self._lock:
            self._endpoints[key] = checked
        return checked

    def source_reader(self, migration_id: str) -> Engine:
        return self.engines.reader(self.endpoint(migration_id, "source"))

    def target_engine(self, migration_id: str) -> Engine:
        return self.engines.get(self.endpoint(migration_id, "target"))

    def binding(self, migration_id: str, stream: str) -> StreamBinding:
        return self._once(self._bindings, (migration_id, stream), self._bind)

    def _bind(self, migration_id: str, stream: str) -> StreamBinding:
        spec = self.spec(migration_id)
        if isinstance(spec.source, FileEndpoint):
            return file_binding(self, migration_id, stream)
        st = spec.stream(stream)
        source = self.source_reader(migration_id)
        with self._catalog_errors(st.source_name):
            table, types = source_shape(source, st)
            unique = st.write != "insert"  # a query's key was proved unique by preflight
            if st.query is None:
                with source.connect() as conn:
                    unique = unique_not_null(conn, table, source_key(st, table))  # type: ignore[arg-type]
        return bind_stream(spec, stream, table, types, unique)

    def system(self, migration_id: str, end: End) -> System | None:
        """The system the migration's source or target reaches (the key of its connection
        slots), worked out once: every step asks, and a revision of the spec never moves
        its endpoints."""
        return self._once(self._systems, (migration_id, end), self._system_of)

    def _system_of(self, migration_id: str, end: str) -> System | None:
        return system_of(self, migration_id, cast(End, end))

    def source(self, migration_id: str, stream: str) -> Source:
        """The stream's source, built by the connector of its endpoint's kind."""
        return self._once(self._sources, (migration_id, stream), self._build_source)

    def _build_source(self, migration_id: str, stream: str) -> Source:
        kind = endpoint_kind(self.spec(migration_id).source.model_dump(exclude_none=True))
        return registry.source_factory(kind)(self, migration_id, stream)

    def target(self, migration_id: str, stream: str) -> Target:
        """The stream's target, built by the connector of its endpoint's kind."""
        return self._once(self._targets, (migration_id, stream), self._build_target)

    def _build_target(self, migration_id: str, stream: str) -> Target:
        kind = endpoint_kind(self.spec(migration_id).target.model_dump(exclude_none=True))
        return registry.target_factory(kind)(self, migration_id, stream)

    def value_path(self, migration_id: str, stream: str) -> ValuePath:
        """Transforms, then the strict casts into the target's columns (which exist by now:
        a stream's prepare step runs before any of its chunks)."""
        return self._once(self._paths, (migration_id, stream), self._build_path)

    def _build_path(self, migration_id: str, stream: str) -> ValuePath:
        binding = self.binding(migration_id, stream)
        target = self.target(migration_id, stream)
        return build_path(binding.mapper, binding.origins, binding.source_types, target.columns())

    def native_copy(self, migration_id: str, stream: str) -> bool:
        """Whether the stream's chunks travel as PostgreSQL COPY text, unparsed (decided by
        :func:`etl_tasks.native_stage.pass_through_refusal`, once per process, and logged)."""
        return self._once(self._native, (migration_id, stream), self._decide_native)

    def _decide_native(self, migration_id: str, stream: str) -> bool:
        spec = self.spec(migration_id)
        sql = isinstance(spec.source, Endpoint) and isinstance(spec.target, Endpoint)
        backends = (
            (
                self.endpoint(migration_id, "source").backend,
                self.endpoint(migration_id, "target").backend,
            )
            if sql
            else (None, None)
        )
        refusal = pass_through_refusal(
            self.settings.native_copy,
            backends,
            self.binding(migration_id, stream),
            self.value_path(migration_id, stream),
        )
        path = PASS_THROUGH if refusal is None else f"rows are parsed: {refusal}"
        log.info("stream %s: %s", stream, path, extra={"migration_id": migration_id})
        self._record_path(migration_id, f"stream {stream}: {path}")
        return refusal is None

    def _once(
        self,
        cache: dict[tuple[str, str], T],
        key: tuple[str, str],
        build: Callable[[str, str], T],
    ) -> T:
        """``cache[key]``, built by one thread: the others wait for it rather than each
        reflecting the same tables (every thread of a worker starts on the same stream)."""
        with self._lock:
            if key in cache:
                return cache[key]
            gate = self._building.setdefault((id(cache), key), threading.Lock())
        with gate:
            with self._lock:
                if key in cache:
                    return cache[key]
            try:
                value = build(*key)
                with self._lock:
                    cache[key] = value
            finally:
                with self._lock:
                    self._building.pop((id(cache), key), None)
        return value

    def _record_path(self, migration_id: str, message: str) -> None:
        """The decision as the migration's event, once (each worker decides the same)."""
        with self.db.session() as s:
            seen = s.scalar(
                select(Event.id).where(
                    Event.migration_id == migration_id,
                    Event.kind == "stream_path",
                    Event.message == message,
                )
            )
            if seen is None:
                s.add(
                    Event(
                        migration_id=migration_id,
                        kind="stream_path",
                        message=message,
                        at=self.db.now(s),
                    )
                )

    @staticmethod
    @contextlib.contextmanager
    def _catalog_errors(name: str) -> Iterator[None]:
        try:
            yield
        except sa_exc.NoSuchTableError as exc:
            raise PermanentError(f"table {name!r} does not exist") from exc
        except sa_exc.SQLAlchemyError as exc:
            if is_transient_error(exc):
                raise TransientError(f"cannot reach {name!r}: {error_reason(exc)}") from exc
            raise

    def release(self, migration_id: str) -> None:
        """Forget a finished migration and close its engines when no other uses them."""
        with self._lock:
            self._specs.pop(migration_id, None)
            self._digests.pop(migration_id, None)
            for cache in (self._bindings, self._sources, self._targets, self._paths):
                for k in [k for k in cache if k[0] == migration_id]:
                    cache.pop(k)
            for end in ENDS:
                self._systems.pop((migration_id, end), None)
            mine = [self._endpoints.pop(k) for k in list(self._endpoints) if k[0] == migration_id]
            still_used = {e.cache_key for e in self._endpoints.values()}
        for endpoint in mine:
            if endpoint.cache_key not in still_used:
                self.engines.release(endpoint)

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
        self.engines.dispose_all()
        self.staging.close()
        self.db.dispose()
