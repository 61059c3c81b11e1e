"""``baton sse``: the dashboard's live updates, in a process of their own (see api/live.py)."""

from __future__ import annotations

import ipaddress

import click

from etl_tasks.settings import load_settings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("sse")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=int)
def sse(host: str, port: int) -> None:
    """Serve the dashboard's live updates (server-sent events); `baton api` starts it too."""
    settings = load_settings()
    if settings.auth == "off" and not _loopback(host):
        raise click.UsageError("BATON_AUTH=off is only allowed when it listens on loopback")
    if settings.auth == "on" and not settings.session_key:
        raise click.UsageError(
            "set BATON_SESSION_KEY to the API's, or no session can open a stream"
        )
    from api.live import create_live_app
    from etl_tasks.logs import configure_logging
    from ops.gunicorn_app import serve_live

    configure_logging(settings)
    serve_live(create_live_app(settings), f"{host}:{port}", settings.live_max_streams)
