"""A pool of warm Chromium browsers, handing out one fresh context per job.

Bounded contexts per browser; a browser is retired after K contexts and replaced; a
crashed or disconnected browser is replaced and the job that was on it gets
``BrowserCrashed`` (retryable). Every browser call has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from playwright.async_api import Browser, BrowserContext, Playwright
from playwright.async_api import Error as PlaywrightError

from schema.errors import BrowserCrashed, ServiceUnavailable
from schema.events import NO_EVENTS, Events
from schema.logs import get_logger

log = get_logger(__name__)

# Chromium's full browser in headless mode opens an omnibox-popup WebUI renderer for every new
# window and keeps a spare renderer warm: per fresh context, three renderer processes where a
# job uses one. Turning both off halves the CPU of a pooled job (measured on 2 cores).
# Chromium honours only the last --disable-features switch, and Playwright passes its own list
# first, so this repeats Playwright's list (1.65, chromiumSwitches.ts) before adding ours; the
# benchmark's smoke test fails if a Playwright upgrade disables a feature missing here.
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "MediaRouter",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin",
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
    "msForceBrowserSignIn",
    "msEdgeUpdateLaunchServicesPreferredVersion",
)
LEAN_DISABLED_FEATURES = (
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
    "SpareRendererForSitePerProcess",
)
LEAN_CONTEXT_ARGS = (
    "--disable-features=" + ",".join((*PLAYWRIGHT_DISABLED_FEATURES, *LEAN_DISABLED_FEATURES)),
)


@dataclass(eq=False)
class _PooledBrowser:
    browser: Browser
    number: int
    in_use: int = 0
    contexts_opened: int = 0
    retiring: bool = False
    dead: bool = False
    launched_at: float = field(default_factory=time.monotonic)
    jobs: set[asyncio.Task[Any]] = field(default_factory=set)  # tasks holding a context
    crashed_jobs: set[asyncio.Task[Any]] = field(default_factory=set)


class BrowserPool:
    """``async with BrowserPool(...) as pool: async with pool.context(...) as ctx: ...``"""

    def __init__(
        self,
        *,
        playwright: Playwright,
        executable_path: str,
        launch_args: list[str],
        launch_options: dict[str, Any] | None = None,
        size: int = 2,
        contexts_per_browser: int = 2,
        max_contexts_per_browser: int = 200,
        call_timeout: timedelta = timedelta(seconds=30),
        events: Events = NO_EVENTS,
    ) -> None:
        self._playwright = playwright
        self._executable_path = executable_path
        self._launch_args = launch_args
        self._launch_options = launch_options or {}
        self._size = size
        self._per_browser = contexts_per_browser
        self._max_contexts = max_contexts_per_browser
        self._timeout = call_timeout.total_seconds()
        self._events = events
        self._browsers: list[_PooledBrowser] = []
        self._changed = asyncio.Condition()
        self._launching = 0
        self._numbers = 0
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> BrowserPool:
        await asyncio.gather(*(self._launch(initial=True) for _ in range(self._size)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def capacity(self) -> int:
        return self._size * self._per_browser

    def stats(self) -> dict[str, int]:
        live = [b for b in self._browsers if not b.dead]
        return {
            "browsers": len(live),
            "contexts_in_use": sum(b.in_use for b in live),
            "capacity": self.capacity,
        }

    @property
    def healthy(self) -> bool:
        return any(not b.dead and b.browser.is_connected() for b in self._browsers)

    @contextlib.asynccontextmanager
    async def context(self, **context_options: Any) -> AsyncIterator[BrowserContext]:
        """A fresh context in a warm browser, closed (and its slot released) on exit."""
        pooled = await self._acquire()
        context: BrowserContext | None = None
        task = asyncio.current_task()
        try:
            try:
                context = await asyncio.wait_for(
                    pooled.browser.new_context(**context_options), self._timeout
                )
            except (PlaywrightError, TimeoutError) as exc:
                self._check_alive(pooled)
                raise BrowserCrashed(f"could not open a context: {type(exc).__name__}") from None
            if task is not None:
                pooled.jobs.add(task)  # only while the job runs: _mark_dead cancels those
            try:
                yield context
            except asyncio.CancelledError:
                # Cancelled by _mark_dead: a call on a dead browser may never return.
                if task is None or task not in pooled.crashed_jobs:
                    raise
                task.uncancel()
                raise BrowserCrashed("the browser went away during the job") from None
            except Exception as exc:
                # The job maps Playwright errors to its own codes (a dead browser fails the
                # navigation too); a browser that is gone is the real cause, whatever the code.
                if self._check_alive(pooled):
                    raise
                raise BrowserCrashed("the browser went away during the job") from exc
            finally:
                if task is not None:
                    pooled.jobs.discard(task)
                    pooled.crashed_jobs.discard(task)
        finally:
            if context is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(context.close(), self._timeout)
            await self._release(pooled)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._background):
            task.cancel()
        browsers, self._browsers = self._browsers, []
        await asyncio.gather(*(self._close_browser(b) for b in browsers))

    def _check_alive(self, pooled: _PooledBrowser) -> bool:
        """False (and the browser replaced) if it crashed or disconnected."""
        if pooled.browser.is_connected() and not pooled.dead:
            return True
        self._mark_dead(pooled)
        return False

    async def _acquire(self) -> _PooledBrowser:
        async with self._changed:
            while True:
                if self._closed:
                    raise ServiceUnavailable("the browser pool is closed")
                ready = [
                    b
                    for b in self._browsers
                    if not b.dead and not b.retiring and b.in_use < self._per_browser
                ]
                if ready:
                    pooled = min(ready, key=lambda b: b.in_use)
                    pooled.in_use += 1
                    pooled.contexts_opened += 1
                    if pooled.contexts_opened >= self._max_contexts:
                        pooled.retiring = True
                        self._spawn(self._launch())
                    return pooled
                try:
                    await asyncio.wait_for(self._changed.wait(), self._timeout)
                except TimeoutError:
                    raise ServiceUnavailable("no browser became free in time") from None

    async def _release(self, pooled: _PooledBrowser) -> None:
        async with self._changed:
            pooled.in_use -= 1
            if pooled.retiring and pooled.in_use == 0 and not pooled.dead:
                self._browsers.remove(pooled)
                self._spawn(self._close_browser(pooled))
                self._events.browser_retired()
                log.info("browser_retired", browser=pooled.number, contexts=pooled.contexts_opened)
            self._changed.notify_all()

    async def _launch(self, *, initial: bool = False) -> None:
        """Launch one browser into the pool. Only the pool's first launches raise when none
        succeeds; a replacement that fails is tried again until one starts (an empty pool
        would otherwise hold every job until its time limit)."""
        self._launching += 1
        try:
            browser = await asyncio.wait_for(
                self._playwright.chromium.launch(
                    executable_path=self._executable_path,
                    args=[*self._launch_args, *LEAN_CONTEXT_ARGS],
                    headless=True,
                    timeout=self._timeout * 1000,
                    **self._launch_options,
                ),
                self._timeout,
            )
        except Exception as exc:
            log.error("browser_launch_failed", error=f"{type(exc).__name__}: {exc}")
            if initial and not self._browsers and not self._closed:
                raise ServiceUnavailable(f"cannot launch Chromium: {exc}") from None
            self._spawn(self._relaunch_later())
            return
        finally:
            self._launching -= 1
        self._numbers += 1
        pooled = _PooledBrowser(browser=browser, number=self._numbers)
        browser.on("disconnected", lambda _b: self._mark_dead(pooled))
        async with self._changed:
            if self._closed:
                await self._close_browser(pooled)
                return
            self._browsers.append(pooled)
            self._changed.notify_all()
        self._events.browser_launched()
        log.debug("browser_launched", browser=pooled.number)

    async def _relaunch_later(self) -> None:
        await asyncio.sleep(1.0)
        if not self._closed:
            await self._launch()

    def _mark_dead(self, pooled: _PooledBrowser) -> None:
        if pooled.dead or self._closed:
            return
        pooled.dead = True
        if pooled.retiring:
            return  # closed on purpose after retirement
        self._events.browser_crashed()
        log.warning("browser_crashed", browser=pooled.number, in_use=pooled.in_use)
        if pooled in self._browsers:
            self._browsers.remove(pooled)
        # Jobs still waiting on it would wait for their time limit: end them now.
        current = asyncio.current_task()
        for job in pooled.jobs - {current}:
            pooled.crashed_jobs.add(job)
            job.cancel()
        self._spawn(self._launch())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_browser(self, pooled: _PooledBrowser) -> None:
        pooled.retiring = True
        pooled.dead = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pooled.browser.close(), self._timeout)
