"""Integration fixtures: the fixture site, a Playwright Chromium, a real worker process and
a producer client, all against the real services of this run."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Browser, async_playwright

from producers.api import SessionsClient
from schema.settings import Settings
from workers.browser.chromium import HEADLESS_ARGS
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess, free_port, run_worker

__all__ = ["WorkerProcess", "free_port", "run_worker"]

PASSWORD = "correct horse"
LoginState = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture(scope="session")
async def site() -> AsyncIterator[FixtureSite]:
    async with FixtureSite.start() as fixture:
        for user in ("alice", "bob", "carol", "dave", "erin"):
            fixture.add_user(user, PASSWORD)
        yield fixture


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=chromium_path, args=list(HEADLESS_ARGS), headless=True
        )
        yield b
        await b.close()


@pytest.fixture(scope="session")
def login_state(browser: Browser, site: FixtureSite) -> LoginState:
    """Log a user in on the fixture site with a real browser; returns its storage state."""

    async def login(
        user: str, *, indexed_db: bool = False, session_storage: bool = False
    ) -> dict[str, Any]:
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

    return login


@pytest.fixture(scope="session")
def worker_settings(base_settings: Settings, site: FixtureSite) -> Settings:
    return dataclasses.replace(
        base_settings,
        allow_private_hosts=frozenset({f"127.0.0.1:{site.port}"}),
        metrics_port=free_port(),
        health_port=free_port(),
        browsers=1,
        contexts_per_browser=2,
        probe_scheduler=False,  # probes run in the tests that start a worker for them
    )


@pytest.fixture(scope="session")
def browse_worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real ``browser-sessions worker`` on the browse and expiry queues."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with run_worker(worker_settings, ["browse", "expiry"], log_path) as worker:
        yield worker


@pytest.fixture
async def client(worker_settings: Settings) -> AsyncIterator[SessionsClient]:
    async with SessionsClient.open(worker_settings) as c:
        yield c


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 20, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def comments(db: asyncpg.Connection, task_id: str) -> list[str]:
    rows = await db.fetch("SELECT body FROM task_comments WHERE task_id = $1", task_id)
    return [r["body"] for r in rows]
