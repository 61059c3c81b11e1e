"""The dashboard's pages: sign-in, sessions, CSRF, what each role sees, the content policy."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from werkzeug.test import TestResponse

from etl_tasks.settings import Settings
from tests.harness import Driver
from tests.integration.api_support import MIGRATIONS, Api, Spec, bearer, make_api
from tests.integration.test_api_masking import REASONS, _quarantine_two_rows

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _csrf(resp: TestResponse) -> str:
    match = CSRF.search(resp.get_data(as_text=True))
    assert match, resp.get_data(as_text=True)
    return match.group(1)


def _sign_in(api: Api, role: str) -> str:
    """Sign in with a new token of ``role``; return the session's CSRF token."""
    form = api.client.get("/sign-in")
    resp = api.client.post(
        "/sign-in", data={"token": api.token(role), "csrf": _csrf(form), "next": "/"}
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return _csrf(api.client.get("/"))


def test_a_page_without_a_session_sends_to_sign_in(secured: Api) -> None:
    resp = secured.client.get("/workers")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/sign-in?next=")


def test_signing_in_sets_a_strict_http_only_cookie(secured: Api) -> None:
    form = secured.client.get("/sign-in")
    resp = secured.client.post(
        "/sign-in", data={"token": secured.token("viewer"), "csrf": _csrf(form)}
    )
    assert resp.status_code == 302
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("baton_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure
    page = secured.client.get("/")
    assert page.status_code == 200
    assert "test-viewer (viewer)" in page.get_data(as_text=True)


def test_the_cookie_is_secure_over_tls(secured: Api) -> None:
    form = secured.client.get("/sign-in", base_url="https://localhost")
    resp = secured.client.post(
        "/sign-in",
        data={"token": secured.token("viewer"), "csrf": _csrf(form)},
        base_url="https://localhost",
    )
    assert "Secure" in resp.headers["Set-Cookie"]


def test_a_wrong_token_signs_nobody_in(secured: Api) -> None:
    form = secured.client.get("/sign-in")
    resp = secured.client.post("/sign-in", data={"token": "bt_nope", "csrf": _csrf(form)})
    assert resp.status_code == 401
    assert "unknown or revoked token" in resp.get_data(as_text=True)
    assert secured.client.get("/").status_code == 302


@pytest.mark.parametrize(
    ("target", "lands"),
    [
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/workers", "/workers"),
    ],
)
def test_sign_in_goes_back_only_to_this_site(secured: Api, target: str, lands: str) -> None:
    form = secured.client.get("/sign-in")
    resp = secured.client.post(
        "/sign-in",
        data={"token": secured.token("viewer"), "csrf": _csrf(form), "next": target},
    )
    assert resp.headers["Location"] == lands


def test_a_revoked_token_ends_its_sessions(secured: Api) -> None:
    _sign_in(secured, "viewer")
    assert secured.client.get("/").status_code == 200
    admin = secured.token("admin")
    token_id = secured.client.get("/api/v1/tokens", headers=bearer(admin)).get_json()["items"]
    viewer_id = next(t["id"] for t in token_id if t["role"] == "viewer")
    secured.client.delete(f"/api/v1/tokens/{viewer_id}", headers=bearer(admin))
    assert secured.client.get("/").status_code == 302


def test_a_control_without_the_csrf_token_is_refused(secured: Api, spec: Spec) -> None:
    mid = secured.created(spec, bearer(secured.token("operator")))
    _sign_in(secured, "operator")
    resp = secured.client.post(f"/migrations/{mid}/pause", data={})
    assert resp.status_code == 403
    resp = secured.client.post(f"/migrations/{mid}/pause", data={"csrf": "forged"})
    assert resp.status_code == 403
    state = secured.client.get(
        f"{MIGRATIONS}/{mid}", headers=bearer(secured.token("viewer"))
    ).get_json()["state"]
    assert state != "paused"


def test_an_operator_pauses_from_the_page(secured: Api, spec: Spec) -> None:
    mid = secured.created(spec, bearer(secured.token("operator")))
    csrf = _sign_in(secured, "operator")
    page = secured.client.get(f"/migrations/{mid}").get_data(as_text=True)
    assert 'data-testid="controls"' in page
    resp = secured.client.post(f"/migrations/{mid}/pause", data={"csrf": csrf})
    assert resp.status_code == 302
    view = secured.client.get(f"{MIGRATIONS}/{mid}", headers=bearer(secured.token("viewer")))
    assert view.get_json()["state"] == "paused"
    page = secured.client.get(f"/migrations/{mid}").get_data(as_text=True)
    assert "pause: done" in page
    assert "paused" in page


def test_a_viewer_sees_no_controls_and_masked_rows(secured: Api, spec: Spec) -> None:
    mid = secured.created(spec, bearer(secured.token("operator")))
    _quarantine_two_rows(secured, mid)
    csrf = _sign_in(secured, "viewer")
    page = secured.client.get(f"/migrations/{mid}").get_data(as_text=True)
    assert 'data-testid="controls"' not in page
    assert "bob@example.com" not in page and "31/04/2018" not in page
    assert "Email=***" in page
    # and a control posted anyway is refused
    assert secured.client.post(f"/migrations/{mid}/pause", data={"csrf": csrf}).status_code == 403


def test_only_an_admin_purges_quarantined_values_with_the_token_and_the_box_ticked(
    secured: Api, spec: Spec
) -> None:
    # Given a cancelled migration with two quarantined rows
    operator = bearer(secured.token("operator"))
    mid = secured.created(spec, operator)
    _quarantine_two_rows(secured, mid)
    assert secured.client.post(f"{MIGRATIONS}/{mid}/cancel", headers=operator).status_code == 200
    path = f"/migrations/{mid}/quarantine/purge"

    def rows_held() -> int:
        quarantine = secured.client.get(f"{MIGRATIONS}/{mid}/quarantine", headers=operator)
        return sum(1 for item in quarantine.get_json()["items"] if item["row"])

    # Then an operator is not offered the purge, and a purge posted anyway is refused
    csrf = _sign_in(secured, "operator")
    assert 'data-testid="purge"' not in secured.client.get(f"/migrations/{mid}").get_data(
        as_text=True
    )
    assert secured.client.post(path, data={"csrf": csrf, "confirm": "purge"}).status_code == 403
    # And an admin is offered it, but a post without the CSRF token or the box ticked fails
    assert secured.client.post("/sign-out", data={"csrf": csrf}).status_code == 302
    csrf = _sign_in(secured, "admin")
    assert 'data-testid="purge"' in secured.client.get(f"/migrations/{mid}").get_data(as_text=True)
    assert secured.client.post(path, data={"csrf": "forged", "confirm": "purge"}).status_code == 403
    resp = secured.client.post(path, data={"csrf": csrf}, follow_redirects=True)
    assert "nothing removed" in resp.get_data(as_text=True)
    assert rows_held() == 2
    # When the admin confirms, the values go and the page no longer offers the purge
    resp = secured.client.post(path, data={"csrf": csrf, "confirm": "purge"}, follow_redirects=True)
    assert "purge: the values of 2 quarantined rows were removed" in resp.get_data(as_text=True)
    assert rows_held() == 0
    assert 'data-testid="purge"' not in secured.client.get(f"/migrations/{mid}").get_data(
        as_text=True
    )


def test_an_operator_sees_quarantined_values(secured: Api, spec: Spec) -> None:
    mid = secured.created(spec, bearer(secured.token("operator")))
    _quarantine_two_rows(secured, mid)
    _sign_in(secured, "operator")
    page = secured.client.get(f"/migrations/{mid}").get_data(as_text=True)
    assert "bob@example.com" in page
    assert "31/04/2018" in page and REASONS[0][:9] in page


def test_pages_allow_only_their_own_scripts(secured: Api) -> None:
    _sign_in(secured, "viewer")
    resp = secured.client.get("/")
    policy = resp.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert resp.headers["X-Frame-Options"] == "DENY"
    body = resp.get_data(as_text=True)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", body, re.S)
    assert scripts and all('src="/static/' in attrs and not code.strip() for attrs, code in scripts)
    assert " style=" not in body and " on" + "click=" not in body
    assert secured.client.get("/static/htmx.min.js").status_code == 200


def test_the_json_api_still_wants_a_bearer_token(secured: Api) -> None:
    _sign_in(secured, "admin")  # a session cookie is no credential for the JSON API
    assert secured.client.get(MIGRATIONS).status_code == 401
    ok = secured.client.get(MIGRATIONS, headers=bearer(secured.token("viewer")))
    assert ok.status_code == 200
    assert ok.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert "Set-Cookie" not in ok.headers


def test_the_list_filters_by_state_and_pages(
    make_settings: Callable[..., Settings], spec: Spec
) -> None:
    api = make_api(make_settings())  # auth off: the local admin, no sign-in
    ids = [api.created({**spec, "name": f"m{n}"}) for n in range(27)]
    api.control(ids[0], "pause")
    first = api.client.get("/").get_data(as_text=True)
    assert "page 1 of 2 (27 migrations)" in first
    second = api.client.get("/?page=2").get_data(as_text=True)
    assert second.count("data-migration=") == 2
    paused = api.client.get("/?state=paused").get_data(as_text=True)
    assert paused.count("data-migration=") == 1 and ids[0] in paused
    assert api.client.get("/?state=nonsense").status_code == 400


def test_a_finished_migration_reads_100_percent(api: Api, driver: Driver, spec: Spec) -> None:
    mid = api.created(spec)
    driver.publisher.queue.append(("baton.plan", {"migration_id": mid}))
    driver.run_to_end(mid)
    assert driver.state(mid) == "succeeded"
    page = api.client.get(f"/migrations/{mid}").get_data(as_text=True)
    assert re.search(r'data-testid="percent">100 %', page), page
    cells = re.findall(r'<span class="cell (\w+)" title=', page)
    assert cells and set(cells) == {"done"}
    listing = api.client.get("/").get_data(as_text=True)
    assert "100 %" in listing


def test_the_workers_panel(api: Api) -> None:
    from etl_tasks.workers import WorkerInfo, heartbeat

    db = api.app.extensions["baton"].db
    info = WorkerInfo(name="w1@host", version="9.9.9", host="host", pid=1, probe_url=None)
    heartbeat(db, info, state="draining", in_flight=3, steps_done=7)
    page = api.client.get("/workers").get_data(as_text=True)
    assert "w1@host" in page and "9.9.9" in page and ">3<" in page
    assert "draining" in page and ">yes<" in page


@pytest.mark.parametrize("path", ["/", "/workers", "/sign-in"])
def test_pages_with_auth_off_need_no_sign_in(api: Api, path: str) -> None:
    resp = api.client.get(path)
    assert resp.status_code in (200, 302)


def test_pages_stream_from_the_live_process_and_may_connect_only_there(api: Api) -> None:
    api.app.config["BATON_LIVE_PORT"] = 9999  # as baton api sets it
    resp = api.client.get("/")
    assert 'sse-connect="http://localhost:9999/events"' in resp.get_data(as_text=True)
    policy = resp.headers["Content-Security-Policy"]
    assert "connect-src 'self' http://localhost:9999;" in policy


def test_an_unknown_migration_is_404(api: Api) -> None:
    assert api.client.get("/migrations/nope").status_code == 404
    assert api.client.get("/migrations/nope/fragments/detail").status_code == 404


SHOWN = re.compile(r'<input type="hidden" name="shown" value="([0-9a-f]+)">')


def _shown(html: str) -> str:
    """The digest a page or fragment holds of the live part it shows."""
    match = SHOWN.search(html)
    assert match, html
    return match.group(1)


def test_a_migrations_details_are_sent_again_only_once_changed(api: Api, spec: Spec) -> None:
    mid = api.created(spec)
    shown = _shown(api.client.get(f"/migrations/{mid}").get_data(as_text=True))
    fragment = f"/migrations/{mid}/fragments/detail"
    # A live fetch of what the page shows answers 204: htmx leaves the page as it is
    same = api.client.get(fragment, query_string={"shown": shown})
    assert same.status_code == 204 and same.get_data() == b""
    # Once the migration changed, the fetch sends the new details and their new digest
    api.control(mid, "pause")
    changed = api.client.get(fragment, query_string={"shown": shown})
    assert changed.status_code == 200
    body = changed.get_data(as_text=True)
    assert "pause by local" in body and _shown(body) != shown
    assert api.client.get(fragment, query_string={"shown": _shown(body)}).status_code == 204
    # and a fetch that names no digest (or a stale one) always gets the details
    assert api.client.get(fragment).status_code == 200


def test_the_migrations_list_is_sent_again_only_once_changed(api: Api, spec: Spec) -> None:
    api.created(spec)
    shown = _shown(api.client.get("/?page=1").get_data(as_text=True))
    fragment = "/fragments/migrations"
    same = api.client.get(fragment, query_string={"page": 1, "shown": shown})
    assert same.status_code == 204
    other = api.created({**spec, "name": "another"})
    changed = api.client.get(fragment, query_string={"page": 1, "shown": shown})
    assert changed.status_code == 200 and other in changed.get_data(as_text=True)
