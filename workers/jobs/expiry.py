"""The expiry job: mark the session expired, fail the task, post one comment on it.

Only for a task whose owner is the session's owner: a job naming someone else's task (or
no task) changes nothing and is audited as denied. Idempotent: the status change happens
once, the task update is a no-op the second time, and the comment is deduplicated per
(task, session, session version).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from schema import queries
from schema.audit import AuditLog
from schema.enums import AuditAction, AuditResult, SessionStatus
from schema.errors import AuthSessionExpired, NotOwner, SessionNotFound, TaskNotFound
from schema.events import NO_EVENTS, Events
from schema.jobs import ExpireJob
from schema.logs import get_logger

log = get_logger(__name__)


def expiry_comment(label: str, site: str) -> str:
    """What the user reads on their task."""
    return (
        f'The saved browser session "{label}" for {site} has expired, so this task could not '
        f"browse as you ({AuthSessionExpired.code}). Open Browser Sessions and click Re-login "
        f'on "{label}" to log in again; later tasks will use the fresh session.'
    )


@dataclass(frozen=True, kw_only=True)
class ExpiryService:
    db: asyncpg.Pool
    audit: AuditLog
    events: Events = NO_EVENTS

    async def run(self, job: ExpireJob) -> bool:
        """Apply the expiry; True if a new comment was posted."""
        posted = await self._apply(job)
        await self.audit.checkpoint(self.db)  # its audit row committed with the change
        return posted

    async def _apply(self, job: ExpireJob) -> bool:
        async with self.db.acquire() as conn, conn.transaction():
            try:
                session = await queries.get_session(conn, job.session_id)
            except SessionNotFound:
                log.info("expiry_session_gone")
                return False
            owner = await queries.task_owner(conn, job.task_id)
            if owner != session.owner_id:
                await self._write_audit(
                    conn,
                    job,
                    session.id,
                    AuditResult.DENIED,
                    TaskNotFound.code if owner is None else NotOwner.code,
                )
                log.info("expiry_refused", reason="no task" if owner is None else "not owner")
                return False
            changed = await queries.set_session_status(
                conn, session.id, SessionStatus.EXPIRED, only_from=(SessionStatus.ACTIVE,)
            )
            if changed:
                await self._write_audit(
                    conn, job, session.id, AuditResult.OK, "login check failed during a browse"
                )
            await conn.execute(
                """UPDATE tasks SET status = 'failed', error_code = $2, updated_at = now()
                   WHERE id = $1 AND (status <> 'failed' OR error_code IS DISTINCT FROM $2)""",
                job.task_id,
                AuthSessionExpired.code,
            )
            posted = await conn.fetchval(
                """INSERT INTO task_comments (task_id, body, dedupe_key)
                   VALUES ($1, $2, $3)
                   ON CONFLICT (task_id, dedupe_key) DO NOTHING RETURNING id""",
                job.task_id,
                expiry_comment(session.label, session.site),
                f"{AuthSessionExpired.code}:{session.id}:{session.version}",
            )
        if changed:
            self.events.session_expired()
        log.info("session_expired", newly_expired=changed, comment_posted=posted is not None)
        return posted is not None

    async def _write_audit(
        self,
        conn: asyncpg.Connection,
        job: ExpireJob,
        session_id: str,
        result: AuditResult,
        detail: str,
    ) -> None:
        """The expiry's audit row: by the system, for the job's task and request."""
        await self.audit.write(
            conn,
            actor_id="system",
            action=AuditAction.EXPIRE,
            result=result,
            session_id=session_id,
            task_id=job.task_id,
            request_id=job.job_id,
            detail=detail,
        )
