"""A browser pool of the test's own, launched the way the workers launch theirs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from playwright.async_api import async_playwright

from workers.browser.chromium import browser_launch_options
from workers.browser.pool import BrowserPool


@contextlib.asynccontextmanager
async def local_pool(chromium_path: str, **pool_options: Any) -> AsyncIterator[BrowserPool]:
    """``async with local_pool(chromium_path, size=1) as pool: ...`` (its own Playwright)."""
    options = browser_launch_options(chromium_path)
    async with (
        async_playwright() as playwright,
        BrowserPool(
            playwright=playwright,
            executable_path=options.pop("executable_path"),
            launch_args=options.pop("args"),
            launch_options=options,
            **pool_options,
        ) as pool,
    ):
        yield pool
