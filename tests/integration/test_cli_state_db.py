"""Commands run from a folder with no Baton in it say where they looked and create nothing;
the state DB's default is one known folder, not the working one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from etl_tasks.settings import Settings
from ops import exit_codes
from ops.embedded import free_port
from tests.harness import run_baton


def _bare_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.pop("XDG_STATE_HOME", None)
    return {**env, "HOME": str(home)}


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def test_commands_in_an_empty_folder_say_where_they_looked_and_create_nothing(
    tmp_path: Path,
) -> None:
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    env = _bare_env(home)
    api = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # `baton status` names the API it asked and how to point it elsewhere
    status = run_baton("status", env={**env, "BATON_API_URL": api}, cwd=here, timeout=60)
    assert status.returncode == exit_codes.UNAVAILABLE, status
    assert f"cannot reach the API at {api} (BATON_API_URL" in status.stderr
    # A command that reads the state DB names the file it looked for, in the known folder
    expected = home / ".local" / "state" / "baton" / "state.db"
    tokens = run_baton("token", "list", env=env, cwd=here, timeout=60)
    assert tokens.returncode == exit_codes.UNAVAILABLE, tokens
    assert f"no state DB at {expected}" in tokens.stderr and "BATON_DATABASE_URL" in tokens.stderr
    drain = run_baton("drain", "w1@nowhere", env=env, cwd=here, timeout=60)
    assert drain.returncode == exit_codes.UNAVAILABLE and str(expected) in drain.stderr
    # And nothing was created, here or in the known folder
    assert _files(here) == [] and _files(home) == []


def test_the_default_state_db_lives_in_one_known_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert Settings().database_url == f"sqlite:///{tmp_path}/.local/state/baton/state.db"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert Settings().database_url == f"sqlite:///{tmp_path}/xdg/baton/state.db"
    monkeypatch.setenv("BATON_HOME", str(tmp_path / "b"))
    assert Settings().database_url == f"sqlite:///{tmp_path}/b/state.db"
    monkeypatch.setenv("BATON_DATABASE_URL", "postgresql://db/baton")
    assert Settings().database_url == "postgresql://db/baton"
