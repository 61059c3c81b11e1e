"""The one settings object, read from ``BATON_*`` environment variables.

Every process (API, worker, CLI) builds it once at start-up and passes it
explicitly. Each default is documented beside its value, with its unit.
Tests shrink the timing settings instead of sleeping in real time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from etl_tasks import __version__

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def default_home() -> Path:
    """``BATON_HOME``'s default: ``$XDG_STATE_HOME/baton``, else ``~/.local/state/baton``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "baton"


class Settings(BaseSettings):
    """Configuration for every Baton process."""

    model_config = SettingsConfigDict(env_prefix="BATON_", frozen=True, extra="ignore")

    broker_url: str = "redis://127.0.0.1:6379/0"  # Celery broker
    # Where `baton up` keeps its state DB, Redis and logs, whatever the working folder:
    # unset, $XDG_STATE_HOME/baton, else ~/.local/state/baton (see default_home).
    home: str | None = None
    # State DB (SQLAlchemy URL); unset: sqlite:///HOME/state.db, HOME as above.
    database_url: str = ""
    staging_url: str | None = None  # Redis for rows between steps; default: the broker
    key_prefix: str = "baton:"  # prefix of every Redis key Baton writes (broker and staging)
    quorum_queues: bool = False  # RabbitMQ broker: declare Baton's queues as quorum queues

    step_budget_s: float = Field(2.0, gt=0)  # how long one step may take (seconds)
    # PostgreSQL → PostgreSQL streams mapped column for column with identical types travel
    # as COPY text, unparsed; off: every stream takes the parsed path (to compare the two).
    native_copy: bool = True
    # A PostgreSQL table a stream creates gets its primary key once its rows are loaded, as
    # a bulk load builds indexes after the data; off: created with it, as before.
    defer_target_keys: bool = True
    lease_s: float = Field(30.0, gt=0)  # a step's lease; renewed while it works (seconds)
    staging_ttl_s: int = Field(3600, gt=0)  # staged rows expire after this (seconds)
    visibility_timeout_s: int = Field(300, gt=0)  # Redis redelivers unacked messages after this
    max_attempts: int = Field(5, ge=1)  # claims of one step before its chunk fails
    retry_backoff_s: float = Field(1.0, gt=0)  # first wait after a transient error (seconds)
    retry_backoff_max_s: float = Field(30.0, gt=0)  # longest wait between retries (seconds)
    retry_window_s: float = Field(3600.0, gt=0)  # a chunk retries transient errors this long

    sweep_interval_s: float = Field(5.0, gt=0)  # how often a worker runs the sweeper (seconds)
    requeue_after_s: float = Field(30.0, gt=0)  # a queued chunk not started by then is resent
    max_queued_chunks: int = Field(8, ge=1)  # chunks of one migration queued or running at once
    plan_ahead: int = Field(32, ge=1)  # chunks planned and not yet sent, per stream
    # Steps at once on one source or target system (a database server's database, an HTTP
    # API's origin, a folder), across every worker and migration (docs/operations.md).
    max_connections: int = Field(8, ge=1)
    # Systems with limits of their own: comma-separated GLOB=N over a system's label, such as
    # "postgresql://legacy.internal:5432/*=2,https://api.example.com:443=4"; first match wins.
    system_max_connections: str | None = Field(None, pattern=r"^\s*([^=,]+=\d+\s*(,\s*|$))*$")

    worker_concurrency: int = Field(4, ge=1)  # steps one worker runs at once
    # Allocations between two collections of Python's youngest generation in a worker;
    # 0 keeps Python's 700. A chunk allocates tens of thousands of short-lived tuples, and
    # at 700 the collector ran so often that it took half a worker's CPU (docs/operations.md).
    worker_gc_threshold: int = Field(50_000, ge=0)
    # A worker that finishes a chunk's step runs the chunk's next step itself, without a
    # message, when it is not draining (threads and solo pools; docs/architecture.md).
    chain_steps: bool = True
    # Celery pool. threads: fastest warm shutdown; prefork: steps in child processes (a
    # step that crashes its process, or the soft-shutdown variant, can then be cut off).
    # Set it here, not with `-P prefork`: Celery cannot tell that flag from its default.
    worker_pool: Literal["threads", "prefork", "solo"] = "threads"
    worker_http_port: int = Field(0, ge=0, le=65535)  # worker probe port; 0 picks a free one
    worker_heartbeat_s: float = Field(5.0, gt=0)  # how often a worker refreshes its row
    # With REMAP_SIGTERM=SIGQUIT (prefork pool), how long SIGTERM waits before cancelling the
    # steps in flight (seconds). Without REMAP_SIGTERM it has no effect: SIGTERM is a warm
    # shutdown that lets every step finish.
    soft_shutdown_timeout_s: float = Field(0.0, ge=0)

    max_body_bytes: int = Field(1_048_576, gt=0)  # largest API request body (bytes)
    api_url: str = "http://127.0.0.1:8080"  # where the CLI finds the API
    api_token: str | None = None  # the bearer token the CLI sends
    auth: Literal["on", "off"] = "on"  # bearer tokens on the API
    # Preflight as a whole must answer within this (seconds); every connection it opens is
    # bounded by it too (connect, read, name resolution).
    preflight_timeout_s: float = Field(5.0, gt=0)
    # Preflights one API process runs at once; beyond it a submit gets 429 with Retry-After,
    # so endpoints that hang can never hold every request thread.
    preflight_concurrency: int = Field(2, ge=1)
    worker_http_host: str = "127.0.0.1"  # where each worker's probe listens (0.0.0.0 in containers)
    # Required by a worker probe's POST /drain (sent as a bearer token); without it the
    # probe refuses every drain request with 403.
    probe_token: str | None = None

    # What a spec may reach (docs/security.md). Comma-separated lists.
    # Environment variables a spec's *_env fields may name: names or globs, each optionally
    # bound to hosts (NAME@host). Unset: none with auth on, any but BATON_* with auth off.
    env_allowed: str | None = None
    allowed_hosts: str | None = None  # hosts or CIDRs a spec may connect to; unset: any
    allowed_paths: str | None = None  # folders a SQLite (or file) endpoint may be in; unset: any
    # Fernet keys (comma-separated, newest first) sealing a spec's endpoints in the state DB.
    secret_keys: str | None = None
    # Reverse proxies in front of the API whose X-Forwarded-For is believed; 0: none.
    trusted_proxy_hops: int = Field(0, ge=0)
    auth_failures_max: int = Field(20, ge=1)  # failed authentications per client address ...
    auth_failures_window_s: int = Field(60, gt=0)  # ... within this window (seconds), then 429

    # The operators' dashboard (docs/operators.md). Sessions are signed with session_key;
    # unset, `baton api` makes one per run (every sign-in ends when it restarts).
    session_key: str | None = None
    session_hours: float = Field(12.0, gt=0)  # a dashboard sign-in lasts this long (hours)
    live: Literal["on", "off"] = "on"  # `baton api` starts the live-updates process beside it
    live_port: int = Field(0, ge=0, le=65535)  # its port; 0: the API's port + 1
    live_url: str | None = None  # where browsers reach its /events; unset: this host, live_port
    live_poll_s: float = Field(1.0, ge=0.2)  # how often it reads the state DB (seconds)
    live_stream_s: float = Field(300.0, gt=0)  # a stream's longest life; the browser reconnects
    live_max_streams: int = Field(500, ge=1)  # open streams one live process serves (count)

    # Webhooks of finished migrations (a spec's "notify"; docs/operations.md#notifications).
    notify_timeout_s: float = Field(5.0, gt=0)  # one delivery attempt's timeout (seconds)
    notify_backoff_s: float = Field(10.0, gt=0)  # first wait before a retry (seconds)
    notify_backoff_max_s: float = Field(3600.0, gt=0)  # longest wait between retries (seconds)
    notify_give_up_s: float = Field(86400.0, gt=0)  # retried this long, then failed (seconds)
    # Finished migrations' chunks, events, staged rows and quarantined rows are removed this
    # long after they finished, keeping a summary (days); 0 keeps everything forever.
    retention_days: float = Field(30.0, ge=0)

    # Prometheus (docs/operations.md#metrics). Where the API and each worker keep their
    # counters' files, one sub-folder per process, emptied at start; unset: the system's
    # temporary folder.
    metrics_dir: str | None = None
    metrics_cache_s: float = Field(15.0, gt=0)  # the API's state-DB gauges are this old at most
    # Celery task events (for Flower): workers send task-* events, publishers task-sent.
    task_events: Literal["on", "off"] = "off"

    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _default_database(cls, data: Any) -> Any:
        """The state DB defaults to one known folder, never one relative to where a
        command happens to run."""
        if isinstance(data, dict) and not data.get("database_url"):
            home = data.get("home")
            folder = Path(home).expanduser() if home else default_home()
            data = {**data, "database_url": f"sqlite:///{folder / 'state.db'}"}
        return data

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.lease_s <= self.step_budget_s:
            raise ValueError("BATON_LEASE_S must be longer than BATON_STEP_BUDGET_S")
        if self.visibility_timeout_s <= self.lease_s:
            raise ValueError("BATON_VISIBILITY_TIMEOUT_S must be longer than BATON_LEASE_S")
        if not self.staging_url and not self.broker_is_redis:
            raise ValueError("BATON_STAGING_URL (a Redis) is required when the broker is not Redis")
        return self

    @cached_property
    def effective_staging_url(self) -> str:
        """Where staged rows live: ``BATON_STAGING_URL``, else the broker when it is Redis."""
        if self.staging_url:
            return self.staging_url
        if self.broker_is_redis:
            return self.broker_url
        raise ValueError("BATON_STAGING_URL is required when the broker is not Redis")

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(REDIS_SCHEMES)

    def as_env(self) -> dict[str, str]:
        """These settings as ``BATON_*`` variables, for the processes a harness starts.
        ``BATON_API_URL`` only when it was chosen: set, it sends `baton drain` and `baton
        rollout` through the API."""
        return {
            env_name(name): str(value)
            for name, value in self.model_dump().items()
            if value is not None and (name != "api_url" or name in self.model_fields_set)
        }

    @property
    def version(self) -> str:
        return __version__


def env_name(field: str) -> str:
    """The environment variable of a setting: ``step_budget_s`` → ``BATON_STEP_BUDGET_S``."""
    return f"BATON_{field.upper()}"


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``BATON_*`` variables that name no setting: most likely typos."""
    env = os.environ if environ is None else environ
    known = {env_name(name) for name in Settings.model_fields}
    return sorted(
        k
        for k in env
        if k.startswith("BATON_") and k not in known and not k.startswith("BATON_TEST_")
    )


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment, with explicit overrides on top.

    A ``BATON_*`` variable that names no setting is reported (a typo would otherwise
    silently leave a default in force).
    """
    for name in unknown_variables():
        logging.getLogger(__name__).warning("unknown setting %s is ignored", name)
    return Settings(**overrides)  # type: ignore[arg-type]
