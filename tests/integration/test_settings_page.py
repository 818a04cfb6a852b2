"""The settings page in a real Chromium, by role and label: add a session through the form
(inline validation first), log in inside the dialog's live view, Save, Active; Save while
logged out; Revoke and Delete with a confirmation; the keyboard stays in the dialog;
another user's link, a forged CSRF token and another user's session are refused;
Japanese labels."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from producers.http.i18n import LABELS
from schema.settings import Settings
from tests.support.api import service_headers
from tests.support.logins import PASSWORD
from tests.support.workers import own_ports
from workers.dev.fixture_site import FixtureSite
from workers.dev.liveview_user import log_in_to_fixture_site
from workers.dev.processes import WorkerProcess, run_worker
from workers.dev.scratch import purge_queue
from workers.dev.settings_page import SettingsPageUser

pytestmark = pytest.mark.integration

EN = LABELS["en"]


@pytest.fixture(autouse=True, scope="module")
def patient_expectations() -> Iterator[None]:
    """The machine may be busy (2 cores shared by everything): wait longer than 5 s."""
    expect.set_options(timeout=20_000)
    yield
    expect.set_options(timeout=5_000)


@pytest.fixture(scope="module")
def page_capture_worker(
    worker_settings: Settings, api_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A capture worker whose live view may be framed by the settings page."""
    settings = own_ports(
        worker_settings,
        capture_timeout=timedelta(seconds=60),
        frame_ancestors=f"http://127.0.0.1:{api_settings.api_port}",
    )
    log_path = tmp_path_factory.mktemp("page-capture") / "worker.log"
    purge_queue(settings.amqp_url, settings.queue("capture"))  # captures earlier tests left
    with run_worker(settings, ["capture"], log_path) as worker:
        yield worker


async def api_call(
    api_url: str, method: str, path: str, *, actor: str | None = None, body: Any = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, api_url + path, headers=service_headers(actor), json=body) as resp,
    ):
        return resp.status, await resp.json()


async def ui_link(api_url: str, user: str, lang: str | None = None) -> str:
    body = {"user_id": user} | ({"lang": lang} if lang else {})
    status, data = await api_call(api_url, "POST", "/v1/ui-links", body=body)
    assert status == 201, data
    return str(data["url"])


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    yield ctx
    await ctx.close()


async def page_for(
    context: BrowserContext, browser: Browser, api_url: str, user: str
) -> SettingsPageUser:
    person = SettingsPageUser(page=await context.new_page(), browser=browser)
    await person.open(await ui_link(api_url, user))
    return person


def new_user(site: FixtureSite) -> str:
    name = f"pat-{secrets.token_hex(3)}"
    site.add_user(name, PASSWORD)
    return name


@pytest.fixture
def user(site: FixtureSite) -> str:
    """A new user of the fixture site."""
    return new_user(site)


@pytest.fixture
async def person(
    context: BrowserContext, browser: Browser, api_url: str, user: str
) -> SettingsPageUser:
    """``user`` on their settings page."""
    return await page_for(context, browser, api_url, user)


@pytest.mark.timeout(240)
async def test_add_log_in_in_the_dialog_save_and_see_active(
    api_url: str,
    page_capture_worker: WorkerProcess,
    browse_worker: WorkerProcess,
    site: FixtureSite,
    user: str,
    person: SettingsPageUser,
) -> None:
    page = person.page
    await expect(page.get_by_text(EN["no_sessions"])).to_be_visible()

    # Inline validation: a bad URL and a bad glob say why, and nothing is sent.
    dialog = await person.fill_form(
        label="Fixture", start_url="fixture.example/app", pattern="/login**"
    )
    await person.button("open_login_window", dialog).click()
    await expect(dialog.get_by_text(EN["error_url"])).to_be_visible()
    await expect(dialog.get_by_text(EN["error_pattern"])).to_be_visible()
    await expect(dialog.get_by_label(EN["start_url"], exact=True)).to_be_focused()
    assert (await api_call(api_url, "GET", "/v1/sessions", actor=user))[1]["sessions"] == []

    await dialog.get_by_label(EN["start_url"], exact=True).fill(site.url("/app"))
    await dialog.get_by_label(EN["logged_in_selector"], exact=True).fill("#whoami")
    await dialog.get_by_label(EN["login_url_pattern"], exact=True).fill(site.url("/login") + "**")
    await person.button("open_login_window", dialog).click()
    await expect(person.login_dialog()).to_be_visible()
    await person.wait_for_capture_state("capture_open")

    live = await person.live_view()
    await log_in_to_fixture_site(live, site.url("/login?next=/app"), user, PASSWORD)
    await person.save()
    await person.wait_for_capture_state("capture_saved")
    await expect(person.login_dialog()).to_be_hidden(timeout=10_000)
    await person.wait_for_status("Fixture", "status_active")
    await expect(person.row("Fixture").get_by_text(site.host)).to_be_visible()

    # The platform's backend browses with it over HTTP.
    status, sessions = await api_call(api_url, "GET", "/v1/sessions", actor=user)
    session_id = sessions["sessions"][0]["id"]
    task_id = f"t-{secrets.token_hex(3)}"
    await api_call(api_url, "POST", "/v1/tasks", actor=user, body={"task_id": task_id})
    status, result = await api_call(
        api_url,
        "POST",
        "/v1/browse",
        actor=user,
        body={
            "task_id": task_id,
            "session_id": session_id,
            "url": site.url("/app"),
            "timeout_s": 60,
        },
    )
    assert status == 200 and result["outcome"] == "ok", result
    assert user in (result["text"] or "")


@pytest.mark.timeout(180)
async def test_save_while_logged_out_says_not_logged_in(
    page_capture_worker: WorkerProcess, site: FixtureSite, person: SettingsPageUser
) -> None:
    await person.add_session(
        label="Not yet",
        start_url=site.url("/app"),
        selector="#whoami",
        pattern=site.url("/login") + "**",
    )
    await person.wait_for_capture_state("capture_open")
    await person.live_view()
    await person.save()
    await person.wait_for_capture_state("capture_not_logged_in")
    await expect(person.button("save", person.login_dialog())).to_be_enabled()

    await person.button("cancel", person.login_dialog()).click()
    await expect(person.login_dialog()).to_be_hidden()
    await person.wait_for_status("Not yet", "status_pending")


async def add_by_api(api_url: str, user: str, label: str, site: FixtureSite) -> str:
    status, created = await api_call(
        api_url,
        "POST",
        "/v1/sessions",
        actor=user,
        body={"label": label, "start_url": site.url("/app"), "logged_in_selector": "#whoami"},
    )
    assert status == 201, created
    await api_call(api_url, "POST", f"/v1/captures/{created['capture_id']}/cancel", actor=user)
    return str(created["session_id"])


async def test_revoke_and_delete_ask_first(
    api_url: str, site: FixtureSite, browser: Browser, context: BrowserContext, user: str
) -> None:
    await add_by_api(api_url, user, "First", site)
    await add_by_api(api_url, user, "Second", site)
    person = await page_for(context, browser, api_url, user)
    page = person.page

    await person.button("revoke", person.row("First")).click()
    confirm = page.get_by_role("alertdialog", name=EN["confirm_revoke_title"])
    await expect(confirm).to_be_visible()
    await person.button("cancel", confirm).click()
    await person.wait_for_status("First", "status_pending")

    await person.button("revoke", person.row("First")).click()
    await person.button("revoke", confirm).click()
    await person.wait_for_status("First", "status_revoked")
    await expect(person.button("relogin", person.row("First"))).to_have_count(0)

    await person.button("delete", person.row("Second")).click()
    confirm = page.get_by_role("alertdialog", name=EN["confirm_delete_title"])
    await expect(confirm.get_by_text("Second", exact=False)).to_be_visible()
    await person.button("delete", confirm).click()
    await expect(person.row("Second")).to_have_count(0)
    _, listed = await api_call(api_url, "GET", "/v1/sessions", actor=user)
    assert [s["label"] for s in listed["sessions"]] == ["First"]


async def test_keyboard_stays_in_the_dialog_and_escape_returns(person: SettingsPageUser) -> None:
    page = person.page
    add = person.button("add_site_session")
    await add.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=EN["add_site_session"])
    await expect(dialog.get_by_label(EN["label"], exact=True)).to_be_focused()
    for _ in range(12):
        await page.keyboard.press("Tab")
        assert await dialog.evaluate("(d) => d.contains(document.activeElement)")
    for _ in range(3):
        await page.keyboard.press("Shift+Tab")
        assert await dialog.evaluate("(d) => d.contains(document.activeElement)")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(add).to_be_focused()


async def test_another_users_link_and_sessions_are_refused(
    api_url: str, site: FixtureSite, browser: Browser, context: BrowserContext
) -> None:
    alice, mallory = new_user(site), new_user(site)
    alices = await add_by_api(api_url, alice, "Alice's", site)

    # A link for mallory edited to say alice: the signature no longer matches.
    link = await ui_link(api_url, mallory)
    token = link.split("token=")[1]
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    payload["u"] = alice
    forged_payload = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    page = await context.new_page()
    response = await page.goto(link.replace(token.split(".")[0], forged_payload))
    assert response is not None and response.status == 403
    await expect(page.get_by_role("alert")).to_have_text(EN["link_refused"])
    # No cookie was set, so the page itself refuses too.
    response = await page.goto(api_url + "/ui/")
    assert response is not None and response.status == 401

    # Mallory's own page cannot see or touch alice's session.
    person = await page_for(context, browser, api_url, mallory)
    await expect(person.page.get_by_text(EN["no_sessions"])).to_be_visible()
    answers = await person.page.evaluate(
        """async (id) => {
            const csrf = JSON.parse(document.getElementById("bs-config").textContent).csrf;
            const call = async (method, path) => {
                const r = await fetch(path, {method, headers: {"X-CSRF-Token": csrf}});
                return [r.status, (await r.json()).error?.code];
            };
            return [await call("GET", `/v1/sessions/${id}`),
                    await call("POST", `/v1/sessions/${id}/revoke`),
                    await call("DELETE", `/v1/sessions/${id}`)];
        }""",
        alices,
    )
    assert answers == [[403, "NOT_OWNER"]] * 3
    _, session = await api_call(api_url, "GET", f"/v1/sessions/{alices}", actor=alice)
    assert session["status"] == "pending"


async def test_a_forged_csrf_token_is_refused(
    api_url: str, site: FixtureSite, user: str, person: SettingsPageUser
) -> None:
    answers = await person.page.evaluate(
        """async (url) => {
            const body = JSON.stringify({label: "x", start_url: url, logged_in_selector: "#a"});
            const post = async (headers) => {
                const r = await fetch("/v1/sessions", {method: "POST", body,
                    headers: {"Content-Type": "application/json", ...headers}});
                return [r.status, (await r.json()).error?.code];
            };
            return [await post({"X-CSRF-Token": "forged"}), await post({})];
        }""",
        site.url("/app"),
    )
    assert answers == [[403, "CSRF_REJECTED"]] * 2
    _, listed = await api_call(api_url, "GET", "/v1/sessions", actor=user)
    assert listed["sessions"] == []


async def test_japanese_labels_by_query_and_accept_language(
    api_url: str, browser: Browser, user: str
) -> None:
    ja = LABELS["ja"]
    ctx = await browser.new_context(locale="ja-JP")
    try:
        page: Page = await ctx.new_page()
        await page.goto(await ui_link(api_url, user))
        await expect(page.get_by_role("button", name=ja["add_site_session"])).to_be_visible()
        assert await page.evaluate("document.documentElement.lang") == "ja"
        await page.goto(api_url + "/ui/?lang=en")
        await expect(page.get_by_role("button", name=EN["add_site_session"])).to_be_visible()
    finally:
        await ctx.close()


async def test_page_headers_allow_only_the_platform_to_frame_it(api_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(api_url + "/ui/") as resp:
        policy = resp.headers["Content-Security-Policy"]
        referrer = resp.headers.get("Referrer-Policy")
    assert referrer == "no-referrer"  # as the page's own meta tag says
    assert "frame-ancestors 'none'" in policy  # no platform origin configured in this run
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
