"""A browser killed under a job ends that job at once with ``BROWSER_CRASHED``, whatever the
job was waiting on, and the pool replaces the browser."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import async_playwright

from schema.errors import BrowserCrashed
from workers.browser.chromium import browser_launch_options
from workers.browser.pool import BrowserPool
from workers.dev.processes import process_tree

pytestmark = pytest.mark.integration


@pytest.fixture
def others() -> set[int]:
    """Browsers already running below this process (other tests' fixtures): left alone."""
    return set(_browser_pids())


@pytest.fixture
async def pool(chromium_path: str, others: set[int]) -> AsyncIterator[BrowserPool]:
    options = browser_launch_options(chromium_path)
    async with (
        async_playwright() as playwright,
        BrowserPool(
            playwright=playwright,
            executable_path=options.pop("executable_path"),
            launch_args=options.pop("args"),
            launch_options=options,
            size=1,
            contexts_per_browser=2,
        ) as browsers,
    ):
        yield browsers


def _browser_pids() -> list[int]:
    """Chromium main processes below this test process (the pool's browsers)."""
    found = []
    for pid in process_tree(os.getpid())[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if (
            b"chrom" in cmd[0]
            and not cmd[0].endswith(b"crashpad_handler")
            and not any(a.startswith(b"--type=") for a in cmd)
        ):
            found.append(pid)
    return found


async def test_a_job_waiting_on_a_killed_browser_ends_with_browser_crashed(
    pool: BrowserPool, others: set[int]
) -> None:
    entered = asyncio.Event()

    async def job() -> None:
        async with pool.context():
            entered.set()
            await asyncio.Event().wait()  # a call that never returns on its own

    running = asyncio.create_task(job())
    await asyncio.wait_for(entered.wait(), 30)
    victims = set(_browser_pids()) - others  # the pool's own, not other tests' browsers
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
