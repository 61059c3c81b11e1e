"""The operators' dashboard: server-rendered pages at ``/``, htmx for the live parts.

Pages are read like the JSON API reads (``etl_tasks.views`` and
``etl_tasks.dashboard_views``); their live updates come from the separate
live process (:mod:`api.live`), never from these request threads.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, TooManyRequests
from werkzeug.wrappers import Response

from api.dashboard.fragments import INCLUDE, fragment, refreshed
from api.dashboard.session import (
    check_csrf,
    csrf_token,
    page,
    page_principal,
    sign_in,
    sign_out,
)
from api.downloads import WRITERS, quarantine_download
from api.headers import page_policy
from etl_tasks import control, dashboard_views, replay, views
from etl_tasks.errors import Conflict, NotFound
from etl_tasks.masking import mask_quarantined, mask_reason
from etl_tasks.outbox import NOTIFY_ALL
from etl_tasks.publisher import publish_plan
from etl_tasks.retention import purge_quarantine, quarantine_holds_values
from etl_tasks.state.enums import MigrationState
from etl_tasks.tokens import allows, authenticate
from etl_tasks.verification.report import latest_report
from etl_tasks.workers import list_workers

bp = Blueprint("dashboard", __name__, template_folder="templates")

PER_PAGE = 25
CONTROLS = {
    "pause": control.pause,
    "resume": control.resume,
    "cancel": control.cancel,
    "retry": control.retry,
}
LIVE_PORT = "BATON_LIVE_PORT"  # app.config: where `baton api` started the live process


def _ext() -> Any:
    return current_app.extensions["baton"]


def live_url() -> str | None:
    """Where this page's browser reaches the live process's ``/events``; ``None``: no live."""
    settings = _ext().settings
    if settings.live == "off":
        return None
    if settings.live_url:
        return str(settings.live_url)
    port = current_app.config.get(LIVE_PORT)
    if not port:
        return None
    host = urlsplit(f"//{request.host}").hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{request.scheme}://{host}:{port}/events"


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else None


@bp.after_request
def _page_headers(response: Response) -> Response:
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = page_policy(_origin(live_url()))
    return response


@bp.app_context_processor
def _page_context() -> dict[str, Any]:
    principal = g.get("principal")
    return {
        "principal": principal,
        "can_control": principal is not None and allows(principal.role, "operator"),
        "can_purge": principal is not None and allows(principal.role, "admin"),
        "csrf_token": csrf_token,
        "shown_input": INCLUDE,
        "live_url": live_url,
        "auth_off": _ext().settings.auth == "off",
    }


@bp.get("/sign-in")
def sign_in_form() -> ResponseReturnValue:
    if page_principal() is not None:
        return redirect(url_for("dashboard.index"))
    return render_template("sign_in.html", next=_next_path(), error=None)


@bp.post("/sign-in")
def sign_in_submit() -> ResponseReturnValue:
    check_csrf()
    ext = _ext()
    token = (request.form.get("token") or "").strip()
    principal = authenticate(ext.db, token) if token else None
    if principal is None:
        retry_after = ext.throttle.failed(request.remote_addr or "unknown")
        if retry_after is not None:
            raise TooManyRequests(
                f"too many failed sign-ins from this address; retry in {retry_after} s",
                retry_after=retry_after,
            )
        return render_template(
            "sign_in.html", next=_next_path(), error="unknown or revoked token"
        ), 401
    sign_in(principal)
    return redirect(_next_path())


def _next_path() -> str:
    """Where to go after signing in: a path of this site only."""
    target = request.values.get("next") or "/"
    parts = urlsplit(target)
    # "//host", and "/\\host" or "/<tab>/host" (which browsers read as "//host"), lead off
    # this site: no backslash, blank or control character anywhere
    odd = any(c == "\\" or ord(c) <= 0x20 or ord(c) == 0x7F for c in target)
    if odd or parts.scheme or parts.netloc or not target.startswith("/") or target[1:2] == "/":
        return "/"
    return target


@bp.post("/sign-out")
@page("viewer")
def sign_out_submit() -> ResponseReturnValue:
    sign_out()
    return redirect(url_for("dashboard.sign_in_form"))


def _state_filter() -> str | None:
    state = request.args.get("state") or None
    if state is not None and state not in set(MigrationState):
        raise BadRequest(f"unknown state {state!r}")
    return state


def _page_number() -> int:
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        raise BadRequest("page must be a number") from None


@bp.get("/")
@page("viewer")
def index() -> ResponseReturnValue:
    listing = dashboard_views.migrations_page(_ext().db, _state_filter(), _page_number(), PER_PAGE)
    table, _ = fragment("_migrations_table.html", listing=listing)
    return render_template(
        "migrations.html", listing=listing, table=table, states=list(MigrationState)
    )


@bp.get("/fragments/migrations")
@page("viewer")
def migrations_fragment() -> ResponseReturnValue:
    listing = dashboard_views.migrations_page(_ext().db, _state_filter(), _page_number(), PER_PAGE)
    return refreshed("_migrations_table.html", listing=listing)


def _detail(migration_id: str) -> dict[str, Any]:
    """What a migration's page shows below its progress, masked for viewers;
    :class:`NotFound` for an unknown id."""
    db = _ext().db
    operator = allows(g.principal.role, "operator")
    view = views.migration_view(db, migration_id)
    chunks = dashboard_views.chunk_map(db, migration_id)
    quarantine = views.list_quarantine(db, migration_id, limit=100)
    errors = [c for c in chunks if c["error"]]
    events = dashboard_views.list_events(db, migration_id)
    if not operator:  # an error's or event's text may quote a value
        events = [{**e, "message": mask_reason(str(e["message"]))} for e in events]
        quarantine = [mask_quarantined(item) for item in quarantine]
        errors = [{**c, "error": mask_reason(str(c["error"]))} for c in errors]
        if view["error"]:
            view["error"] = mask_reason(str(view["error"]))
    try:
        report: dict[str, Any] | None = latest_report(db, migration_id, masked=not operator)
    except NotFound:
        report = None
    # Purging is for admins, once the migration can quarantine no more rows
    purgeable = (
        allows(g.principal.role, "admin")
        and view["state"] in NOTIFY_ALL
        and quarantine_holds_values(db, migration_id)
    )
    return {
        "m": view,
        "purgeable": purgeable,
        "chunks": chunks,
        "errors": errors[:50],
        "quarantine": quarantine,
        "events": events,
        "report": report,
    }


@bp.get("/migrations/<id:migration_id>")
@page("viewer")
def migration(migration_id: str) -> ResponseReturnValue:
    try:
        detail = _detail(migration_id)
    except NotFound:
        return render_template("not_found.html", what=f"migration {migration_id}"), 404
    progress = dashboard_views.migration_progress(_ext().db, migration_id)
    shown, _ = fragment("_migration_detail.html", **detail)
    return render_template(
        "migration.html", p=progress, controls=CONTROLS, m=detail["m"], detail=shown
    )


@bp.get("/migrations/<id:migration_id>/fragments/detail")
@page("viewer")
def migration_detail_fragment(migration_id: str) -> ResponseReturnValue:
    try:
        return refreshed("_migration_detail.html", **_detail(migration_id))
    except NotFound:
        return "", 404


@bp.post("/migrations/<id:migration_id>/<action>")
@page("operator")
def act(migration_id: str, action: str) -> ResponseReturnValue:
    if action not in CONTROLS:
        raise BadRequest(f"unknown control {action!r}")
    ext = _ext()
    try:
        CONTROLS[action](ext.db, migration_id, g.principal.actor)
    except Conflict as exc:
        flash(str(exc), "error")
    except NotFound:
        return render_template("not_found.html", what=f"migration {migration_id}"), 404
    else:
        if action in ("resume", "retry"):
            publish_plan(ext.publisher, migration_id)
        flash(f"{action}: done", "notice")
    return redirect(url_for("dashboard.migration", migration_id=migration_id))


@bp.get("/migrations/<id:migration_id>/quarantine.<fmt>")
@page("viewer")
def quarantine_file(migration_id: str, fmt: str) -> ResponseReturnValue:
    """Every quarantined row as CSV or JSON Lines, masked for a viewer, as the API sends it."""
    if fmt not in WRITERS:
        raise BadRequest(f"unknown format {fmt!r}: csv or jsonl")
    masked = not allows(g.principal.role, "operator")
    try:
        return quarantine_download(_ext().db, migration_id, fmt, masked)
    except NotFound:
        return render_template("not_found.html", what=f"migration {migration_id}"), 404


@bp.post("/migrations/<id:migration_id>/quarantine/replay")
@page("operator")
def replay_quarantine(migration_id: str) -> ResponseReturnValue:
    """Read the quarantined rows again through the spec as it is (:mod:`etl_tasks.replay`)."""
    ext = _ext()
    try:
        started = replay.replay(ext.db, migration_id, g.principal.actor)
    except Conflict as exc:
        flash(str(exc), "error")
    except NotFound:
        return render_template("not_found.html", what=f"migration {migration_id}"), 404
    else:
        publish_plan(ext.publisher, migration_id)
        flash(f"replay: {started.rows} quarantined rows are read again", "notice")
    return redirect(url_for("dashboard.migration", migration_id=migration_id))


PURGE_CONFIRMATION = "purge"  # the form's ``confirm`` value: the box was ticked


@bp.post("/migrations/<id:migration_id>/quarantine/purge")
@page("admin")
def purge_quarantined_values(migration_id: str) -> ResponseReturnValue:
    """Remove a finished migration's quarantined values and keys for good
    (:func:`etl_tasks.retention.purge_quarantine`), once the form confirms it."""
    if request.form.get("confirm") != PURGE_CONFIRMATION:
        flash("purge: nothing removed; tick the box to confirm", "error")
        return redirect(url_for("dashboard.migration", migration_id=migration_id))
    try:
        purged = purge_quarantine(_ext().db, migration_id, g.principal.actor)
    except Conflict as exc:
        flash(str(exc), "error")
    except NotFound:
        return render_template("not_found.html", what=f"migration {migration_id}"), 404
    else:
        flash(f"purge: the values of {purged} quarantined rows were removed", "notice")
    return redirect(url_for("dashboard.migration", migration_id=migration_id))


@bp.get("/workers")
@page("viewer")
def workers() -> ResponseReturnValue:
    items = list_workers(_ext().db)
    return render_template("workers.html", workers=items)
