"""The fixture site's test users: their password, a real-browser login and the login-state
fixture's type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import Browser

from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import free_port

PASSWORD = "correct horse"

#: ``await login_state("alice", indexed_db=True)``: a logged-in Playwright storage state.
LoginState = Callable[..., Awaitable[dict[str, Any]]]

#: A loopback address the workers' guard lets through where nothing listens: an
#: unreachable site (``worker_settings`` allows it).
UNREACHABLE = f"127.0.0.1:{free_port()}"


async def log_in(
    browser: Browser,
    site: FixtureSite,
    user: str,
    *,
    indexed_db: bool = False,
    session_storage: bool = False,
) -> dict[str, Any]:
    """Log ``user`` in on ``site`` in a new context of ``browser``; its storage state."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(site.url("/login?next=/app"))
        await page.fill("#username", user)
        await page.fill("#password", PASSWORD)
        await page.click("#submit")
        await page.wait_for_selector("#whoami", timeout=10_000)
        state = dict(await context.storage_state(indexed_db=indexed_db))
        if session_storage:  # Playwright leaves it out; the capture worker adds it
            items = await page.evaluate("() => Object.entries(sessionStorage)")
            for origin in state["origins"]:
                if origin["origin"] == site.base_url:
                    origin["sessionStorage"] = [{"name": k, "value": v} for k, v in items]
        return state
    finally:
        await context.close()
