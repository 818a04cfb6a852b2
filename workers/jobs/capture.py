"""The capture job: a real browser the user drives through the live view until Save,
Cancel or the timeout.

Save captures cookies, localStorage, IndexedDB and each origin's sessionStorage, runs the
login verdict, and only a logged-in state is encrypted and stored (the session becomes
``active`` with a new version). A Save that finds no login keeps the window open with the
reason shown. Worker shutdown marks the capture ``interrupted`` and closes its browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize

from schema import liveview, queries
from schema.db import listening
from schema.enums import AuditAction, CaptureSignal, CaptureState, SessionStatus
from schema.errors import BrowserSessionsError, CaptureNotLoggedIn
from schema.jobs import CaptureJob
from schema.logs import get_logger
from schema.outages import describe, is_outage
from schema.redact import secret_values, state_secret_values
from schema.settings import Settings
from workers.browser.liveview import LiveViewServer
from workers.browser.verdict import Verdict, decide
from workers.guard.scope import scope_to_session
from workers.jobs.imports import LoginJob, names_its_capture

log = get_logger(__name__)

CAPTURE_CHANNEL = "capture_signals"
POLL_S = 1.0
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
CAPTURE_CONTEXT_OPTIONS: dict[str, Any] = {
    "viewport": VIEWPORT,
    "service_workers": "block",
    "accept_downloads": False,  # a site cannot drop files on the worker through the live view
}
SESSION_STORAGE_JS = "() => [location.origin, Object.entries(window.sessionStorage)]"


@dataclass(frozen=True, kw_only=True)
class CaptureService(LoginJob):
    """Holds a live-view browser for one capture until Save, Cancel or the timeout."""

    settings: Settings
    liveview: LiveViewServer
    launch_browser: Any

    async def run(self, job: CaptureJob) -> CaptureState:
        """Hold the browser until a final state; returns it."""
        capture = await queries.get_capture(self.db, job.capture_id)
        if not names_its_capture(capture, "live", job.session_id, job.owner_id):
            return capture.state
        if capture.state is not CaptureState.QUEUED:
            if not capture.state.is_final:
                # Redelivered after the worker that held it died: its browser is gone.
                await self._set_state(
                    job, CaptureState.INTERRUPTED, "the worker holding this capture stopped"
                )
                return CaptureState.INTERRUPTED
            return capture.state
        session = await queries.get_session(self.db, job.session_id)
        if session.status is SessionStatus.REVOKED:
            await self._set_state(
                job, CaptureState.FAILED, "the session was revoked", "SESSION_REVOKED"
            )
            return CaptureState.FAILED
        browser: Browser = await self.launch_browser()
        try:
            context = await browser.new_context(**CAPTURE_CONTEXT_OPTIONS)
            page = await context.new_page()
            return await self._hold(job, session, context, page)
        finally:
            await self.liveview.unregister(job.capture_id)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 10)

    async def _hold(
        self, job: CaptureJob, session: queries.SessionInfo, context: BrowserContext, page: Page
    ) -> CaptureState:
        state = {"value": CaptureState.OPEN}
        timeout = self.settings.capture_timeout
        expires_at = datetime.now(UTC) + timeout
        self.liveview.register(
            capture_id=job.capture_id,
            owner_id=job.owner_id,
            context=context,
            page=page,
            state_getter=lambda: state["value"].value,
            expires_at=expires_at,
        )
        woken = asyncio.Event()

        def on_signal(capture_id: str) -> None:
            if capture_id == job.capture_id:
                woken.set()

        try:
            async with listening(self.settings.database_url, CAPTURE_CHANNEL, on_signal):
                await self.db.execute(
                    """UPDATE captures SET state = 'open', liveview_url = $2, opened_at = now(),
                           expires_at = $3, updated_at = now(), signal = NULL
                       WHERE id = $1""",
                    job.capture_id,
                    f"{self.liveview.base_url}/live/{job.capture_id}",
                    expires_at,
                )
                with contextlib.suppress(Exception):
                    await page.goto(session.start_url, timeout=30_000)
                log.info("capture_open")
                deadline = time.monotonic() + timeout.total_seconds()
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        await self._finish(
                            job, CaptureState.TIMED_OUT, "the login window timed out"
                        )
                        return CaptureState.TIMED_OUT
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), min(POLL_S, remaining))
                    woken.clear()
                    signal = await self._poll_signal(job.capture_id)
                    if signal is CaptureSignal.CANCEL:
                        await self._finish(job, CaptureState.CANCELLED, "cancelled by the user")
                        return CaptureState.CANCELLED
                    if signal is CaptureSignal.SAVE:
                        state["value"] = CaptureState.SAVING
                        await self._set_state(job, CaptureState.SAVING)
                        try:
                            await self._save(job, session, context)
                        except CaptureNotLoggedIn as err:
                            state["value"] = CaptureState.NOT_LOGGED_IN
                            await self._set_state(
                                job, CaptureState.NOT_LOGGED_IN, err.message, err.code
                            )
                            continue
                        state["value"] = CaptureState.SAVED
                        await self._finish(job, CaptureState.SAVED, None)
                        return CaptureState.SAVED
        except asyncio.CancelledError:
            # Worker shutdown or time limit: nothing was half-saved (saves are one transaction).
            await asyncio.shield(
                self._finish(job, CaptureState.INTERRUPTED, "the worker shut down")
            )
            raise
        except BrowserSessionsError as err:
            await self._finish(job, CaptureState.FAILED, err.message, err.code)
            return CaptureState.FAILED
        except Exception as exc:
            if is_outage(exc):  # if this write meets it too, the retry marks it interrupted
                await self._finish(job, CaptureState.INTERRUPTED, describe(exc))
                return CaptureState.INTERRUPTED
            await self._finish(
                job, CaptureState.FAILED, f"internal error: {type(exc).__name__}", "INTERNAL_ERROR"
            )
            raise

    async def _save(
        self, job: CaptureJob, session: queries.SessionInfo, context: BrowserContext
    ) -> None:
        pages = [p for p in context.pages if not p.is_closed()]
        if not pages:
            raise CaptureNotLoggedIn("the login window has no open page")
        front = pages[0]
        present = None
        if session.logged_in_selector:
            present = await front.locator(session.logged_in_selector).count() > 0
        verdict, reason = decide(
            final_url=front.url,
            login_url_pattern=session.login_url_pattern,
            logged_in_selector=session.logged_in_selector,
            selector_present=present,
        )
        if verdict is not Verdict.LOGGED_IN:
            raise CaptureNotLoggedIn(f"not logged in yet: {reason}")
        captured = dict(await context.storage_state(indexed_db=True))
        await _add_session_storage(captured, pages)
        with secret_values(state_secret_values(captured)):
            state = scope_to_session(captured, session)
            await self._save_login(job, state, AuditAction.SAVE)

    async def _finish(
        self, job: CaptureJob, final: CaptureState, reason: str | None, code: str | None = None
    ) -> None:
        # Access ends before anyone can read the final state: its token must already be dead.
        await self.liveview.unregister(job.capture_id)
        await self._set_state(job, final, reason, code)
        await liveview.drop_tickets(self.db, job.capture_id)
        log.info("capture_finished", capture_state=final.value)

    async def _poll_signal(self, capture_id: str) -> CaptureSignal | None:
        """The pending signal; none while the database is unreachable: the login window
        stays open through an outage (no signal can be sent during one either), and the
        next poll asks again."""
        try:
            return await _take_signal(self.db, capture_id)
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning("capture_poll_failed", error=describe(exc))
            return None


async def _take_signal(db: asyncpg.Pool, capture_id: str) -> CaptureSignal | None:
    """Read and clear the pending signal atomically."""
    value = await db.fetchval(
        """WITH old AS (SELECT signal FROM captures WHERE id = $1 FOR UPDATE)
           UPDATE captures c SET signal = NULL FROM old
           WHERE c.id = $1 AND old.signal IS NOT NULL
           RETURNING old.signal""",
        capture_id,
    )
    return CaptureSignal(value) if value else None


async def _add_session_storage(state: dict[str, Any], pages: list[Page]) -> None:
    """Add each open page's sessionStorage to its origin entry (Playwright omits it)."""
    origins: dict[str, dict[str, Any]] = {o["origin"]: o for o in state.setdefault("origins", [])}
    for page in pages:
        with contextlib.suppress(Exception):
            origin, entries = await asyncio.wait_for(page.evaluate(SESSION_STORAGE_JS), 5)
            if not entries or origin in ("null", ""):
                continue
            entry = origins.setdefault(origin, {"origin": origin, "localStorage": []})
            if entry not in state["origins"]:
                state["origins"].append(entry)
            entry["sessionStorage"] = [{"name": k, "value": v} for k, v in entries]
