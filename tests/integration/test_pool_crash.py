"""A browser killed under a job ends that job at once with ``BROWSER_CRASHED``, whatever the
job was waiting on, and the pool replaces the browser."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from schema.errors import BrowserCrashed
from tests.support.pools import local_pool
from workers.browser.pool import BrowserPool
from workers.dev.processes import chromium_pids

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool_and_pids(chromium_path: str) -> AsyncIterator[tuple[BrowserPool, list[int]]]:
    """A one-browser pool, and the pids of its browser (not other tests' browsers)."""
    others = set(chromium_pids(os.getpid()))
    async with local_pool(chromium_path, size=1, contexts_per_browser=2) as browsers:
        yield browsers, [p for p in chromium_pids(os.getpid()) if p not in others]


async def test_a_job_waiting_on_a_killed_browser_ends_with_browser_crashed(
    pool_and_pids: tuple[BrowserPool, list[int]],
) -> None:
    pool, victims = pool_and_pids
    entered = asyncio.Event()

    async def job() -> None:
        async with pool.context():
            entered.set()
            await asyncio.Event().wait()  # a call that never returns on its own

    running = asyncio.create_task(job())
    await asyncio.wait_for(entered.wait(), 30)
    assert victims
    started = time.monotonic()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(BrowserCrashed):
        await asyncio.wait_for(running, 20)
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 30
    while not pool.healthy:  # replaced by a fresh browser
        assert time.monotonic() < deadline, "the pool did not replace its browser"
        await asyncio.sleep(0.1)
    async with pool.context() as context:
        page = await context.new_page()
        assert await page.evaluate("1 + 1") == 2
