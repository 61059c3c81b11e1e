"""What the API tests share: a test client on a fresh app, and how they read its answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from etl_tasks.publisher import RecordingPublisher
from etl_tasks.settings import Settings
from etl_tasks.tokens import create_token

Spec = dict[str, Any]

MIGRATIONS = "/api/v1/migrations"
PLAN_TASK = "baton.plan"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    """A test client on a fresh app, with the publisher it records plan messages in."""

    app: Flask
    client: FlaskClient
    publisher: RecordingPublisher

    def submit(self, spec: object, headers: dict[str, str] | None = None) -> TestResponse:
        return self.client.post(MIGRATIONS, json=spec, headers=headers or {})

    def submit_raw(self, data: str | bytes, content_type: str | None) -> TestResponse:
        return self.client.post(MIGRATIONS, data=data, content_type=content_type)

    def created(self, spec: Spec, headers: dict[str, str] | None = None) -> str:
        resp = self.submit(spec, headers)
        assert resp.status_code == 201, resp.get_data(as_text=True)
        return str(resp.get_json()["id"])

    def ids(self, query: str = "", headers: dict[str, str] | None = None) -> list[str]:
        resp = self.client.get(MIGRATIONS + query, headers=headers or {})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return [m["id"] for m in resp.get_json()["items"]]

    def control(
        self, migration_id: str, action: str, headers: dict[str, str] | None = None
    ) -> TestResponse:
        return self.client.post(f"{MIGRATIONS}/{migration_id}/{action}", headers=headers or {})

    def plans(self) -> list[str]:
        """The migration ids of every plan message published so far."""
        assert all(task == PLAN_TASK for task, _, _ in self.publisher.sent)
        return [str(kwargs["migration_id"]) for _, _, kwargs in self.publisher.sent]

    def token(self, role: str, name: str | None = None) -> str:
        return create_token(self.app.extensions["baton"].db, name or f"test-{role}", role)


def make_api(settings: Settings) -> Api:
    publisher = RecordingPublisher()
    app = create_app(settings, publisher=publisher)
    return Api(app, app.test_client(), publisher)


def error_body(resp: TestResponse, status: int) -> dict[str, Any]:
    """The JSON error of an answer with ``status``: at least a non-empty ``error``."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert isinstance(body, dict)
    assert isinstance(body["error"], str) and body["error"]
    return body
