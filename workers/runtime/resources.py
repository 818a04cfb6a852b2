"""What a worker process holds, opened on dramatiq's event loop after boot and closed at
shutdown: the database pool, Playwright, the guard proxy, the browser pool, keys, audit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware
from playwright.async_api import Browser, Playwright, async_playwright

from schema import liveview
from schema.audit import AuditLog
from schema.db import create_pool
from schema.errors import ServiceUnavailable
from schema.events import Events
from schema.jobs import BROWSE_QUEUE, CAPTURE_QUEUE, QUEUES
from schema.logs import get_logger
from schema.outages import is_outage
from schema.sealing import publish_seal_key
from schema.settings import Settings
from workers.browser.chromium import browser_launch_options, find_chromium
from workers.browser.liveview import LiveViewServer
from workers.browser.pool import BrowserPool
from workers.crypto.keys import LocalFileKeyProvider
from workers.crypto.store import StateStore
from workers.guard.policy import UrlGuard
from workers.guard.proxy import GuardProxy, chromium_launch_options
from workers.runtime import metrics
from workers.runtime.health import HealthServer, amqp_check, database_check, predicate_check

log = get_logger(__name__)


@dataclass
class Resources:
    """Everything an actor needs, for one worker process."""

    settings: Settings
    events: Events
    db: asyncpg.Pool
    provider: LocalFileKeyProvider
    audit: AuditLog
    store: StateStore
    guard: UrlGuard
    playwright: Playwright
    proxy: GuardProxy
    chromium_path: str
    pool: BrowserPool | None = None
    liveview: LiveViewServer | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    _background: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def stop_background(self) -> None:
        """Stop the background loop (the probe scheduler) ahead of the rest."""
        await self._background.aclose()

    def launch_options(self) -> dict[str, Any]:
        """Chromium launch arguments: sandboxed, a minimal environment, every request forced
        through the guard proxy."""
        options = browser_launch_options(self.chromium_path, user=self.settings.chromium_user)
        proxied = chromium_launch_options(self.proxy)
        options["args"] += proxied.pop("args", [])
        return {**options, **proxied}

    async def launch_browser(self) -> Browser:
        """A dedicated browser (for a capture), behind the guard proxy like the pool's."""
        return await self.playwright.chromium.launch(
            headless=True,
            timeout=self.settings.browser_call_timeout.total_seconds() * 1000,
            **self.launch_options(),
        )

    async def close(self) -> None:
        await self._stack.aclose()


Background = Callable[["Resources"], contextlib.AbstractAsyncContextManager[Any]]


async def open_resources(
    settings: Settings, *, browse: bool, capture: bool, background: Background | None = None
) -> Resources:
    stack = contextlib.AsyncExitStack()
    try:
        db = await create_pool(settings.database_url, min_size=1, max_size=8)
        stack.push_async_callback(db.close)
        events = metrics.MetricEvents()
        provider = LocalFileKeyProvider(key_dir=settings.key_dir)
        audit = AuditLog.from_settings(
            settings, side="workers", signer=provider.audit_signer(), events=events
        )
        liveview_key = liveview.load_liveview_key(settings.key_dir)  # every worker: one key set
        async with db.acquire() as conn:
            await publish_seal_key(conn, provider)
        guard = UrlGuard(allow_private_hosts=settings.allow_private_hosts, events=events)
        proxy = await stack.enter_async_context(GuardProxy(guard=guard))
        playwright = await stack.enter_async_context(async_playwright())
        resources = Resources(
            settings=settings,
            events=events,
            db=db,
            provider=provider,
            audit=audit,
            store=StateStore.from_settings(settings, provider=provider, audit=audit, events=events),
            guard=guard,
            playwright=playwright,
            proxy=proxy,
            chromium_path=find_chromium(settings.chromium_path),
            _stack=stack,
        )
        checks = {"database": database_check(db), "broker": amqp_check(settings.amqp_url)}
        if browse:
            checks["browser_pool"] = predicate_check(
                lambda: resources.pool is not None and resources.pool.healthy
            )
        await stack.enter_async_context(HealthServer(port=settings.health_port, checks=checks))
        if browse:
            options = resources.launch_options()
            resources.pool = await stack.enter_async_context(
                BrowserPool(
                    playwright=playwright,
                    executable_path=options.pop("executable_path"),
                    launch_args=options.pop("args"),
                    launch_options=options,
                    size=settings.browsers,
                    contexts_per_browser=settings.contexts_per_browser,
                    max_contexts_per_browser=settings.browser_max_contexts,
                    call_timeout=settings.browser_call_timeout,
                    events=events,
                )
            )
        if capture:
            resources.liveview = await stack.enter_async_context(
                LiveViewServer.start(
                    host=settings.liveview_host,
                    port=settings.liveview_port,
                    public_base_url=settings.liveview_public_url or None,
                    ticket_check=functools.partial(liveview.ticket_valid, db, liveview_key),
                    frame_ancestors=liveview_frame_ancestors(settings),
                    peers=settings.liveview_peers,
                )
            )
        await stack.enter_async_context(
            metrics.sampling_gauges(pool=resources.pool, liveview=resources.liveview)
        )
        if browse and background is not None:
            stack.push_async_callback(resources.stop_background)
            await resources._background.enter_async_context(background(resources))
        return resources
    except BaseException:
        await stack.aclose()
        raise


def liveview_frame_ancestors(settings: Settings) -> str:
    """Who may frame the live view: the orchestrator (``FRAME_ANCESTORS``) and the settings
    page that embeds it (``API_PUBLIC_URL``'s origin); every ancestor must be listed."""
    sources = settings.frame_ancestors.split()
    if settings.api_public_url:
        parts = urlsplit(settings.api_public_url)
        sources.append(f"{parts.scheme}://{parts.netloc}")
    return " ".join(dict.fromkeys(sources))


class WorkerResources(Middleware):
    """Opens :class:`Resources` on the AsyncIO loop before the worker consumes; closes them at
    shutdown.

    Opened in ``before_worker_boot`` (after AsyncIO's, which starts the loop): dramatiq starts
    its consumers after that hook, so no message is taken before the resources are open and
    none spends a retry on a worker that is not ready. An outage at boot (Postgres or
    RabbitMQ still restarting) is waited out for ``infra_retry_budget``.

    Add it *after* dramatiq's AsyncIO middleware (``install_worker_middleware``): dramatiq
    calls ``after_*`` hooks in reverse order, so its shutdown then runs before the loop stops.
    """

    def __init__(self, settings: Settings, *, background: Background | None = None) -> None:
        self.settings = settings
        self.resources: Resources | None = None
        # Runs for the life of a browse worker's resources (the probe scheduler).
        self.background = background

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        """Open resources for the queues this worker consumes, before its consumers start."""
        queues = worker.consumer_whitelist or {self.settings.queue(q) for q in QUEUES}
        browse = self.settings.queue(BROWSE_QUEUE) in queues
        capture = self.settings.queue(CAPTURE_QUEUE) in queues
        thread = get_event_loop_thread()
        assert thread is not None, "the AsyncIO middleware must be installed"
        try:
            self.resources = thread.run_coroutine(self._open(browse=browse, capture=capture))
        except Exception as exc:
            # dramatiq only logs failures in this hook; a worker without resources must stop
            # (the supervisor starts it again).
            log.critical("worker_boot_failed", error=f"{type(exc).__name__}: {exc}")
            os._exit(3)
        log.info("worker_ready", pid=os.getpid(), browse_pool=browse, capture=capture)

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Stop enqueuing (the probe scheduler) before consumers and workers stop."""
        thread = get_event_loop_thread()
        if self.resources is not None and thread is not None:
            with contextlib.suppress(Exception):
                thread.run_coroutine(asyncio.wait_for(self.resources.stop_background(), 10))

    async def _open(self, *, browse: bool, capture: bool) -> Resources:
        """Open, retrying an outage with a backoff within the budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.infra_retry_budget.total_seconds()
        delay = 1.0
        while True:
            try:
                return await open_resources(
                    self.settings, browse=browse, capture=capture, background=self.background
                )
            except Exception as exc:
                if not is_outage(exc) or loop.time() + delay > deadline:
                    raise
                log.warning("worker_boot_waiting", error=type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Close resources while the loop still runs."""
        thread = get_event_loop_thread()
        if self.resources is not None and thread is not None:
            with contextlib.suppress(Exception):
                thread.run_coroutine(asyncio.wait_for(self.resources.close(), 30))
            self.resources = None

    def get(self) -> Resources:
        """The open resources; ``ServiceUnavailable`` (an outage: retried without spending a
        page retry) if they are not open."""
        if self.resources is None:
            raise ServiceUnavailable("worker resources are not open (is this a worker process?)")
        return self.resources
