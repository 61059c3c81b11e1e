"""The operators' dashboard (docs/operators.md): pages at ``/``, signed in with a token."""

from __future__ import annotations

from flask import Flask

from etl_tasks.settings import Settings


def register_dashboard(app: Flask, settings: Settings) -> None:
    from api.dashboard.pages import bp
    from api.dashboard.session import configure_sessions

    configure_sessions(app, settings)
    app.register_blueprint(bp)
