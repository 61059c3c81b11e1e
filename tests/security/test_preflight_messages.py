"""Preflight's connection errors are a few fixed messages: they must not map the network.

("connection refused" against "timeout" against "invalid response to SSL
negotiation" told an operator which internal hosts exist and what runs there.)
Timing still tells something; the host allow-list is the real protection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.data import build_source, sqlite_url
from tests.security.conftest import Live, errors_of
from tests.security.listeners import Listener, closed_port

FIXED = {
    "cannot connect to the target",
    "the target did not answer in 3 s",
    "the target refused the credentials",
}


@pytest.fixture
def listeners() -> Iterator[dict[str, Listener]]:
    made = {"silent": Listener(), "garbage": Listener(b"HTTP/1.1 400 Bad Request\r\n\r\n")}
    yield made
    for listener in made.values():
        listener.close()


def _spec(tmp_path: Path, target: str) -> dict[str, Any]:
    legacy = sqlite_url(tmp_path / "legacy.db")
    if not (tmp_path / "legacy.db").exists():
        build_source(legacy, customers=2, orders=1)
    return {
        "name": "probe",
        "source": {"url": legacy},
        "target": {"url": target},
        "streams": [{"source_table": "Customer", "target_table": "c", "create_target": True}],
    }


def test_every_connection_failure_reads_as_a_fixed_message(
    live: Live, listeners: dict[str, Listener], tmp_path: Path
) -> None:
    targets = {
        "refused": (f"postgresql://u@127.0.0.1:{closed_port()}/x", "cannot connect to the target"),
        "silent": (
            f"postgresql://u@127.0.0.1:{listeners['silent'].port}/x",
            "the target did not answer in 3 s",
        ),
        "garbage": (
            f"postgresql://u@127.0.0.1:{listeners['garbage'].port}/x",
            "cannot connect to the target",
        ),
        "mysql garbage": (
            f"mysql://u@127.0.0.1:{listeners['garbage'].port}/x",
            "cannot connect to the target",
        ),
        "no such host": ("postgresql://u@no-such-host.invalid/x", None),
        "bad credentials": (
            "mysql://nobody-here@127.0.0.1:3306/test",
            "the target refused the credentials",
        ),
    }
    for how, (url, expected) in targets.items():
        errors = errors_of(live.submit(_spec(tmp_path, url)))
        message = errors["target/url"]
        assert message in FIXED, (how, message)
        if expected is not None:
            assert message == expected, how
    assert live.migrations() == 0


def test_a_refused_variable_reads_the_same_whether_or_not_it_is_set(
    live_factory: Any, tmp_path: Path
) -> None:
    live = live_factory(env={"HOME_DB_URL": "postgresql://u@127.0.0.1/x"})
    answers = []
    for name in ("HOME_DB_URL", "NEVER_SET_DB_URL"):
        spec = _spec(tmp_path, "sqlite:////unused.db")
        spec["target"] = {"url_env": name}
        message = errors_of(live.submit(spec))["target/url_env"]
        answers.append(message.replace(name, "NAME"))
    assert answers[0] == answers[1]
