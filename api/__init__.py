"""Baton's HTTP API: a Flask app factory over the domain in ``etl_tasks``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from api.preflight_gate import PreflightGate
from api.throttle import AuthThrottle
from etl_tasks.boundary.policy import Boundary
from etl_tasks.boundary.sealing import Sealer
from etl_tasks.publisher import Publisher
from etl_tasks.settings import Settings, load_settings
from etl_tasks.state.db import StateDB


@dataclass
class BatonExtension:
    """What every request handler needs, injected once per app."""

    settings: Settings
    db: StateDB
    publisher: Publisher
    boundary: Boundary  # what a spec may reach (docs/security.md)
    sealer: Sealer | None  # seals specs' endpoints; None without BATON_SECRET_KEYS
    preflight_gate: PreflightGate
    throttle: AuthThrottle


def create_app(settings: Settings | None = None, publisher: Publisher | None = None) -> Flask:
    """Build the API; settings and publisher are injected (tests pass their own)."""
    from api.dashboard import register_dashboard
    from api.errors import register_error_handlers
    from api.headers import register_security_headers
    from api.metrics import register_metrics
    from api.routes import (
        migrations,
        register_converters,
        retention,
        specs,
        system,
        tokens,
        verifications,
    )
    from api.routes import replay as replay_routes

    settings = settings or load_settings()
    if publisher is None:
        from worker.celery_app import CeleryPublisher, create_celery

        publisher = CeleryPublisher(create_celery(settings))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["baton"] = BatonExtension(
        settings,
        StateDB(settings.database_url),
        publisher,
        Boundary.from_settings(settings),
        Sealer.from_text(settings.secret_keys),
        PreflightGate(settings.preflight_concurrency, settings.preflight_timeout_s),
        AuthThrottle(settings),
    )
    # The client address (what failed authentications are counted by) is the peer's,
    # or the one the trusted proxies say they saw: X-Forwarded-For, and nothing else.
    app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
        app.wsgi_app, x_for=settings.trusted_proxy_hops, x_proto=0, x_host=0, x_port=0, x_prefix=0
    )
    register_error_handlers(app)
    register_security_headers(app)
    register_metrics(app, app.extensions["baton"].db, settings.metrics_cache_s)
    register_converters(app)
    app.register_blueprint(migrations.bp)
    app.register_blueprint(verifications.bp)
    app.register_blueprint(system.bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(specs.bp)
    app.register_blueprint(retention.bp)
    app.register_blueprint(replay_routes.bp)
    register_dashboard(app, settings)
    return app
