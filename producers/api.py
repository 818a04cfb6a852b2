"""The orchestrator's Python API: sessions, captures, imports and browse jobs.

Light by design: no Playwright, no key that decrypts. Imported states are sealed to the
workers' public key before they leave this process.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, NotRequired, TypedDict, Unpack

import asyncpg

from producers.enqueue import Enqueuer
from producers.validation import (
    optional_login_glob,
    optional_text,
    require_http_url,
    require_id,
    require_label,
    site_of,
)
from producers.waiter import ResultWaiter
from schema import liveview, queries, versions
from schema.audit import AuditLog
from schema.db import create_pool
from schema.enums import AuditAction, AuditResult, CaptureSignal, CaptureState, SessionStatus
from schema.errors import (
    BrowserSessionsError,
    CaptureClosed,
    InvalidInput,
    NotOwner,
    SessionRevoked,
    VersionNotFound,
)
from schema.jobs import BrowseJob, BrowseOptions, CaptureJob, ImportJob, RollbackJob
from schema.keywords import check_keywords
from schema.outages import service_errors
from schema.results import BrowseResult
from schema.sealing import current_seal_key, seal_aad, seal_text
from schema.settings import Settings

CAPTURE_CHANNEL = "capture_signals"


class NewSession(TypedDict):
    """A new session's fields (``add_session``, ``start_import``); the optional ones may be
    left out, but one of ``logged_in_selector`` and ``login_url_pattern`` must be given."""

    owner_id: str
    label: str
    start_url: str
    logged_in_selector: NotRequired[str | None]
    login_url_pattern: NotRequired[str | None]
    extra_origins: NotRequired[Sequence[str]]


class BrowseRequest(TypedDict):
    """What a browse job is about (``enqueue_browse``, ``browse``)."""

    task_id: str
    owner_id: str
    session_id: str
    url: str
    options: NotRequired[BrowseOptions | None]


@service_errors  # a database or broker outage is SERVICE_UNAVAILABLE, never a raw exception
class SessionsClient:
    """``async with SessionsClient.open(settings) as client: ...``"""

    def __init__(
        self, *, settings: Settings, db: asyncpg.Pool, enqueuer: Enqueuer, audit: AuditLog
    ) -> None:
        self.settings = settings
        self.db = db
        self._enqueuer = enqueuer
        self._audit = audit
        self._waiter = ResultWaiter(database_url=settings.database_url, db=db)
        self._ticket_key: bytes | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[SessionsClient]:
        db = await create_pool(settings.database_url, min_size=1, max_size=5)
        enqueuer = Enqueuer(settings=settings)
        client = cls(
            settings=settings,
            db=db,
            enqueuer=enqueuer,
            audit=AuditLog.from_settings(settings, side="producers"),
        )
        try:
            yield client
        finally:
            await client._waiter.close()
            enqueuer.close()
            await db.close()

    # -- sessions ---------------------------------------------------------------------

    async def add_session(self, **fields: Unpack[NewSession]) -> dict[str, str]:
        """Create a pending session and start its capture (the login window)."""
        check_keywords(NewSession, fields, call="add_session()")
        session_id = await self._create_session(fields)
        owner_id = fields["owner_id"]
        capture_id = await self._start_capture(session_id, owner_id, actor_id=owner_id)
        return {"session_id": session_id, "capture_id": capture_id}

    async def import_session(
        self, *, timeout: timedelta = timedelta(seconds=90), **fields: Any
    ) -> dict[str, Any]:
        """Create a session from a storageState file, sealed to the workers; waits until a
        worker has verified it logged in (``CAPTURE_NOT_LOGGED_IN`` otherwise). ``fields``
        are :meth:`start_import`'s."""
        started = await self.start_import(**fields)
        await self.finish_import(started["capture_id"], timeout=timeout)
        return {**started, "status": "active"}

    async def start_import(self, *, state: bytes, **fields: Unpack[NewSession]) -> dict[str, str]:
        """Create the pending session and enqueue its sealed state for verification; the
        import's progress is its capture (kind ``import``)."""
        check_keywords(NewSession, fields, call="start_import()")
        _check_state_file(state, self.settings.max_state_bytes)
        seal_key = await current_seal_key(self.db)
        session_id = await self._create_session(fields)
        owner_id = fields["owner_id"]
        capture_id = await queries.insert_capture(
            self.db, session_id=session_id, owner_id=owner_id, kind="import"
        )
        sealed = seal_text(
            seal_key.public_key,
            seal_key.key_id,
            state,
            seal_aad(owner_id=owner_id, session_id=session_id),
        )
        job = ImportJob(
            capture_id=capture_id, session_id=session_id, owner_id=owner_id, sealed_state=sealed
        )
        await self._enqueuer.send_async("import_state", job.to_message())
        return {"session_id": session_id, "capture_id": capture_id}

    async def finish_import(
        self, capture_id: str, *, timeout: timedelta = timedelta(seconds=90)
    ) -> queries.CaptureInfo:
        """Wait for an import's verdict; a refused or unverified import's session is
        deleted and its error raised."""
        capture = await self.wait_capture(capture_id, timeout=timeout)
        if capture.state is not CaptureState.SAVED:
            await queries.delete_session(self.db, capture.session_id)
            raise _capture_error(capture)
        return capture

    async def list_sessions(self, owner_id: str) -> list[queries.SessionInfo]:
        return await queries.list_sessions(
            self.db, require_id("owner", owner_id), expiring_soon=self.settings.expiring_soon
        )

    # -- versions, lease mode, notifications ---------------------------------------------

    async def versions(self, session_id: str, *, actor_id: str) -> dict[str, Any]:
        """The kept versions (when, from which job or capture, admitted by which verdict);
        the owner or an admin (``Settings.admins``)."""
        session, _ = await self._owned(session_id, actor_id, AuditAction.USE)
        kept = await versions.list_versions(self.db, session.id, session.version)
        return {
            "session_id": session.id,
            "current_version": session.version,
            "versions": [v.to_dict() for v in kept],
        }

    async def rollback(
        self,
        session_id: str,
        *,
        to: int,
        actor_id: str,
        timeout: timedelta = timedelta(seconds=60),
    ) -> dict[str, Any]:
        """Make kept version ``to`` current again, as a new version; owner or admin.

        A worker re-encrypts it (a saved state is bound to its row version, so a ciphertext
        is never copied back); this waits for that."""
        session, by = await self._owned(session_id, actor_id, AuditAction.ROLLBACK)
        if session.status is SessionStatus.REVOKED:
            raise SessionRevoked("a revoked session keeps no versions")
        if not await versions.is_kept(self.db, session.id, to):
            raise VersionNotFound(f"version {to} of this session is not kept")
        job = RollbackJob(
            session_id=session.id,
            owner_id=session.owner_id,
            actor_id=actor_id,
            version=to,
            request_id=queries.new_id("rbk"),
        )
        await self._write_audit(
            self.db,
            actor_id,
            AuditAction.ROLLBACK,
            AuditResult.OK,
            session.id,
            f"version {to} requested {by} ({job.request_id})",
        )
        await self._enqueuer.send_async(job.kind, job.to_message())
        new = await versions.wait_rollback(self.db, job.request_id, timeout=timeout)
        return {"session_id": session.id, "version": new, "restored_from": to}

    async def set_lease_mode(self, session_id: str, *, mode: str, actor_id: str) -> dict[str, Any]:
        """``auto`` (one job at a time once the site is seen rotating tokens), ``exclusive``
        or ``parallel``; owner or admin."""
        session, by = await self._owned(session_id, actor_id, AuditAction.LEASE_MODE)
        async with self.db.acquire() as conn, conn.transaction():
            await versions.set_lease_mode(conn, session.id, mode)
            await self._write_audit(
                conn, actor_id, AuditAction.LEASE_MODE, AuditResult.OK, session.id, f"{mode} {by}"
            )
        return {"session_id": session.id, "lease_mode": mode}

    async def notifications(self, user_id: str, *, pending_only: bool = True) -> list[Any]:
        """The user's outbox rows (``expired`` / ``expiring_soon``), oldest first."""
        return await versions.notifications(
            self.db, require_id("user", user_id), pending_only=pending_only
        )

    async def mark_delivered(self, user_id: str, ids: Sequence[int]) -> list[int]:
        """Mark the user's notifications delivered; returns the ids that changed."""
        return await versions.mark_delivered(self.db, require_id("user", user_id), list(ids))

    async def get_session(
        self, session_id: str, *, actor_id: str, admin: bool = False
    ) -> queries.SessionInfo:
        session, _ = await self._owned(session_id, actor_id, AuditAction.USE, admin=admin)
        return session

    async def relogin(self, session_id: str, *, actor_id: str) -> dict[str, str]:
        """Start a fresh capture into an existing session (its owner only)."""
        session, _ = await self._owned(session_id, actor_id, AuditAction.RELOGIN, owner_only=True)
        if session.status is SessionStatus.REVOKED:
            raise SessionRevoked("a revoked session cannot be re-logged in; add a new one")
        capture_id = await self._start_capture(session.id, session.owner_id, actor_id=actor_id)
        return {"session_id": session.id, "capture_id": capture_id}

    async def revoke(
        self, session_id: str, *, actor_id: str, admin: bool = False
    ) -> dict[str, str]:
        async def revoke(conn: asyncpg.Connection, session_id: str) -> None:
            await queries.set_session_status(conn, session_id, SessionStatus.REVOKED)

        revoked = await self._end(session_id, actor_id, admin, AuditAction.REVOKE, revoke)
        return {"session_id": revoked, "status": SessionStatus.REVOKED.value}

    async def delete(
        self, session_id: str, *, actor_id: str, admin: bool = False
    ) -> dict[str, Any]:
        deleted = await self._end(
            session_id, actor_id, admin, AuditAction.DELETE, queries.delete_session
        )
        return {"session_id": deleted, "deleted": True}

    async def _end(
        self,
        session_id: str,
        actor_id: str,
        admin: bool,
        action: AuditAction,
        change: Callable[[asyncpg.Connection, str], Awaitable[object]],
    ) -> str:
        """Revoke or delete: ``change`` the owned (or admin's) session and audit it in one
        transaction, then checkpoint the audit chain; returns the session's id."""
        session, by = await self._owned(session_id, actor_id, action, admin=admin)
        async with self.db.acquire() as conn, conn.transaction():
            await change(conn, session.id)
            await self._write_audit(conn, actor_id, action, AuditResult.OK, session.id, by)
        await self._audit.checkpoint(self.db)
        return session.id

    # -- captures ---------------------------------------------------------------------

    async def capture_status(self, capture_id: str, *, actor_id: str) -> queries.CaptureInfo:
        """The capture's state; while it is open, with a fresh live-view URL for its owner.

        Anyone else gets `NotOwner` (audited): the live view lets its holder drive a login.
        """
        capture = await self._owned_capture(capture_id, actor_id, "status", AuditAction.USE)
        if not liveview.viewable(capture):
            return capture  # nothing to view yet (or any more): no key needed
        return await liveview.mint_ticket(self.db, self._liveview_key(), capture)

    async def save_capture(self, capture_id: str, *, actor_id: str) -> queries.CaptureInfo:
        return await self._signal(capture_id, actor_id, CaptureSignal.SAVE)

    async def cancel_capture(self, capture_id: str, *, actor_id: str) -> queries.CaptureInfo:
        return await self._signal(capture_id, actor_id, CaptureSignal.CANCEL)

    async def wait_capture(
        self,
        capture_id: str,
        *,
        states: Sequence[CaptureState] = tuple(CaptureState),
        final_only: bool = True,
        timeout: timedelta = timedelta(seconds=60),
    ) -> queries.CaptureInfo:
        """Poll until the capture reaches a final state (or one of ``states``)."""
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        wanted = set(states)
        while True:
            capture = await queries.get_capture(self.db, capture_id)
            if capture.state.is_final if final_only else capture.state in wanted:
                return capture
            if loop.time() >= deadline:
                return capture
            await asyncio.sleep(0.2)

    # -- tasks and browse -------------------------------------------------------------

    async def add_task(self, task_id: str, *, owner_id: str) -> dict[str, str]:
        """Insert the minimal task row a browse needs, for an orchestrator without its own
        ``tasks`` writer (the CLI, demos). Idempotent; ``NOT_OWNER`` if the task exists with
        another owner. Browse jobs never create tasks."""
        task_id, owner_id = require_id("task", task_id), require_id("owner", owner_id)
        if await queries.insert_task(self.db, task_id=task_id, owner_id=owner_id) != owner_id:
            raise NotOwner("the task belongs to another user")
        return {"task_id": task_id, "owner_id": owner_id}

    async def enqueue_browse(
        self, *, job_id: str | None = None, **request: Unpack[BrowseRequest]
    ) -> str:
        """Enqueue a browse job for an existing task of ``owner_id``; returns its job id (the
        result key). The worker refuses a missing task (``TASK_NOT_FOUND``) or one owned by
        someone else (``NOT_OWNER``)."""
        check_keywords(BrowseRequest, request, call="enqueue_browse()")
        job = BrowseJob(
            job_id=job_id or queries.new_id("job"),
            task_id=require_id("task", request["task_id"]),
            owner_id=require_id("owner", request["owner_id"]),
            session_id=require_id("session", request["session_id"]),
            url=require_http_url("url", request["url"]),
            options=request.get("options") or BrowseOptions(),
        )
        await self._enqueuer.send_async("browse", job.to_message())
        return job.job_id

    async def wait_result(
        self, job_id: str, *, owner_id: str, timeout: timedelta | None = None
    ) -> BrowseResult:
        return await self._waiter.wait(
            job_id, owner_id=owner_id, timeout=timeout or self.settings.result_timeout
        )

    async def browse(
        self, *, timeout: timedelta | None = None, **job: Unpack[BrowseRequest]
    ) -> BrowseResult:
        """Enqueue a browse job (:meth:`enqueue_browse`'s fields) and await its result."""
        job_id = await self.enqueue_browse(**job)
        return await self.wait_result(job_id, owner_id=job["owner_id"], timeout=timeout)

    # -- internals --------------------------------------------------------------------

    async def _create_session(self, fields: NewSession) -> str:
        owner_id = require_id("owner", fields["owner_id"])
        start_url = require_http_url("start_url", fields["start_url"])
        origins = [require_http_url("extra origin", o) for o in fields.get("extra_origins", ())]
        selector = optional_text("logged_in_selector", fields.get("logged_in_selector"))
        pattern = optional_login_glob(fields.get("login_url_pattern"))
        if not selector and not pattern:
            raise InvalidInput(
                "give a logged_in_selector or a login_url_pattern so expiry can be detected"
            )
        async with self.db.acquire() as conn, conn.transaction():
            session_id = await queries.insert_session(
                conn,
                owner_id=owner_id,
                label=require_label(fields["label"]),
                start_url=start_url,
                site=site_of(start_url),
                logged_in_selector=selector,
                login_url_pattern=pattern,
                extra_origins=origins,
            )
            await self._write_audit(
                conn, owner_id, AuditAction.CREATE, AuditResult.OK, session_id, "session added"
            )
        await self._audit.checkpoint(self.db)
        return session_id

    async def _start_capture(self, session_id: str, owner_id: str, *, actor_id: str) -> str:
        capture_id = await queries.insert_capture(self.db, session_id=session_id, owner_id=owner_id)
        job = CaptureJob(capture_id=capture_id, session_id=session_id, owner_id=owner_id)
        try:
            await self._enqueuer.send_async("capture", job.to_message())
        except BrowserSessionsError:
            await self.db.execute(
                "UPDATE captures SET state = 'failed', reason = 'could not be queued', "
                "finished_at = now(), updated_at = now() WHERE id = $1",
                capture_id,
            )
            raise
        await self._write_audit(
            self.db,
            actor_id,
            AuditAction.CAPTURE_START,
            AuditResult.OK,
            session_id,
            f"login window requested ({capture_id})",
        )
        return capture_id

    def _liveview_key(self) -> bytes:
        if self._ticket_key is None:
            # The workers' copy: a key of the producers' own would mint tickets that open nothing.
            self._ticket_key = liveview.load_liveview_key(self.settings.key_dir, create=False)
        return self._ticket_key

    async def _owned_capture(
        self, capture_id: str, actor_id: str, what: str, action: AuditAction
    ) -> queries.CaptureInfo:
        actor_id = require_id("actor", actor_id)
        capture = await queries.get_capture(self.db, require_id("capture", capture_id))
        if capture.owner_id != actor_id:
            await self._deny(actor_id, action, capture.session_id, f"capture {what} by non-owner")
            raise NotOwner("this capture belongs to another user")
        return capture

    async def _signal(
        self, capture_id: str, actor_id: str, signal: CaptureSignal
    ) -> queries.CaptureInfo:
        capture = await self._owned_capture(
            capture_id, actor_id, signal.value, AuditAction.CAPTURE_CANCEL
        )
        if capture.state.is_final:
            raise CaptureClosed(f"the capture is already {capture.state.value}")
        await self.db.execute(
            """UPDATE captures SET signal = $2, signal_at = now(), updated_at = now()
               WHERE id = $1""",
            capture.id,
            signal.value,
        )
        await self.db.execute("SELECT pg_notify($1, $2)", CAPTURE_CHANNEL, capture.id)
        return await self.capture_status(capture.id, actor_id=actor_id)

    def is_admin(self, actor_id: str) -> bool:
        """Whether ``actor_id`` is a configured admin (``BROWSER_SESSIONS_ADMINS``)."""
        return actor_id in self.settings.admins

    async def _owned(
        self,
        session_id: str,
        actor_id: str,
        action: AuditAction,
        *,
        admin: bool = False,
        owner_only: bool = False,
    ) -> tuple[queries.SessionInfo, str]:
        """The session, if ``actor_id`` owns it or is a configured admin; and who acted.

        ``admin=True`` is only a request: it is refused (``NOT_OWNER``, audited) unless the
        actor is in ``Settings.admins``. Admin rights never come from the caller's word.
        """
        actor_id = require_id("actor", actor_id)
        session = await queries.get_session(self.db, require_id("session", session_id))
        if admin and not self.is_admin(actor_id):
            await self._deny(actor_id, action, session.id, "admin request by a non-admin")
            raise NotOwner("the actor is not a configured admin")
        if session.owner_id == actor_id and not admin:
            return session, "by owner"
        if not owner_only and self.is_admin(actor_id):
            return session, "by admin"
        await self._deny(actor_id, action, session.id, "not the owner")
        raise NotOwner("this session belongs to another user")

    async def _deny(self, actor_id: str, action: AuditAction, session_id: str, why: str) -> None:
        await self._write_audit(self.db, actor_id, action, AuditResult.DENIED, session_id, why)

    async def _write_audit(
        self,
        db: asyncpg.Connection | asyncpg.Pool,
        actor_id: str,
        action: AuditAction,
        result: AuditResult,
        session_id: str,
        detail: str,
    ) -> None:
        await self._audit.write(  # takes a connection or a pool
            db,
            actor_id=actor_id,
            action=action,
            result=result,
            session_id=session_id,
            detail=detail,
        )


def _check_state_file(state: bytes, limit: int) -> None:
    """A storageState file must be JSON with cookies/origins lists, within the size limit."""
    if len(state) > limit:
        raise InvalidInput(f"the state file is larger than {limit} bytes")
    try:
        data = json.loads(state)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput("the state file is not valid JSON") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("cookies", []), list)
        or not isinstance(data.get("origins", []), list)
    ):
        raise InvalidInput("the state file is not a Playwright storageState (cookies, origins)")


def _capture_error(capture: queries.CaptureInfo) -> BrowserSessionsError:
    from schema.errors import CaptureNotLoggedIn, CaptureTimeout, from_code

    if capture.state is CaptureState.NOT_LOGGED_IN or capture.error_code == CaptureNotLoggedIn.code:
        return CaptureNotLoggedIn(capture.reason or "the state is not logged in")
    if not capture.state.is_final:
        return CaptureTimeout("the state was not verified in time")
    return from_code(capture.error_code or "INTERNAL_ERROR", capture.reason or capture.state.value)
