"""Unit tests for etl_tasks.settings (defaults, BATON_* variables, checks) and etl_tasks.logs."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from etl_tasks.logs import (
    CELERY_TASK_LOGGERS,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    quiet_celery_task_lines,
)
from etl_tasks.settings import Settings, default_home, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BATON_* variable of the machine or another test leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("BATON_"):
            monkeypatch.delenv(name)


# --- settings: defaults --------------------------------------------------------------------

# CONTRACT.md, "Configuration (environment)": variable → (attribute, default)
CONTRACT_DEFAULTS: dict[str, tuple[str, Any]] = {
    "BATON_BROKER_URL": ("broker_url", "redis://127.0.0.1:6379/0"),
    # not relative to the working folder: $XDG_STATE_HOME/baton, else ~/.local/state/baton
    "BATON_DATABASE_URL": ("database_url", f"sqlite:///{default_home() / 'state.db'}"),
    "BATON_STAGING_URL": ("staging_url", None),
    "BATON_STEP_BUDGET_S": ("step_budget_s", 2),
    "BATON_WORKER_HTTP_PORT": ("worker_http_port", 0),
    "BATON_MAX_BODY_BYTES": ("max_body_bytes", 1_048_576),
    "BATON_API_URL": ("api_url", "http://127.0.0.1:8080"),
    "BATON_AUTH": ("auth", "on"),
    "BATON_API_TOKEN": ("api_token", None),
}


@pytest.mark.parametrize(
    ("attr", "default"), CONTRACT_DEFAULTS.values(), ids=list(CONTRACT_DEFAULTS)
)
def test_defaults_match_the_contract(attr: str, default: Any) -> None:
    assert getattr(Settings(), attr) == default


def test_default_timings_are_consistent() -> None:
    s = Settings()

    assert s.step_budget_s < s.lease_s < s.visibility_timeout_s
    assert s.retry_backoff_s <= s.retry_backoff_max_s


def test_staging_defaults_to_the_redis_broker() -> None:
    assert Settings().effective_staging_url == "redis://127.0.0.1:6379/0"


# --- settings: environment -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "attr", "expected"),
    [
        ("BATON_BROKER_URL", "redis://broker:6380/2", "broker_url", "redis://broker:6380/2"),
        ("BATON_DATABASE_URL", "postgresql://db/state", "database_url", "postgresql://db/state"),
        ("BATON_STAGING_URL", "redis://staging/1", "staging_url", "redis://staging/1"),
        ("BATON_KEY_PREFIX", "acme:", "key_prefix", "acme:"),
        ("BATON_STEP_BUDGET_S", "0.5", "step_budget_s", 0.5),
        ("BATON_WORKER_HTTP_PORT", "9100", "worker_http_port", 9100),
        ("BATON_MAX_BODY_BYTES", "4096", "max_body_bytes", 4096),
        ("BATON_API_URL", "https://baton.example", "api_url", "https://baton.example"),
        ("BATON_AUTH", "off", "auth", "off"),
        ("BATON_API_TOKEN", "tok-123", "api_token", "tok-123"),
        ("BATON_LOG_FORMAT", "json", "log_format", "json"),
        ("BATON_PLAN_AHEAD", "3", "plan_ahead", 3),
        ("baton_max_attempts", "9", "max_attempts", 9),
    ],
    ids=lambda v: v if isinstance(v, str) and v.upper().startswith("BATON_") else "",
)
def test_environment_is_read(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attr: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, value)

    assert getattr(load_settings(), attr) == expected


def test_explicit_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATON_API_URL", "http://from-env")
    monkeypatch.setenv("BATON_AUTH", "off")

    s = load_settings(api_url="http://explicit")

    assert (s.api_url, s.auth) == ("http://explicit", "off")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BATON_AUTH", "maybe"),
        ("BATON_STEP_BUDGET_S", "0"),
        ("BATON_STEP_BUDGET_S", "soon"),
        ("BATON_MAX_BODY_BYTES", "-1"),
        ("BATON_WORKER_HTTP_PORT", "70000"),
        ("BATON_LOG_FORMAT", "xml"),
        ("BATON_MAX_ATTEMPTS", "0"),
    ],
)
def test_invalid_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError):
        load_settings()


# --- settings: cross-field checks ----------------------------------------------------------

LEASE_VS_BUDGET = "BATON_LEASE_S must be longer than BATON_STEP_BUDGET_S"
VISIBILITY_VS_LEASE = "BATON_VISIBILITY_TIMEOUT_S must be longer than BATON_LEASE_S"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lease_s": 2.0}, LEASE_VS_BUDGET),
        ({"lease_s": 1.0}, LEASE_VS_BUDGET),
        ({"step_budget_s": 30.0}, LEASE_VS_BUDGET),
        ({"visibility_timeout_s": 30}, VISIBILITY_VS_LEASE),
        ({"lease_s": 400.0}, VISIBILITY_VS_LEASE),
    ],
)
def test_lease_must_exceed_step_budget_and_visibility_the_lease(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)


def test_lease_check_applies_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATON_STEP_BUDGET_S", "45")

    with pytest.raises(ValidationError, match=LEASE_VS_BUDGET):
        load_settings()

    monkeypatch.setenv("BATON_LEASE_S", "60")
    assert load_settings().lease_s == 60


def test_settings_are_frozen() -> None:
    s = Settings()

    with pytest.raises(ValidationError):
        s.step_budget_s = 10  # type: ignore[misc]


@pytest.mark.parametrize(
    ("broker", "staging", "expected"),
    [
        ("redis://b:6379/0", None, "redis://b:6379/0"),
        ("rediss://b:6380/0", None, "rediss://b:6380/0"),
        ("unix:///run/redis.sock", None, "unix:///run/redis.sock"),
        ("redis://b:6379/0", "redis://s:6379/3", "redis://s:6379/3"),
        ("amqp://guest@rabbit//", "redis://s:6379/3", "redis://s:6379/3"),
    ],
)
def test_effective_staging_url(broker: str, staging: str | None, expected: str) -> None:
    assert Settings(broker_url=broker, staging_url=staging).effective_staging_url == expected


@pytest.mark.parametrize("staging", [None, ""], ids=["unset", "empty"])
def test_non_redis_broker_needs_a_staging_url(staging: str | None) -> None:
    with pytest.raises(ValueError, match="BATON_STAGING_URL"):
        Settings(broker_url="amqp://guest@rabbit//", staging_url=staging)


# --- logs ----------------------------------------------------------------------------------


def emit(
    formatter: logging.Formatter,
    logger_name: str,
    msg: str,
    *args: object,
    exc: BaseException | None = None,
    **extra: Any,
) -> str:
    """What ``formatter`` writes for one INFO record of ``logger_name`` (no trailing newline)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(logger_name)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        logger.info(msg, *args, exc_info=exc_info, extra=extra)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1, "one line per record"
    return text[:-1]


def emit_json(logger_name: str, msg: str, *args: object, **extra: Any) -> dict[str, Any]:
    body = json.loads(emit(JsonFormatter(), logger_name, msg, *args, **extra))
    assert isinstance(body, dict)
    return body


TEXT = "%(levelname)s %(name)s: %(message)s"


def test_json_line_carries_message_and_ids() -> None:
    body = emit_json("etl_tasks.planning", "planned %d chunks", 3, migration_id="m-1", chunk_id=7)

    assert body["message"] == "planned 3 chunks"
    assert body["level"] == "INFO"
    assert body["logger"] == "etl_tasks.planning"
    assert body["migration_id"] == "m-1"
    assert body["chunk_id"] == 7
    assert set(body) == {"ts", "level", "logger", "message", "migration_id", "chunk_id"}


def test_json_ts_is_iso_seconds() -> None:
    ts = emit_json("etl_tasks.x", "hi")["ts"]

    assert len(ts) == len("2024-01-02T03:04:05") and ts[10] == "T"


def test_json_stays_one_line_and_stringifies_odd_values() -> None:
    body = emit_json(
        "etl_tasks.steps",
        "line one\nline two",
        amount=Decimal("1.50"),
        where={"k": [1, 2]},
        complete=True,
    )

    assert body["message"] == "line one\nline two"
    assert (body["amount"], body["where"], body["complete"]) == ("1.50", {"k": [1, 2]}, True)


def test_json_carries_the_exception() -> None:
    try:
        raise RuntimeError("target down")
    except RuntimeError as err:
        line = emit(JsonFormatter(), "etl_tasks.steps.load", "load failed", exc=err, chunk_id=3)

    body = json.loads(line)
    assert body["chunk_id"] == 3
    assert "RuntimeError: target down" in body["exc"]
    assert "Traceback" in body["exc"]


@pytest.mark.parametrize(
    "name", ["etl_tasks", "etl_tasks.sweeper", "worker.probe", "api.app", "ops.cli"]
)
def test_baton_loggers_carry_extra_fields(name: str) -> None:
    assert emit_json(name, "hi", migration_id="m")["migration_id"] == "m"
    line = emit(TextFormatter(TEXT), name, "hi", migration_id="m")

    assert line == f"INFO {name}: hi migration_id=m"


@pytest.mark.parametrize("name", ["celery.worker", "kombu", "sqlalchemy.engine", "root"])
def test_other_loggers_carry_no_extra_fields(name: str) -> None:
    assert "migration_id" not in emit_json(name, "hi", migration_id="m")
    assert emit(TextFormatter(TEXT), name, "hi", migration_id="m") == f"INFO {name}: hi"


@pytest.mark.parametrize("name", ["apiary", "workers_x", "opsgenie"])
def test_loggers_that_only_share_a_prefix_are_not_ours(name: str) -> None:
    assert "migration_id" not in emit_json(name, "hi", migration_id="m")


def test_text_appends_key_value_pairs_in_order() -> None:
    line = emit(
        TextFormatter(TEXT),
        "etl_tasks.planning",
        "planned %d chunks",
        3,
        migration_id="m-1",
        stream_id=2,
        chunk_id=7,
    )

    assert line == (
        "INFO etl_tasks.planning: planned 3 chunks migration_id=m-1 stream_id=2 chunk_id=7"
    )


def test_text_without_extra_fields_is_the_plain_line() -> None:
    assert emit(TextFormatter(TEXT), "etl_tasks.x", "plain") == "INFO etl_tasks.x: plain"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, with its handlers and level restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_baton", False)]
    yield root
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.parametrize(("fmt", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_configure_logging_installs_one_handler(
    root_logger: logging.Logger, fmt: str, formatter: type[logging.Formatter]
) -> None:
    before = list(root_logger.handlers)
    settings = Settings(log_format=fmt, log_level="warning")

    configure_logging(settings)
    configure_logging(settings)

    added = [h for h in root_logger.handlers if h not in before]
    assert len(added) == 1
    assert type(added[0].formatter) is formatter
    assert root_logger.level == logging.WARNING


def test_a_newer_version_also_consumes_the_older_queues() -> None:
    from etl_tasks.constants import consumed_queues

    # Given version 2, which still consumes version 1's messages
    queues = consumed_queues((2, 1))
    # Then its own queues come first, in step priority, then version 1's
    assert queues == (
        "baton.v2.control",
        "baton.v2.load",
        "baton.v2.transform",
        "baton.v2.extract",
        "baton.v2.verify",
        "baton.v1.control",
        "baton.v1.load",
        "baton.v1.transform",
        "baton.v1.extract",
        "baton.v1.verify",
    )


@pytest.mark.parametrize("name", CELERY_TASK_LOGGERS)
def test_celery_lines_per_task_show_at_debug_only(name: str) -> None:
    logger = logging.getLogger(name)
    try:
        quiet_celery_task_lines(logging.INFO)
        assert not logger.isEnabledFor(logging.INFO)
        assert logger.isEnabledFor(logging.ERROR)  # a task that raised still shows
        quiet_celery_task_lines(logging.DEBUG)
        root = logging.getLogger().level
        assert logger.getEffectiveLevel() == root
    finally:
        logger.setLevel(logging.NOTSET)
