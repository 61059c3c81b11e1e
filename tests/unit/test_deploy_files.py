"""The Dockerfile and docker-compose.yml keep the properties a safe deploy depends on.

No Docker engine is needed: both files are parsed as text. Each test names the
property it guards and why it matters (DESIGN.md, "What the anchors taught").
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from etl_tasks.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"

SHUTDOWN_MARGIN_S = 5.0  # time beyond one step for the pool's own exit and slow I/O
DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- the Dockerfile, read line by line ------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` stage: its instructions in order, as (KEYWORD, rest of the line)."""

    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def logical_lines(text: str) -> list[str]:
    """Instructions with their ``\\`` continuations joined; comments and blanks dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # a comment inside a continued instruction does not end it
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending.rstrip())
    return lines


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            stages.append(Stage(base=rest.split()[0]))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(rest: str) -> list[str]:
    """The JSON array of an exec-form instruction; fails on the shell form."""
    try:
        value = json.loads(rest)
    except json.JSONDecodeError:
        pytest.fail(f"not exec form (a JSON array): {rest}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def env_of(stage: Stage) -> dict[str, str]:
    """Every ``ENV`` of a stage, in the ``KEY=value`` form (later ones win)."""
    env: dict[str, str] = {}
    for rest in stage.all("ENV"):
        for item in shlex.split(rest):
            key, sep, value = item.partition("=")
            assert sep, f"use ENV KEY=value, not the legacy 'ENV KEY value': {rest}"
            env[key] = value
    return env


@pytest.fixture(scope="module")
def final_stage() -> Stage:
    stages = parse_dockerfile(DOCKERFILE.read_text())
    assert len(stages) >= 2, "the Dockerfile builds the wheel in a stage of its own"
    return stages[-1]


# --- docker-compose.yml -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in compose["services"], f"docker-compose.yml has no {name!r} service"
    svc = compose["services"][name]
    assert isinstance(svc, dict)
    return svc


def environment(svc: dict[str, Any]) -> dict[str, Any]:
    """A service's environment, from either the mapping or the ``KEY=value`` list form."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    assert isinstance(env, dict)
    return env


def command_words(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def parse_duration(text: str) -> float:
    """Compose's durations ("30s", "1m", "1m30s", "500ms") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def all_baton_variables(compose: dict[str, Any]) -> dict[str, Any]:
    """``BATON_*`` variables anywhere in the file: the shared anchor and every service."""
    found: dict[str, Any] = {}
    for key, value in compose.items():
        if key.startswith("x-") and isinstance(value, dict):
            found.update({k: v for k, v in value.items() if str(k).startswith("BATON_")})
    for svc in compose["services"].values():
        found.update({k: v for k, v in environment(svc).items() if k.startswith("BATON_")})
    return found


SETTINGS_VARIABLES = {env_name(name) for name in Settings.model_fields}
PROBE_TOKEN = "BATON_PROBE_TOKEN"
# Compose reads a value like this from the shell or an .env file when it starts.
FROM_THE_ENVIRONMENT = re.compile(r"^\$\{BATON_PROBE_TOKEN(?::?[-?][^}]*)?\}$")


# --- the tests ----------------------------------------------------------------------------


def test_durations_parse() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("1m") == 60
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_duration("30")


def test_entrypoint_is_tini_without_group_signals_in_exec_form(final_stage: Stage) -> None:
    # -g would send SIGTERM to the whole process group: Celery's main process must get
    # it alone, or it cannot finish the step in hand (a warm shutdown).
    rest = final_stage.last("ENTRYPOINT")
    assert rest is not None, "the final stage has no ENTRYPOINT"
    words = exec_form(rest)
    assert Path(words[0]).name == "tini", words
    assert "-g" not in words, words
    assert words[1:] == ["--", "baton"], words


def test_default_command_serves_the_api_on_every_interface(final_stage: Stage) -> None:
    rest = final_stage.last("CMD")
    assert rest is not None
    words = exec_form(rest)
    assert words[0] == "api" and "0.0.0.0" in words and "8080" in words, words


def test_runs_as_a_non_root_user(final_stage: Stage) -> None:
    user = final_stage.last("USER")
    assert user is not None, "the final stage never leaves root"
    name = user.split(":")[0]
    assert name not in ("root", "0"), user


def test_installs_only_the_wheel_without_test_extras() -> None:
    text = " ".join(logical_lines(DOCKERFILE.read_text()))
    assert "pip wheel" in text
    assert "[test]" not in text


def test_worker_probe_listens_on_every_interface_and_ports_are_exposed(
    final_stage: Stage,
) -> None:
    env = env_of(final_stage)
    assert env.get("BATON_WORKER_HTTP_HOST") == "0.0.0.0"
    exposed = {p.split("/")[0] for rest in final_stage.all("EXPOSE") for p in rest.split()}
    assert {"8080", env["BATON_WORKER_HTTP_PORT"]} <= exposed


def test_the_probe_token_is_never_baked_into_the_image() -> None:
    # Anyone who pulls the image could read it (docker history, docker inspect).
    for stage in parse_dockerfile(DOCKERFILE.read_text()):
        assert PROBE_TOKEN not in env_of(stage), stage.base
        for keyword in ("ARG", "LABEL", "RUN"):
            assert not any(PROBE_TOKEN in rest for rest in stage.all(keyword)), keyword


def test_healthcheck_asks_the_api(final_stage: Stage) -> None:
    rest = final_stage.last("HEALTHCHECK")
    assert rest is not None
    assert "urllib" in rest and "http://127.0.0.1:8080/healthz" in rest


def test_every_baton_variable_is_a_setting(compose: dict[str, Any], final_stage: Stage) -> None:
    # Settings ignore unknown variables, so a typo would silently keep the default.
    names = set(all_baton_variables(compose)) | {
        k for k in env_of(final_stage) if k.startswith("BATON_")
    }
    assert names, "no BATON_* variable found"
    unknown = sorted(names - SETTINGS_VARIABLES)
    assert not unknown, f"not fields of etl_tasks.settings.Settings: {unknown}"


def test_baton_values_are_strings(compose: dict[str, Any]) -> None:
    # YAML 1.1 reads an unquoted on/off/yes/no as a boolean: BATON_AUTH: on is True.
    for name, value in all_baton_variables(compose).items():
        assert isinstance(value, str), f"{name}: quote {value!r}"


def test_every_baton_service_gets_the_shared_environment(compose: dict[str, Any]) -> None:
    shared = compose.get("x-baton-env")
    assert isinstance(shared, dict) and shared
    for name in ("migrate", "api", "worker"):
        env = environment(service(compose, name))
        assert {k: env.get(k) for k in shared} == shared, name


def test_grace_period_outlasts_a_step(compose: dict[str, Any]) -> None:
    worker = service(compose, "worker")
    default = Settings.model_fields["step_budget_s"].default
    budget = float(environment(worker).get("BATON_STEP_BUDGET_S", default))
    grace = parse_duration(str(worker["stop_grace_period"]))
    assert grace > budget + SHUTDOWN_MARGIN_S, (grace, budget)


def test_redis_never_evicts(compose: dict[str, Any]) -> None:
    words = command_words(service(compose, "redis"))
    assert "--maxmemory-policy" in words
    assert words[words.index("--maxmemory-policy") + 1] == "noeviction"


def test_commands_are_arguments_of_the_baton_entrypoint(compose: dict[str, Any]) -> None:
    # The entrypoint already says `baton`; a command starting with it would run `baton baton`.
    for name in ("migrate", "api", "worker"):
        words = command_words(service(compose, name))
        assert words and words[0] != "baton", (name, words)
    assert command_words(service(compose, "worker"))[0] == "worker"


def test_migrate_runs_first_and_the_others_wait_for_it(compose: dict[str, Any]) -> None:
    assert command_words(service(compose, "migrate"))[:2] == ["db", "upgrade"]
    for name in ("api", "worker"):
        depends = service(compose, name).get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert depends.get("migrate", {}).get("condition") == "service_completed_successfully"


def test_api_requires_tokens(compose: dict[str, Any]) -> None:
    assert environment(service(compose, "api")).get("BATON_AUTH") == "on"


def test_worker_healthcheck_uses_its_own_probe_port(
    compose: dict[str, Any], final_stage: Stage
) -> None:
    worker = service(compose, "worker")
    port = environment(worker).get("BATON_WORKER_HTTP_PORT") or env_of(final_stage).get(
        "BATON_WORKER_HTTP_PORT"
    )
    assert port and port != "0", "a healthcheck needs a fixed probe port"
    test = worker.get("healthcheck", {}).get("test")
    assert test, "the worker overrides the image's API healthcheck"
    text = " ".join(test) if isinstance(test, list) else str(test)
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/readyz", text)
    assert match, text
    assert match.group(1) == str(port)


def test_the_workers_probe_token_comes_from_the_environment(compose: dict[str, Any]) -> None:
    # `docker compose exec worker baton drain --local` sends what the worker checks; the
    # value is the operator's (shell or .env), never one written in the file.
    token = environment(service(compose, "worker")).get(PROBE_TOKEN)
    assert isinstance(token, str) and FROM_THE_ENVIRONMENT.match(token), token
    for name, value in all_baton_variables(compose).items():
        if name == PROBE_TOKEN:
            assert FROM_THE_ENVIRONMENT.match(str(value)), value
    assert PROBE_TOKEN not in (compose.get("x-baton-env") or {}), "only the workers need it"
    # Without the variable, `docker compose up` still starts (an empty token: the probe
    # refuses drains, SIGTERM drains as always); a required `${…:?…}` would stop it.
    assert "?" not in token, token
