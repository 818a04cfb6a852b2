"""Health probes: open each active session's start URL every ``PROBE_INTERVAL`` (jittered).

Logged in: write back (this keeps sliding sessions alive). Logged out: the session becomes
expired and its owner gets an ``expired`` notification (no task to comment on). Anything
else (5xx, site down, a crash): inconclusive, probed again with backoff, never expired.
A session that a job holds (its lease) is not touched: the probe comes back shortly.

The scheduler claims due sessions with ``FOR UPDATE SKIP LOCKED`` and pushes their
``next_probe_at`` forward before enqueuing, so any number of replicas can run it: each due
session is enqueued by one of them, and a claim whose enqueue was lost comes due again
after ``CLAIM``. It also writes ``expiring_soon`` notifications and samples sessions by
status.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from schema import queries
from schema.enums import AuditAction, AuditResult, SessionStatus
from schema.errors import SessionNotFound
from schema.events import NO_EVENTS, Events
from schema.jobs import BrowseOptions, ProbeJob
from schema.logs import get_logger
from workers.browser.verdict import Verdict
from workers.crypto.store import Caller, next_probe_at
from workers.jobs.browse import Visiting
from workers.jobs.keepalive import WriteBack
from workers.jobs.leases import Leases

log = get_logger(__name__)

PROBE_ACTOR = "system:probe"
INCONCLUSIVE = "inconclusive"
BUSY = "busy"
CLAIM = timedelta(minutes=10)
BUSY_RETRY = timedelta(seconds=60)
BACKOFF_BASE = timedelta(minutes=5)
STOP_TIMEOUT_S = 10.0
PROBE_OPTIONS = BrowseOptions(extract_text=False, timeout_s=30)


def expired_message(label: str, site: str) -> str:
    return (
        f'The saved browser session "{label}" for {site} is no longer logged in (found by a '
        f'health check). Open Browser Sessions and click Re-login on "{label}" before your '
        "next task needs it."
    )


def expiring_message(label: str, site: str, at: datetime) -> str:
    return (
        f'The saved browser session "{label}" for {site} expires at '
        f'{at.isoformat(timespec="minutes")}. Click Re-login on "{label}" to keep tasks working.'
    )


def caller_of(job: ProbeJob) -> Caller:
    """A probe acts for the system, for no task."""
    return Caller(actor_id=PROBE_ACTOR, task_id=None, request_id=job.probe_id)


def backoff(failures: int, interval: timedelta) -> timedelta:
    """Inconclusive probes come back sooner than the interval, doubling each time."""
    base = min(BACKOFF_BASE, interval / 4)
    return min(interval, base * (1 << min(max(failures - 1, 0), 20)))


@dataclass(frozen=True, kw_only=True)
class ProbeService(Visiting):
    """Probes one session (the job names it) under its lease."""

    leases: Leases
    write_back: WriteBack
    interval: timedelta
    events: Events = NO_EVENTS
    on_expired: Callable[[], None] = lambda: None

    async def run(self, job: ProbeJob) -> str:
        """Probe once; returns the verdict (or ``busy`` / ``skipped``)."""
        try:
            session = await queries.get_session(self.db, job.session_id)
        except SessionNotFound:
            return "skipped"
        if session.status is not SessionStatus.ACTIVE:
            return "skipped"
        holder = f"probe:{job.probe_id}:{time.monotonic_ns()}"
        if not await self.leases.try_acquire(session.id, holder):
            await self._schedule(session.id, datetime.now(UTC) + BUSY_RETRY, None, None)
            self.events.probe_finished(BUSY)
            return BUSY
        async with self.leases.held(session.id, holder):
            verdict = await self._probe(job, session)
        self.events.probe_finished(verdict)
        log.info("probe_finished", verdict=verdict)
        return verdict

    async def _probe(self, job: ProbeJob, session: queries.SessionInfo) -> str:
        try:
            async with self.restored_visit(
                session,
                url=session.start_url,
                options=PROBE_OPTIONS,
                caller=caller_of(job),
                observe=True,
            ) as seen:
                await seen.write_back(self.write_back, source="probe")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code = getattr(exc, "code", type(exc).__name__)
            log.info("probe_inconclusive", error_code=code)
            failures = session.probe_failures + 1
            due = datetime.now(UTC) + backoff(failures, self.interval)
            await self._schedule(session.id, due, INCONCLUSIVE, failures)
            return INCONCLUSIVE
        if seen.outcome.verdict is Verdict.LOGGED_IN:
            await self._schedule(
                session.id, next_probe_at(self.interval), Verdict.LOGGED_IN.value, 0
            )
            return Verdict.LOGGED_IN.value
        current = await queries.session_version(self.db, session.id)
        if current != seen.version:  # a job saved a newer version meanwhile: not an expiry
            await self._schedule(session.id, datetime.now(UTC), INCONCLUSIVE, None)
            return INCONCLUSIVE
        await self._expire(job, session, seen.outcome.reason)
        return Verdict.LOGGED_OUT.value

    async def _schedule(
        self, session_id: str, due: datetime | None, verdict: str | None, failures: int | None
    ) -> None:
        await self.db.execute(
            """UPDATE browser_sessions
               SET next_probe_at = $2,
                   last_probe_at = CASE WHEN $3::text IS NULL THEN last_probe_at ELSE now() END,
                   last_probe_verdict = coalesce($3, last_probe_verdict),
                   probe_failures = coalesce($4, probe_failures)
               WHERE id = $1 AND status = 'active'""",
            session_id,
            due,
            verdict,
            failures,
        )

    async def _expire(self, job: ProbeJob, session: queries.SessionInfo, reason: str) -> None:
        async with self.db.acquire() as conn, conn.transaction():
            changed = await queries.set_session_status(
                conn, session.id, SessionStatus.EXPIRED, only_from=(SessionStatus.ACTIVE,)
            )
            await conn.execute(
                """UPDATE browser_sessions SET last_probe_at = now(),
                       last_probe_verdict = 'logged_out', next_probe_at = NULL WHERE id = $1""",
                session.id,
            )
            if not changed:
                return
            await self.audit.write(
                conn,
                action=AuditAction.EXPIRE,
                result=AuditResult.OK,
                session_id=session.id,
                detail=f"found by a health probe: {reason}",
                **caller_of(job),
            )
            await notify(
                conn,
                user_id=session.owner_id,
                session_id=session.id,
                kind="expired",
                message=expired_message(session.label, session.site),
                dedupe_key=f"expired:{session.id}:{session.version}",
            )
        self.on_expired()
        log.info("session_expired", found_by="probe")


async def notify(
    conn: Any, *, user_id: str, session_id: str, kind: str, message: str, dedupe_key: str
) -> bool:
    """One outbox row per dedupe key; True if it is new."""
    got = await conn.fetchval(
        """INSERT INTO session_notifications (user_id, session_id, kind, message, dedupe_key)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id""",
        user_id,
        session_id,
        kind,
        message,
        dedupe_key,
    )
    return got is not None


_CLAIM_SQL = """
WITH due AS (
    SELECT id FROM browser_sessions
    WHERE status = 'active' AND coalesce(next_probe_at, '-infinity') <= now()
    ORDER BY next_probe_at NULLS FIRST
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE browser_sessions b SET next_probe_at = now() + $2
FROM due WHERE b.id = due.id
RETURNING b.id"""

_EXPIRING_SQL = """
SELECT id, owner_id, label, site, expires_at FROM browser_sessions
WHERE status = 'active' AND expires_at > now() AND expires_at <= now() + $1"""


class ProbeScheduler:
    """Enqueues a probe for each due session every ``tick``; ``async with`` runs it."""

    def __init__(
        self,
        *,
        db: asyncpg.Pool,
        enqueue: Callable[[ProbeJob], Awaitable[None]],
        tick: timedelta,
        expiring_soon: timedelta,
        batch: int = 100,
        claim: timedelta = CLAIM,
        on_counts: Callable[[dict[str, int]], None] = lambda _c: None,
    ) -> None:
        self._db = db
        self._enqueue = enqueue
        self._tick = tick.total_seconds()
        self._soon = expiring_soon
        self._batch = batch
        self._claim = claim
        self._on_counts = on_counts
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> int:
        """One round: claim and enqueue due probes, expiring-soon notices, status counts."""
        async with self._db.acquire() as conn, conn.transaction():
            due = [r["id"] for r in await conn.fetch(_CLAIM_SQL, self._batch, self._claim)]
        for session_id in due:
            await self._enqueue(ProbeJob(session_id=session_id, probe_id=queries.new_id("prb")))
        async with self._db.acquire() as conn:
            for row in await conn.fetch(_EXPIRING_SQL, self._soon):
                await notify(
                    conn,
                    user_id=row["owner_id"],
                    session_id=row["id"],
                    kind="expiring_soon",
                    message=expiring_message(row["label"], row["site"], row["expires_at"]),
                    dedupe_key=f"expiring_soon:{row['id']}:{int(row['expires_at'].timestamp())}",
                )
            counts = await conn.fetch(
                "SELECT status, count(*) AS n FROM browser_sessions GROUP BY status"
            )
        self._on_counts({r["status"]: int(r["n"]) for r in counts})
        if due:
            log.info("probes_enqueued", count=len(due))
        return len(due)

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        """Tick until ``stop`` is set; a tick in progress finishes first (never cut short
        between a claim and its enqueues)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # Postgres or RabbitMQ away: try again next tick
                log.warning("probe_scheduler_tick_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._tick * random.uniform(0.8, 1.2))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ProbeScheduler]:
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self.run_forever(stop))
        try:
            yield self
        finally:
            stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
