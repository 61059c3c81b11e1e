"""A plain install (a wheel, no extras, no source tree) runs every process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


#: What a wheel is never built from: a ``build/`` folder left by an earlier build would
#: put files removed since (a renamed migration) back into the wheel.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    ".*cache",
    "__pycache__",
    ".baton*",
    "node_modules",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    tree = tmp_path_factory.mktemp("tree") / "baton"
    shutil.copytree(ROOT, tree, ignore=NOT_SOURCE)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(tree)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("baton-*.whl")
    return path


def test_the_wheel_ships_the_state_db_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "etl_tasks/state/migrations/env.py" in names
    assert "etl_tasks/state/migrations/script.py.mako" in names
    assert any(n.startswith("etl_tasks/state/migrations/versions/0001_") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "baton = ops.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_wheel_ships_the_dashboard(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("htmx.min.js", "htmx-ext-sse.js", "dashboard.css", "LICENSE.htmx.txt"):
        assert f"api/static/{name}" in names
    for name in ("base.html", "migration.html", "_progress.html", "sign_in.html"):
        assert f"api/dashboard/templates/{name}" in names


def test_db_upgrade_runs_from_the_wheel_in_another_folder(wheel: Path, tmp_path: Path) -> None:
    # Given the wheel's contents alone on the path (dependencies from this environment)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "BATON_DATABASE_URL": f"sqlite:///{work / 'state.db'}",
    }
    code = (
        "import etl_tasks, sys; assert etl_tasks.__file__.startswith(sys.argv[1]), "
        "etl_tasks.__file__; from ops.cli import main; main(['db', 'upgrade'])"
    )
    # When `baton db upgrade` runs from another folder
    result = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then the schema is created from the migrations inside the package
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
    assert (work / "state.db").stat().st_size > 0
