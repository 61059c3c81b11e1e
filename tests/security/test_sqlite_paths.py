"""SQLite endpoints stay inside BATON_ALLOWED_PATHS, and only ever open SQLite files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.data import build_source, sqlite_url
from tests.harness import ROOT
from tests.security.conftest import Live, errors_of


@pytest.fixture
def fenced(live_factory: Any, tmp_path: Path) -> tuple[Live, Path, str]:
    data = tmp_path / "data"
    data.mkdir()
    legacy = sqlite_url(data / "legacy.db")
    build_source(legacy, customers=5, orders=1)
    return live_factory(allowed_paths=str(data)), data, legacy


def _spec(legacy: str, target: str) -> dict[str, Any]:
    return {
        "name": "paths",
        "source": {"url": legacy},
        "target": {"url": target},
        "streams": [{"source_table": "Customer", "target_table": "c", "create_target": True}],
    }


def test_a_new_database_outside_the_allowed_folders_is_refused(
    fenced: tuple[Live, Path, str], tmp_path: Path
) -> None:
    live, _, legacy = fenced
    etc = tmp_path / "etc"
    etc.mkdir()
    errors = errors_of(live.submit(_spec(legacy, sqlite_url(etc / "baton.db"))))
    assert "outside the allowed folders" in errors["target/url"]
    assert list(etc.iterdir()) == []
    assert live.migrations() == 0


def test_an_existing_file_is_never_turned_into_a_database(fenced: tuple[Live, Path, str]) -> None:
    live, data, legacy = fenced
    for name, content in (("empty.conf", b""), ("app.conf", b"[main]\nsecret = 1\n")):
        config = data / name
        config.write_bytes(content)
        errors = errors_of(live.submit(_spec(legacy, sqlite_url(config))))
        assert "not a SQLite database" in errors["target/url"]
        assert config.read_bytes() == content


def test_a_relative_path_is_refused_and_nothing_appears_in_the_working_folder(
    fenced: tuple[Live, Path, str],
) -> None:
    live, _, legacy = fenced
    errors = errors_of(live.submit(_spec(legacy, "sqlite:///relative-target.db")))
    assert "absolute path" in errors["target/url"]
    assert not (ROOT / "relative-target.db").exists()


def test_a_symlink_out_of_the_allowed_folder_is_refused(
    fenced: tuple[Live, Path, str], tmp_path: Path
) -> None:
    live, data, _ = fenced
    outside = tmp_path / "outside.db"
    build_source(sqlite_url(outside), customers=1, orders=1)
    (data / "link.db").symlink_to(outside)
    errors = errors_of(live.submit(_spec(sqlite_url(data / "link.db"), sqlite_url(data / "t.db"))))
    assert "outside the allowed folders" in errors["source/url"]
