"""Fixtures of the browser tests: headless Chromium, driven by Playwright, on a real
``baton api`` (with its live process) whose migrations a driver in this process moves.

Without Chromium (``/usr/bin/chromium``) or Playwright these tests are skipped, except
in CI (``CI=true``), where they fail: CI installs both (``.ci/run``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from etl_tasks.settings import Settings
from ops.embedded import free_port
from tests import services
from tests.api_process import ApiProcess
from tests.harness import Driver

CHROMIUM = os.environ.get("BATON_TEST_CHROMIUM", "/usr/bin/chromium")
#: Set to a folder (docs/img) to save the pages' screenshots there for the docs.
SCREENSHOTS = os.environ.get("BATON_TEST_SCREENSHOTS")


def _missing(what: str) -> None:
    if services.IN_CI:
        pytest.fail(f"{what} is required in CI", pytrace=False)
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"Chromium ({CHROMIUM})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@dataclass
class System:
    api: ApiProcess
    driver: Driver

    def submit(self, spec: dict[str, Any]) -> str:
        token = self.api.token("operator", "submitter")
        resp = requests.post(
            f"{self.api.url}/api/v1/migrations",
            json=spec,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        migration_id = str(resp.json()["id"])
        # the API sent its plan message to Redis, where no worker listens: the driver
        # delivers it here instead, one message at a time
        self.driver.publisher.queue.append(("baton.plan", {"migration_id": migration_id}))
        return migration_id


@pytest.fixture
def system(
    tmp_path: Path,
    redis_server: str,
    key_prefix: str,
    pg_state_url: str,
    make_settings: Callable[..., Settings],
) -> Iterator[System]:
    api = ApiProcess(
        tmp_path,
        redis_server,
        key_prefix,
        database_url=pg_state_url,
        BATON_LIVE_PORT=str(free_port()),
        BATON_LIVE_POLL_S="0.5",
    )
    driver = Driver(make_settings(database_url=pg_state_url))
    try:
        api.wait_ready()
        yield System(api, driver)
    finally:
        driver.close()
        api.close()


def sign_in(page: Any, system: System, role: str) -> None:
    page.goto(f"{system.api.url}/")
    page.fill("#token", system.api.token(role, f"{role}-in-browser"))
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)
