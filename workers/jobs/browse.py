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
from typing import Any, TypedDict

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
from workers.browser.restore import RestorePlan, install_restore_script, plan_restore
from workers.browser.verdict import Verdict, decide, url_matches
from workers.crypto.store import Caller, StateStore
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

    def result(self, job: BrowseJob, *, attempts: int, duration_ms: int) -> BrowseResult:
        """The result of ``job``, which ended on this page."""
        return BrowseResult(
            **ids_of(job),
            outcome=BrowseOutcome.OK,
            final_url=self.final_url,
            http_status=self.http_status,
            title=self.title,
            text=self.text,
            html=self.html,
            screenshot=self.screenshot,
            attempts=attempts,
            duration_ms=duration_ms,
        )


@dataclass(frozen=True, kw_only=True)
class Visiting:
    """What a job that visits a page as a saved session holds: the session rows (``db``), its
    encrypted states (``store``), the browsers to restore them into (``pool``) and the
    audit log for the job's own rows."""

    db: asyncpg.Pool
    pool: BrowserPool
    store: StateStore
    audit: AuditLog

    @contextlib.asynccontextmanager
    async def restored_visit(
        self,
        session: queries.SessionInfo,
        *,
        url: str,
        options: BrowseOptions,
        caller: Caller,
        observe: bool,
    ) -> AsyncIterator[Visit]:
        """Decrypt (audited, for ``caller``), restore into a fresh context, visit; inside the
        block the restored and observed values are registered for log redaction."""
        state, version = await self.store.load_versioned(
            self.db, session_id=session.id, owner_id=session.owner_id, **caller
        )
        with secret_values(state_secret_values(state)):
            outcome = await open_and_visit(
                self.pool,
                plan_restore(state),
                url=url,
                options=options,
                session=session,
                observe=observe,
            )
            with secret_values(state_secret_values(outcome.final_state or {})):
                yield Visit(session, caller, state, version, outcome)


@dataclass(frozen=True, kw_only=True)
class BrowseService(Visiting):
    """Runs one browse job end to end against the pool; stores exactly one result."""

    guard: UrlGuard
    on_expired: Callable[[ExpireJob], Awaitable[None]]
    leases: Leases | None = None
    write_back: WriteBack | None = None
    lease_wait: timedelta = timedelta(seconds=90)
    #: The whole job's time (lease wait included); past it the job fails with
    #: ``NAVIGATION_FAILED`` (retryable) and, on its last attempt, stores that result.
    budget: timedelta | None = None

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
        if await result_exists(self.db, job.job_id):
            log.info("browse_duplicate_skipped")
            return "duplicate"
        started = time.monotonic()
        try:
            outcome = await self._within_budget(job)
        except BrowserSessionsError as err:
            if retry(err) if retry is not None else err.retryable and not final_attempt:
                raise
            await self._finish_error(job, err, attempt, started)
            return err.code
        elapsed = int((time.monotonic() - started) * 1000)
        await self.db.execute(
            "UPDATE browser_sessions SET last_used_at = now() WHERE id = $1", job.session_id
        )
        if outcome.verdict is Verdict.LOGGED_OUT:
            expired = AuthSessionExpired(
                f"the saved session is no longer logged in ({outcome.reason}); re-login needed"
            )
            await self._finish_error(job, expired, attempt, started)
            return expired.code
        await store_result(self.db, outcome.result(job, attempts=attempt, duration_ms=elapsed))
        return BrowseOutcome.OK.value

    async def _within_budget(self, job: BrowseJob) -> PageOutcome:
        seconds = self.budget.total_seconds() if self.budget is not None else None
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await self._authorised_browse(job)
        except TimeoutError:
            if not deadline.expired():
                raise  # a timeout of its own inside the job, not the budget's
            raise NavigationFailed(f"the job ran past its time budget of {seconds:g}s") from None

    async def _authorised_browse(self, job: BrowseJob) -> PageOutcome:
        session = await self._authorise(job)
        self.guard.check_site(
            job.url, start_url=session.start_url, extra_origins=session.extra_origins
        )
        await self.guard.check_url(job.url)
        async with (
            self._lease(session, job.job_id),
            self.restored_visit(
                session,
                url=job.url,
                options=job.options,
                caller=caller_of(job),
                observe=self.write_back is not None,
            ) as seen,
        ):
            await self._audit_use(job, AuditResult.OK, seen.outcome.verdict.value)
            await self._keep(seen)
        return dataclasses.replace(seen.outcome, final_state=None)

    def _lease(
        self, session: queries.SessionInfo, job_id: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        # Without write-back nothing learns whether the site rotates: only a forced mode counts.
        exclusive = session.exclusive if self.write_back else session.lease_mode == "exclusive"
        if self.leases is None or not exclusive:
            return contextlib.nullcontext()
        return self.leases.hold(session.id, f"{job_id}:{time.monotonic_ns()}", wait=self.lease_wait)

    async def _keep(self, seen: Visit) -> None:
        """Write back after a logged-in verdict; after a logged-out one, tell a lost race
        (another job saved a newer version meanwhile: retry) from an expiry."""
        if self.write_back is None:
            return
        if seen.outcome.verdict is Verdict.LOGGED_OUT:
            self.write_back.events.write_back(WriteBackResult.REFUSED_LOGGED_OUT)
            current = await queries.session_version(self.db, seen.session.id)
            if current is not None and current != seen.version:
                raise VersionConflict(
                    "a newer version of the session was saved while this job ran; retrying"
                )
            return
        await seen.write_back(self.write_back, source="write_back")

    async def _authorise(self, job: BrowseJob) -> queries.SessionInfo:
        """Owner binding and status checks, before any browser or key is touched."""
        session = await queries.get_session(self.db, job.session_id)
        task_owner = await queries.task_owner(self.db, job.task_id)
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
        await self.audit.write(
            self.db,
            action=AuditAction.USE,
            result=result,
            session_id=job.session_id,
            detail=detail,
            **caller_of(job),
        )

    async def _finish_error(
        self, job: BrowseJob, err: BrowserSessionsError, attempt: int, started: float
    ) -> None:
        if isinstance(err, AuthSessionExpired):
            # Before the result: a job that dies in between runs again and sends it again
            # (expiry is idempotent); sent after the result, a lost message stays lost.
            await self.on_expired(
                ExpireJob(session_id=job.session_id, task_id=job.task_id, job_id=job.job_id)
            )
        elapsed = int((time.monotonic() - started) * 1000)
        failure = failure_of(job, err.code, err.message, attempts=attempt, duration_ms=elapsed)
        await store_result(self.db, failure)


def caller_of(job: BrowseJob) -> Caller:
    """A browse job acts for its task's owner."""
    return Caller(actor_id=job.owner_id, task_id=job.task_id, request_id=job.job_id)


class JobIds(TypedDict):
    """What names a browse job's result row."""

    job_id: str
    task_id: str
    owner_id: str
    session_id: str


def ids_of(job: BrowseJob) -> JobIds:
    return JobIds(
        job_id=job.job_id, task_id=job.task_id, owner_id=job.owner_id, session_id=job.session_id
    )


def failure_of(
    job: BrowseJob, code: str, message: str, *, attempts: int, duration_ms: int | None = None
) -> BrowseResult:
    """The failed result of ``job``."""
    return BrowseResult.failure(
        **ids_of(job), code=code, message=message, attempts=attempts, duration_ms=duration_ms
    )


@dataclass(frozen=True)
class Visit:
    """A visit with a restored session: the session, whom the visit's audit rows name, the
    state and version it restored (secrets), and its outcome."""

    session: queries.SessionInfo
    caller: Caller
    state: dict[str, Any]
    version: int
    outcome: PageOutcome

    async def write_back(self, write_back: WriteBack, *, source: str) -> None:
        """Save what a logged-in visit observed (if it did) as the session's next version."""
        final = self.outcome.final_state
        if final is None:
            return
        await write_back.apply(
            session=self.session,
            base=self.state,
            base_version=self.version,
            final=final,
            source=source,
            caller=self.caller,
        )


async def open_and_visit(
    pool: BrowserPool,
    plan: RestorePlan,
    *,
    url: str,
    options: BrowseOptions,
    session: queries.SessionInfo,
    observe: bool = False,
) -> PageOutcome:
    """A fresh pooled context with the state restored, one visit, the context closed.

    With ``observe``, a logged-in outcome carries the context's state at the end (secrets:
    for the write-back only)."""
    async with pool.context(**BROWSE_CONTEXT_OPTIONS, **plan.context_options) as context:
        outcome = await visit(
            context, url=url, options=options, session=session, init_script=plan.init_script
        )
        if observe and outcome.verdict is Verdict.LOGGED_IN:
            origins = plan.context_options["storage_state"]["origins"]
            idb = any(o.get("indexedDB") for o in origins)
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
