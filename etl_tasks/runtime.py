"""Per-process context for steps: settings, state DB, staging, engines and caches.

Built once per worker process (after any fork) and passed to every step.
Specs never change after submit, so what is derived from them is cached.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from sqlalchemy import Table
from sqlalchemy import exc as sa_exc

from etl_tasks.bindings import StreamBinding, bind_stream
from etl_tasks.connectors.engines import EngineCache
from etl_tasks.connectors.sql_source import reflect_table
from etl_tasks.connectors.sql_target import SqlTarget, error_reason, is_transient_error
from etl_tasks.errors import NotFound, PermanentError, TransientError
from etl_tasks.publisher import Publisher
from etl_tasks.settings import Settings
from etl_tasks.spec import MigrationSpec
from etl_tasks.staging import StagingStore
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Migration


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
        self.engines = EngineCache(max_engines=16, pool_size=2)
        self._lock = threading.RLock()
        self._specs: dict[str, MigrationSpec] = {}
        self._bindings: dict[tuple[str, str], StreamBinding] = {}
        self._targets: dict[tuple[str, str], SqlTarget] = {}
        self._broker: redis.Redis | None = None

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
            spec = MigrationSpec.model_validate(mig.spec)
        with self._lock:
            self._specs[migration_id] = spec
        return spec

    def source_url(self, migration_id: str) -> str:
        return self.spec(migration_id).source.resolve()

    def target_url(self, migration_id: str) -> str:
        return self.spec(migration_id).target.resolve()

    def binding(self, migration_id: str, stream: str) -> StreamBinding:
        key = (migration_id, stream)
        with self._lock:
            if key in self._bindings:
                return self._bindings[key]
        spec = self.spec(migration_id)
        table = self._reflect(self.source_url(migration_id), spec.stream(stream).source_table)
        binding = bind_stream(spec, stream, table)
        with self._lock:
            self._bindings[key] = binding
        return binding

    def target(self, migration_id: str, stream: str) -> SqlTarget:
        key = (migration_id, stream)
        with self._lock:
            if key in self._targets:
                return self._targets[key]
        spec = self.spec(migration_id)
        binding = self.binding(migration_id, stream)
        url = self.target_url(migration_id)
        table = self._reflect(url, spec.stream(stream).target_table)
        tkey = binding.target_key or [c.name for c in table.primary_key.columns]
        target = SqlTarget(
            self.engines.get(url), table, tkey, spec.stream(stream).write, binding.identity_key
        )
        with self._lock:
            self._targets[key] = target
        return target

    def _reflect(self, url: str, name: str) -> Table:
        try:
            return reflect_table(self.engines.reader(url), name)
        except sa_exc.NoSuchTableError as exc:
            raise PermanentError(f"table {name!r} does not exist") from exc
        except sa_exc.SQLAlchemyError as exc:
            if is_transient_error(exc):
                raise TransientError(f"cannot reach {name!r}: {error_reason(exc)}") from exc
            raise

    def release(self, migration_id: str) -> None:
        """Forget a finished migration and close its engines when no other uses them."""
        with self._lock:
            spec = self._specs.pop(migration_id, None)
            for cache in (self._bindings, self._targets):
                for k in [k for k in cache if k[0] == migration_id]:
                    cache.pop(k)
            still_used = {u for m in self._specs.values() for u in _urls(m)}
        if spec is not None:
            for url in _urls(spec):
                if url not in still_used:
                    self.engines.release(url)

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
        self.engines.dispose_all()
        self.staging.close()
        self.db.dispose()


def _urls(spec: MigrationSpec) -> list[str]:
    urls: list[Any] = []
    for endpoint in (spec.source, spec.target):
        try:
            urls.append(endpoint.resolve())
        except Exception:  # an unset variable: nothing was opened for it
            continue
    return urls
