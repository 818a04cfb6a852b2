"""Integration fixtures: the fixture site, a Playwright Chromium, a real worker process and
a producer client, all against the real services of this run."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from producers.api import SessionsClient
from schema.settings import Settings
from tests.support.api import API_ADMIN, API_TOKEN
from tests.support.logins import PASSWORD, UNREACHABLE, LoginState, log_in
from tests.support.services import new_database
from workers.browser.chromium import browser_launch_options
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess, free_port, run_api, run_worker


@pytest.fixture(scope="session")
async def site() -> AsyncIterator[FixtureSite]:
    async with FixtureSite.start() as fixture:
        for user in ("alice", "bob", "carol", "dave", "erin"):
            fixture.add_user(user, PASSWORD)
        yield fixture


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(headless=True, **browser_launch_options(chromium_path))
        yield b
        await b.close()


@pytest.fixture(scope="session")
def login_state(browser: Browser, site: FixtureSite) -> LoginState:
    """Log a user in on the fixture site with a real browser; returns its storage state."""

    async def login(
        user: str, *, indexed_db: bool = False, session_storage: bool = False
    ) -> dict[str, Any]:
        return await log_in(
            browser, site, user, indexed_db=indexed_db, session_storage=session_storage
        )

    return login


@pytest.fixture(scope="session")
def worker_settings(base_settings: Settings, site: FixtureSite) -> Settings:
    return dataclasses.replace(
        base_settings,
        allow_private_hosts=frozenset({f"127.0.0.1:{site.port}", UNREACHABLE}),
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


@pytest.fixture(scope="module")
async def scratch_url(database_url: str) -> AsyncIterator[str]:
    """A migrated database of the test module's own (an audit chain or key table no other
    test writes to), dropped after the module."""
    async with new_database(f"bs_scratch_{secrets.token_hex(4)}") as url:
        yield url


@pytest.fixture(scope="session")
def api_settings(worker_settings: Settings) -> Settings:
    """Settings of the HTTP API for this run (its own port, a known token and admin)."""
    return dataclasses.replace(
        worker_settings, api_port=free_port(), api_token=API_TOKEN, admins=frozenset({API_ADMIN})
    )


@pytest.fixture(scope="session")
def api_url(
    api_settings: Settings, browse_worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real ``browser-sessions api`` process; its base URL. After a worker has started, as
    in production: the workers publish the keys a producer uses (sealing, live-view tickets)."""
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    with run_api(api_settings, log_path):
        yield f"http://127.0.0.1:{api_settings.api_port}"
