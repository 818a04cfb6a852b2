"""The browse job: authorise, decrypt just in time, restore, navigate, decide, extract,
write back.

Idempotent: a job whose result is stored is not run again; expiry is handed to the expiry
actor through ``on_expired`` (its comment is deduplicated there). On a session whose site
rotates its tokens the job holds the session's lease; after a *logged-in* verdict what the
site changed is saved as the next version (:mod:`workers.jobs.keepalive`). A logged-out
verdict on a version that another job replaced meanwhile is a lost race, retried, never an
expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from playwright.async_api import BrowserContext, Page, Response
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from schema import queries
from schema.audit import AuditLog
from schema.enums import AuditAction, AuditResult, BrowseOutcome, SessionStatus
from schema.errors import (
    AuthSessionExpired,
    BrowserCrashed,
    BrowserSessionsError,
    NavigationFailed,
    NotOwner,
    SessionNotActive,
    SessionRevoked,
    TaskNotFound,
    UrlNotAllowed,
    VersionConflict,
)
from schema.jobs import BrowseJob, BrowseOptions, ExpireJob
from schema.logs import get_logger
from schema.redact import secret_values, state_secret_values
from schema.results import BrowseResult, result_exists, store_result
from workers.browser.observe import observe_state
from workers.browser.pool import BrowserPool
from workers.browser.restore import install_restore_script, plan_restore
from workers.browser.verdict import Verdict, decide, url_matches
from workers.crypto.store import StateStore
from workers.guard.policy import UrlGuard
from workers.guard.proxy import is_guard_refusal
from workers.jobs.keepalive import WriteBack, WriteBackResult
from workers.jobs.leases import Leases

log = get_logger(__name__)

BROWSE_CONTEXT_OPTIONS: dict[str, Any] = {
    "service_workers": "block",
    "accept_downloads": False,  # a page cannot drop files on the worker
}

SELECTOR_WAIT_S = 5.0
EXTRACT_JS = "(max) => (document.body ? document.body.innerText : '').slice(0, max)"


@dataclass(frozen=True)
class PageOutcome:
    final_url: str
    http_status: int | None
    verdict: Verdict
    reason: str
    title: str | None = None
    text: str | None = None
    html: str | None = None
    screenshot: bytes | None = None
    final_state: dict[str, Any] | None = dataclasses.field(default=None, repr=False)


class BrowseService:
    """Runs one browse job end to end against the pool; stores exactly one result."""

    def __init__(
        self,
        *,
        db: asyncpg.Pool,
        pool: BrowserPool,
        store: StateStore,
        audit: AuditLog,
        guard: UrlGuard,
        on_expired: Callable[[ExpireJob], Awaitable[None]],
        leases: Leases | None = None,
        write_back: WriteBack | None = None,
        lease_wait: timedelta = timedelta(seconds=90),
    ) -> None:
        self._db = db
        self._pool = pool
        self._store = store
        self._audit = audit
        self._guard = guard
        self._on_expired = on_expired
        self._leases = leases
        self._write_back = write_back
        self._lease_wait = lease_wait

    async def run(
        self,
        job: BrowseJob,
        *,
        attempt: int = 1,
        final_attempt: bool = True,
        retry: Callable[[BaseException], bool] | None = None,
    ) -> str:
        """Run the job; returns the outcome code (``ok`` or an error code).

        A failure the caller will retry (``retry(err)``; by default a retryable one on a
        non-final attempt) is raised; everything else ends in a stored result.
        """
        if await result_exists(self._db, job.job_id):
            log.info("browse_duplicate_skipped")
            return "duplicate"
        started = time.monotonic()
        try:
            outcome = await self._authorised_browse(job)
        except BrowserSessionsError as err:
            if retry(err) if retry is not None else err.retryable and not final_attempt:
                raise
            await self._finish_error(job, err, attempt, started)
            return err.code
        elapsed = int((time.monotonic() - started) * 1000)
        await self._db.execute(
            "UPDATE browser_sessions SET last_used_at = now() WHERE id = $1", job.session_id
        )
        if outcome.verdict is Verdict.LOGGED_OUT:
            expired = AuthSessionExpired(
                f"the saved session is no longer logged in ({outcome.reason}); re-login needed"
            )
            await self._finish_error(job, expired, attempt, started)
            return expired.code
        await store_result(
            self._db,
            BrowseResult(
                job_id=job.job_id,
                task_id=job.task_id,
                owner_id=job.owner_id,
                session_id=job.session_id,
                outcome=BrowseOutcome.OK,
                final_url=outcome.final_url,
                http_status=outcome.http_status,
                title=outcome.title,
                text=outcome.text,
                html=outcome.html,
                screenshot=outcome.screenshot,
                attempts=attempt,
                duration_ms=elapsed,
            ),
        )
        return BrowseOutcome.OK.value

    async def _authorised_browse(self, job: BrowseJob) -> PageOutcome:
        session = await self._authorise(job)
        self._guard.check_site(
            job.url, start_url=session.start_url, extra_origins=session.extra_origins
        )
        await self._guard.check_url(job.url)
        async with (
            self._lease(session, job.job_id),
            restored_visit(
                self._store,
                self._db,
                self._pool,
                session=session,
                url=job.url,
                options=job.options,
                actor_id=job.owner_id,
                task_id=job.task_id,
                request_id=job.job_id,
                observe=self._write_back is not None,
            ) as seen,
        ):
            await self._audit_use(job, AuditResult.OK, seen.outcome.verdict.value)
            await self._keep(job, session, seen)
        return dataclasses.replace(seen.outcome, final_state=None)

    def _lease(
        self, session: queries.SessionInfo, job_id: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        # Without write-back nothing learns whether the site rotates: only a forced mode counts.
        exclusive = session.exclusive if self._write_back else session.lease_mode == "exclusive"
        if self._leases is None or not exclusive:
            return contextlib.nullcontext()
        return self._leases.hold(
            session.id, f"{job_id}:{time.monotonic_ns()}", wait=self._lease_wait
        )

    async def _keep(self, job: BrowseJob, session: queries.SessionInfo, seen: Visit) -> None:
        """Write back after a logged-in verdict; after a logged-out one, tell a lost race
        (another job saved a newer version meanwhile: retry) from an expiry."""
        if self._write_back is None:
            return
        outcome = seen.outcome
        if outcome.verdict is Verdict.LOGGED_OUT:
            self._write_back.events.write_back(WriteBackResult.REFUSED_LOGGED_OUT)
            current = await queries.session_version(self._db, session.id)
            if current is not None and current != seen.version:
                raise VersionConflict(
                    "a newer version of the session was saved while this job ran; retrying"
                )
            return
        if outcome.final_state is not None:
            await self._write_back.apply(
                session=session,
                base=seen.state,
                base_version=seen.version,
                final=outcome.final_state,
                source="write_back",
                source_id=job.job_id,
                actor_id=job.owner_id,
                task_id=job.task_id,
            )

    async def _authorise(self, job: BrowseJob) -> queries.SessionInfo:
        """Owner binding and status checks, before any browser or key is touched."""
        session = await queries.get_session(self._db, job.session_id)
        task_owner = await queries.task_owner(self._db, job.task_id)
        denial: BrowserSessionsError | None = None
        if task_owner is None:
            denial = TaskNotFound("the job names no existing task")
        elif task_owner != session.owner_id or job.owner_id != session.owner_id:
            denial = NotOwner("the session belongs to another user than the task's owner")
        elif session.status is SessionStatus.REVOKED:
            denial = SessionRevoked("the session was revoked")
        elif session.status is SessionStatus.EXPIRED:
            denial = AuthSessionExpired("the saved session has expired; re-login needed")
        elif session.status is SessionStatus.PENDING:
            denial = SessionNotActive("the session has no saved login yet")
        if denial is not None:
            await self._audit_use(job, AuditResult.DENIED, denial.code)
            raise denial
        return session

    async def _audit_use(self, job: BrowseJob, result: AuditResult, detail: str) -> None:
        async with self._db.acquire() as conn:
            await self._audit.write(
                conn,
                actor_id=job.owner_id,
                action=AuditAction.USE,
                result=result,
                session_id=job.session_id,
                task_id=job.task_id,
                request_id=job.job_id,
                detail=detail,
            )

    async def _finish_error(
        self, job: BrowseJob, err: BrowserSessionsError, attempt: int, started: float
    ) -> None:
        if isinstance(err, AuthSessionExpired):
            # Before the result: a job that dies in between runs again and sends it again
            # (expiry is idempotent); sent after the result, a lost message stays lost.
            await self._on_expired(
                ExpireJob(session_id=job.session_id, task_id=job.task_id, job_id=job.job_id)
            )
        await store_result(
            self._db,
            failure_of(
                job,
                err.code,
                err.message,
                attempts=attempt,
                duration_ms=int((time.monotonic() - started) * 1000),
            ),
        )


def failure_of(
    job: BrowseJob, code: str, message: str, *, attempts: int, duration_ms: int | None = None
) -> BrowseResult:
    """The failed result of ``job``."""
    return BrowseResult.failure(
        job_id=job.job_id,
        task_id=job.task_id,
        owner_id=job.owner_id,
        session_id=job.session_id,
        code=code,
        message=message,
        attempts=attempts,
        duration_ms=duration_ms,
    )


@dataclass(frozen=True)
class Visit:
    """A visit with a restored session: the state and version it restored (secrets), and
    its outcome."""

    state: dict[str, Any]
    version: int
    outcome: PageOutcome


@contextlib.asynccontextmanager
async def restored_visit(
    store: StateStore,
    db: asyncpg.Pool,
    pool: BrowserPool,
    *,
    session: queries.SessionInfo,
    url: str,
    options: BrowseOptions,
    actor_id: str,
    task_id: str | None,
    request_id: str,
    observe: bool,
) -> AsyncIterator[Visit]:
    """Decrypt (audited), restore into a fresh context, visit; inside the block the restored
    and observed values are registered for log redaction."""
    state, version = await store.load_versioned(
        db,
        session_id=session.id,
        owner_id=session.owner_id,
        actor_id=actor_id,
        task_id=task_id,
        request_id=request_id,
    )
    with secret_values(state_secret_values(state)):
        plan = plan_restore(state)
        outcome = await open_and_visit(
            pool,
            plan.context_options,
            plan.init_script,
            url=url,
            options=options,
            session=session,
            observe=observe,
        )
        with secret_values(state_secret_values(outcome.final_state or {})):
            yield Visit(state, version, outcome)


async def open_and_visit(
    pool: BrowserPool,
    context_options: dict[str, Any],
    init_script: str | None,
    *,
    url: str,
    options: BrowseOptions,
    session: queries.SessionInfo,
    observe: bool = False,
) -> PageOutcome:
    """A fresh pooled context with the state restored, one visit, the context closed.

    With ``observe``, a logged-in outcome carries the context's state at the end (secrets:
    for the write-back only)."""
    async with pool.context(**BROWSE_CONTEXT_OPTIONS, **context_options) as context:
        outcome = await visit(
            context, url=url, options=options, session=session, init_script=init_script
        )
        if observe and outcome.verdict is Verdict.LOGGED_IN:
            idb = any(o.get("indexedDB") for o in context_options["storage_state"]["origins"])
            final = await observe_state(context, indexed_db=idb)
            outcome = dataclasses.replace(outcome, final_state=final)
        return outcome


async def visit(
    context: BrowserContext,
    *,
    url: str,
    options: BrowseOptions,
    session: queries.SessionInfo,
    init_script: str | None = None,
) -> PageOutcome:
    """Navigate, map failures to error codes, decide the login verdict, extract."""
    opts = options
    timeout_ms = opts.timeout_s * 1000
    page = await context.new_page()
    if init_script:
        await install_restore_script(page, init_script)
    page.set_default_timeout(timeout_ms)
    response: Response | None
    try:
        response = await page.goto(url, wait_until=opts.wait_until, timeout=timeout_ms)  # type: ignore[arg-type]
    except PlaywrightTimeout:
        raise NavigationFailed(f"navigation timed out after {opts.timeout_s:g}s") from None
    except PlaywrightError as exc:
        if is_guard_refusal(error=exc):
            raise UrlNotAllowed("the page redirected to an address that is not allowed") from None
        if _crashed(exc):
            raise BrowserCrashed("the page's renderer crashed during the navigation") from None
        raise NavigationFailed(_net_error(exc)) from None
    if response is not None and is_guard_refusal(response=response):
        raise UrlNotAllowed("the page redirected to an address that is not allowed")
    status = response.status if response is not None else None
    if status is not None and status >= 500:
        raise NavigationFailed(f"the site answered HTTP {status}")
    if opts.wait_for_selector:
        try:
            await page.wait_for_selector(opts.wait_for_selector, timeout=timeout_ms)
        except PlaywrightTimeout:
            raise NavigationFailed("the wait-for selector did not appear in time") from None
    selector_present = await _selector_present(
        page, session.logged_in_selector, session.login_url_pattern
    )
    verdict, reason = decide(
        final_url=page.url,
        login_url_pattern=session.login_url_pattern,
        logged_in_selector=session.logged_in_selector,
        selector_present=selector_present,
    )
    if verdict is Verdict.LOGGED_OUT:
        return PageOutcome(page.url, status, verdict, reason)
    return PageOutcome(
        final_url=page.url,
        http_status=status,
        verdict=verdict,
        reason=reason,
        title=await page.title(),
        text=await page.evaluate(EXTRACT_JS, opts.max_text_chars) if opts.extract_text else None,
        html=await page.content() if opts.extract_html else None,
        screenshot=await page.screenshot(type="png") if opts.screenshot else None,
    )


async def _selector_present(
    page: Page, selector: str | None, login_url_pattern: str | None
) -> bool | None:
    """Whether the logged-in selector shows up within a short wait (None when not set).

    The wait ends early when the page lands on the login page (a script sent it there).
    """
    if not selector:
        return None
    waits = [
        asyncio.ensure_future(
            page.wait_for_selector(selector, state="attached", timeout=SELECTOR_WAIT_S * 1000)
        )
    ]
    if login_url_pattern:
        waits.append(
            asyncio.ensure_future(
                page.wait_for_url(
                    lambda url: url_matches(url, login_url_pattern), timeout=SELECTOR_WAIT_S * 1000
                )
            )
        )
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, *done, return_exceptions=True)
    try:
        return await page.locator(selector).count() > 0
    except PlaywrightError:
        return False


def _crashed(exc: PlaywrightError) -> bool:
    """A renderer that died under the page ("Page crashed", "Target crashed")."""
    return "crashed" in str(exc).split("\n", 1)[0].lower()


def _net_error(exc: PlaywrightError) -> str:
    """The net::ERR_* part of a navigation error, without URLs or query strings."""
    text = str(exc)
    for token in text.split():
        if token.startswith("net::"):
            return f"navigation failed: {token}"
    return "navigation failed"
