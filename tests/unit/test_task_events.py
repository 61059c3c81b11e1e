"""BATON_TASK_EVENTS: Celery's task events, off unless switched on (for Flower)."""

from __future__ import annotations

import pytest

from etl_tasks.settings import Settings
from worker.celery_app import celery_config


def test_task_events_are_off_by_default_and_on_with_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BATON_TASK_EVENTS", raising=False)
    off = celery_config(Settings())
    assert (off["worker_send_task_events"], off["task_send_sent_event"]) == (False, False)
    on = celery_config(Settings(task_events="on"))
    assert (on["worker_send_task_events"], on["task_send_sent_event"]) == (True, True)
