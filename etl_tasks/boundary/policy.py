"""The boundary as one object: built from the settings, applied to a spec's endpoints."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from etl_tasks.boundary.envrefs import EnvPolicy
from etl_tasks.boundary.identity import OwnStores
from etl_tasks.boundary.network import HostPolicy
from etl_tasks.boundary.paths import PathPolicy
from etl_tasks.boundary.sql_urls import (
    DEFAULT_PORTS,
    SqlEndpoint,
    Timeouts,
    backend_of,
    check_server_url,
    parse_sql_url,
    sqlite_file,
)
from etl_tasks.errors import BoundaryError
from etl_tasks.settings import Settings
from etl_tasks.spec import Endpoint

SQLITE_HEADER = b"SQLite format 3\x00"
#: SQLite writes a new database's header with its first transaction, so a file another
#: worker has just created is empty for a moment: an empty file is read again for this
#: long before it counts as "not a database" (a file left empty, e.g. a configuration
#: file, is still refused, only later).
EMPTY_FILE_GRACE_S = 1.0
CONNECT_TIMEOUT_S = 10.0  # a worker's connect timeout to a source or target


def worker_timeouts(settings: Settings) -> Timeouts:
    """A step's connections: connect quickly, and never wait for an answer past most of the
    lease (a step stuck longer would lose its chunk to another worker anyway)."""
    return Timeouts(
        connect_s=min(CONNECT_TIMEOUT_S, settings.lease_s / 3), io_s=settings.lease_s * 0.8
    )


@dataclass(frozen=True)
class Boundary:
    """What this process lets a spec reach."""

    env: EnvPolicy
    hosts: HostPolicy
    paths: PathPolicy
    own: OwnStores

    @classmethod
    def from_settings(cls, settings: Settings) -> Boundary:
        redis = [settings.broker_url]
        if settings.staging_url:
            redis.append(settings.staging_url)
        return cls(
            env=EnvPolicy.parse(settings.env_allowed, auth_on=settings.auth == "on"),
            hosts=HostPolicy.parse(settings.allowed_hosts),
            paths=PathPolicy.parse(settings.allowed_paths),
            own=OwnStores.of(settings.database_url, redis),
        )

    def url_of(self, endpoint: Endpoint) -> str:
        """The endpoint's URL text, reading ``url_env`` through the allow-list."""
        if endpoint.url is not None:
            return endpoint.url
        assert endpoint.url_env is not None
        return self.env.resolve(endpoint.url_env)

    def sql_endpoint(self, endpoint: Endpoint, timeout_s: float) -> SqlEndpoint:
        """The checked endpoint; raises :class:`BoundaryError` before anything is contacted
        (name resolution aside, bounded by ``timeout_s``)."""
        try:
            return self._sql_endpoint(endpoint, timeout_s)
        except BoundaryError as exc:
            if endpoint.url_env is not None and exc.field == "url":
                exc.field = "url_env"  # the spec has no 'url' to point at
            raise

    def _sql_endpoint(self, endpoint: Endpoint, timeout_s: float) -> SqlEndpoint:
        url = parse_sql_url(self.url_of(endpoint))
        if backend_of(url) == "sqlite":
            path = self._sqlite_path(sqlite_file(url))
            return SqlEndpoint(url.set(database=str(path)), sqlite_path=path)
        check_server_url(url)
        assert url.host is not None
        if endpoint.url_env is not None:
            self._check_env_host(endpoint.url_env, url.host)
        port = int(url.port or DEFAULT_PORTS[backend_of(url)])
        address = self.hosts.pick(url.host, port, timeout_s)
        self.own.check_address(address, port, timeout_s)
        return SqlEndpoint(url, address=address, port=port)

    def _check_env_host(self, name: str, host: str) -> None:
        hosts = self.env.hosts_for(name)
        if hosts is not None and host.lower().rstrip(".") not in hosts:
            raise BoundaryError(
                f"environment variable {name} may not be used with this host "
                "(BATON_ENV_ALLOWED binds it to others)",
                "url_env",
            )

    def _sqlite_path(self, file: str) -> Path:
        path = self.paths.check(file)
        self.own.check_file(path)
        if path.exists():
            if not path.is_file():
                raise BoundaryError(f"{file} is not a file", "url")
            if _header(path) != SQLITE_HEADER:
                raise BoundaryError(f"{file} exists and is not a SQLite database", "url")
        return path


def _header(path: Path) -> bytes:
    """The file's first bytes, waiting up to ``EMPTY_FILE_GRACE_S`` while it is empty."""
    deadline = time.monotonic() + EMPTY_FILE_GRACE_S
    while True:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
        if head or time.monotonic() >= deadline:
            return head
        time.sleep(0.02)
