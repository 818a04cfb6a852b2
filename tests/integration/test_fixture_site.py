"""The fixture website, driven by real Chromium: login, what a restore needs, revoke, switches."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from workers.browser.chromium import browser_launch_options, find_chromium
from workers.dev.fixture_site import COOKIE_NAME, FixtureSite
from workers.dev.totp import new_secret, totp

pytestmark = pytest.mark.integration

TIMEOUT_MS = 10_000
BOB_SECRET = new_secret()
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[FixtureSite]:
    async with FixtureSite.start(host="127.0.0.1", port=0) as started:
        started.add_user("alice", "alice-pw")
        started.add_user("bob", "bob-pw", totp_secret=BOB_SECRET)
        yield started


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            headless=True, timeout=30_000, **browser_launch_options(find_chromium())
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(autouse=True)
def reset_switches(site: FixtureSite) -> None:
    site.set_switches(
        require_session_storage=False,
        require_indexeddb=False,
        rotate_cookie=False,
        rotate_local_storage=False,
        reuse_detection=False,
        idle_timeout_s=0.0,
        forget_on_login_page=False,
    )


@asynccontextmanager
async def open_context(browser: Browser, **options: Any) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        await context.close()


async def submit_login(page: Page, user: str, password: str) -> None:
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("#submit")


async def log_in(page: Page, site: FixtureSite, user: str, password: str) -> None:
    """Fill the login form on /app's login redirect and wait until #whoami shows."""
    await page.goto(site.url("/app"))
    await submit_login(page, user, password)
    await expect(page.locator("#whoami")).to_have_text(f"logged in as {user}", timeout=TIMEOUT_MS)


async def alice_logged_in(context: BrowserContext, site: FixtureSite) -> Page:
    """A new page of ``context`` where alice has logged in."""
    page = await context.new_page()
    await log_in(page, site, "alice", "alice-pw")
    return page


async def open_page(context: BrowserContext, site: FixtureSite, path: str = "/app") -> Page:
    """A new page of ``context`` sent to ``path`` (/app)."""
    page = await context.new_page()
    await page.goto(site.url(path))
    return page


async def expect_logged_in(page: Page) -> None:
    await expect(page.locator("#whoami")).to_be_visible(timeout=TIMEOUT_MS)


async def expect_login_page(page: Page, site: FixtureSite) -> None:
    await page.wait_for_url(f"{site.base_url}/login**", timeout=TIMEOUT_MS)
    await expect(page.locator("#username")).to_be_visible(timeout=TIMEOUT_MS)
    assert await page.locator("#whoami").count() == 0


async def expect_state_logged_out(browser: Browser, site: FixtureSite, state: Any) -> None:
    """A browser restored from ``state`` is sent from /app to the login page."""
    async with open_context(browser, storage_state=state) as restored:
        await expect_login_page(await open_page(restored, site), site)


async def sid_cookie(context: BrowserContext) -> str:
    cookies = [c for c in await context.cookies() if c.get("name") == COOKIE_NAME]
    assert len(cookies) == 1
    return cookies[0].get("value", "")


async def expect_new_value_each_reload(page: Page, current: Callable[[], Awaitable[str]]) -> None:
    """Two reloads, each still logged in, each with a ``current()`` value never seen before."""
    seen = {await current()}
    for _ in range(2):
        await page.reload()
        await expect_logged_in(page)
        seen.add(await current())
    assert len(seen) == 3


async def test_not_logged_in_app_answers_302_to_login(site: FixtureSite) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(site.url("/app"), allow_redirects=False) as response,
    ):
        assert response.status == 302
        assert response.headers["Location"] == "/login?next=%2Fapp"


async def test_password_login_shows_whoami_and_sets_httponly_cookie(
    site: FixtureSite, browser: Browser
) -> None:
    async with open_context(browser) as context:
        page = await alice_logged_in(context, site)
        assert page.url == site.url("/app")
        cookie = next(c for c in await context.cookies() if c.get("name") == COOKIE_NAME)
        assert cookie.get("httpOnly") is True
        assert await page.evaluate("document.cookie") == ""
        assert await page.evaluate("localStorage.getItem('fixture_token')")


async def test_wrong_password_stays_on_login_with_error(
    site: FixtureSite, browser: Browser
) -> None:
    async with open_context(browser) as context:
        page = await open_page(context, site, "/login?next=/app")
        await submit_login(page, "alice", "nope")
        await expect(page.locator("#error")).to_be_visible(timeout=TIMEOUT_MS)
        assert await context.cookies() == []


async def test_totp_second_step(site: FixtureSite, browser: Browser) -> None:
    async with open_context(browser) as context:
        page = await open_page(context, site)
        await submit_login(page, "bob", "bob-pw")
        await page.fill("#totp", "000000" if totp(BOB_SECRET) != "000000" else "111111")
        await page.click("#submit")
        await expect(page.locator("#error")).to_have_text("Wrong code.", timeout=TIMEOUT_MS)
        assert await context.cookies() == []
        await page.fill("#totp", totp(BOB_SECRET))
        await page.click("#submit")
        await expect(page.locator("#whoami")).to_have_text("logged in as bob", timeout=TIMEOUT_MS)


async def test_restore_needs_local_storage_as_well_as_cookies(
    site: FixtureSite, browser: Browser
) -> None:
    async with open_context(browser) as context:
        await alice_logged_in(context, site)
        state = await context.storage_state()

    async with open_context(browser) as cookies_only:
        # storageState cookies are valid add_cookies input; Playwright's stubs type them apart.
        await cookies_only.add_cookies(state["cookies"])  # type: ignore[arg-type]
        page = await open_page(cookies_only, site)
        await expect_login_page(page, site)
        assert page.url == site.url("/login?next=%2Fapp")

    async with open_context(browser, storage_state=state) as full:
        page = await open_page(full, site)
        await expect(page.locator("#whoami")).to_have_text("logged in as alice", timeout=TIMEOUT_MS)


async def test_revoke_sends_the_next_visit_to_login(site: FixtureSite, browser: Browser) -> None:
    async with open_context(browser) as context:
        page = await alice_logged_in(context, site)
        assert site.revoke("alice") >= 1
        assert site.session_count("alice") == 0
        await page.goto(site.url("/app"))
        await expect_login_page(page, site)

        await log_in(page, site, "alice", "alice-pw")
        response = await page.request.post(site.url("/admin/revoke?user=alice"))
        assert response.ok
        assert (await response.json())["revoked"] >= 1
        await page.goto(site.url("/app"))
        await expect_login_page(page, site)


async def test_session_storage_page_needs_its_value(site: FixtureSite, browser: Browser) -> None:
    async with open_context(browser) as context:
        page = await alice_logged_in(context, site)
        await page.goto(site.url("/app-session-storage"))
        await expect_logged_in(page)

        other = await context.new_page()  # same cookies and localStorage, fresh sessionStorage
        await other.goto(site.url("/app-session-storage"))
        await expect_login_page(other, site)
        await other.goto(site.url("/app"))
        await expect_logged_in(other)

        site.set_switches(require_session_storage=True)
        await other.goto(site.url("/app"))
        await expect_login_page(other, site)
        await page.goto(site.url("/app"))
        await expect_logged_in(page)


async def test_indexeddb_page_needs_its_record(site: FixtureSite, browser: Browser) -> None:
    async with open_context(browser) as context:
        page = await alice_logged_in(context, site)
        await page.goto(site.url("/app-indexeddb"))
        await expect_logged_in(page)
        plain_state = await context.storage_state()
        full_state = await context.storage_state(indexed_db=True)

    async with open_context(browser, storage_state=plain_state) as restored:
        page = await open_page(restored, site)
        await expect_logged_in(page)
        await page.goto(site.url("/app-indexeddb"))
        await expect_login_page(page, site)
        site.set_switches(require_indexeddb=True)
        await page.goto(site.url("/app"))
        await expect_login_page(page, site)

    async with open_context(browser, storage_state=full_state) as restored:
        await expect_logged_in(await open_page(restored, site))


async def test_rotating_cookie_changes_every_request_and_kills_the_old_one(
    site: FixtureSite, browser: Browser
) -> None:
    async with open_context(browser) as http_context:
        switched = await http_context.request.post(site.url("/admin/switches?rotate_cookie=1"))
        assert (await switched.json())["rotate_cookie"] is True
    assert site.switches.rotate_cookie

    async with open_context(browser) as context:
        page = await alice_logged_in(context, site)
        stale_state = await context.storage_state()
        await expect_new_value_each_reload(page, lambda: sid_cookie(context))

    await expect_state_logged_out(browser, site, stale_state)


async def local_token(page: Page) -> str:
    return str(await page.evaluate("localStorage.getItem('fixture_token')") or "")


async def test_rotating_local_storage_token_changes_every_request_and_kills_the_old_one(
    site: FixtureSite, browser: Browser
) -> None:
    site.set_switches(rotate_local_storage=True)
    async with open_context(browser) as context:
        page = await alice_logged_in(context, site)
        stale_state = await context.storage_state()
        await expect_new_value_each_reload(page, lambda: local_token(page))
        cookie_state = await context.storage_state()

    # The cookie alone still names a live session, but the old token is dead.
    stale_state["cookies"] = cookie_state["cookies"]
    await expect_state_logged_out(browser, site, stale_state)


async def test_reuse_of_a_rotated_token_logs_out_the_whole_family(
    site: FixtureSite, browser: Browser
) -> None:
    site.set_switches(rotate_cookie=True, reuse_detection=True)
    async with open_context(browser) as context:
        page = await alice_logged_in(context, site)
        stale_state = await context.storage_state()
        await page.reload()
        await expect_logged_in(page)
        fresh_state = await context.storage_state()
    before = site.reuse_detected
    await expect_state_logged_out(browser, site, stale_state)
    assert site.reuse_detected == before + 1
    # The newest cookie of that family died with it.
    await expect_state_logged_out(browser, site, fresh_state)


async def test_a_session_left_idle_dies_and_use_keeps_it_alive(
    site: FixtureSite, browser: Browser
) -> None:
    site.set_switches(idle_timeout_s=1.5)
    async with open_context(browser) as context:
        page = await alice_logged_in(context, site)
        for _ in range(3):  # used every 0.8 s: stays alive past 1.5 s in total
            await asyncio.sleep(0.8)
            await page.reload()
            await expect_logged_in(page)
        await asyncio.sleep(1.8)
        await page.reload()
        await expect_login_page(page, site)


async def test_redirect_status_slow_and_public_pages(site: FixtureSite, browser: Browser) -> None:
    async with open_context(browser) as context:
        page = await context.new_page()
        response = await page.goto(site.url("/redirect?to=") + site.url("/public"))
        assert response is not None and response.ok
        assert page.url == site.url("/public")
        redirected_from = response.request.redirected_from
        assert redirected_from is not None
        assert redirected_from.url.startswith(site.url("/redirect?to="))
        first_hop = await redirected_from.response()
        assert first_hop is not None and first_hop.status == 302
        await expect(page.locator("#public")).to_have_text("Public page", timeout=TIMEOUT_MS)

        response = await page.goto(site.url("/status/500"))
        assert response is not None and response.status == 500

        started = time.monotonic()
        response = await page.goto(site.url("/slow?ms=300"))
        assert response is not None and response.ok
        assert time.monotonic() - started >= 0.3


async def test_service_worker_page_reports_registration(
    site: FixtureSite, browser: Browser
) -> None:
    async with open_context(browser) as context:
        page = await open_page(context, site, "/sw")
        await expect(page).to_have_title("sw: registered", timeout=TIMEOUT_MS)

    async with open_context(browser, service_workers="block") as blocked:
        page = await open_page(blocked, site, "/sw")
        await expect(page).to_have_title("sw: blocked", timeout=TIMEOUT_MS)


async def test_command_line_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.dev.fixture_site",
        "--port",
        "0",
        "--user",
        "carol:carol-pw",
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        base_url = json.loads(line)["base_url"]
        assert base_url.startswith("http://127.0.0.1:")
        form = {"username": "carol", "password": "carol-pw", "next": "/app"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(base_url + "/login", data=form) as response,
        ):
            assert response.status == 200
            assert COOKIE_NAME in response.cookies
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=20)
        await process.stdout.read()
    assert returncode == 0
