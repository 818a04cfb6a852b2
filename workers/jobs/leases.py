"""Per-session leases in Postgres: one job at a time on a session whose site rotates tokens.

A lease has a short deadline that its holder pushes on while its job runs, so a worker
killed while holding one blocks others for at most ``ttl`` (15 s); it is taken over after
that. Waiting polls the row (no NOTIFY: a lease is short and a lost wake-up must not strand
a job).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import asyncpg

from schema.errors import ServiceUnavailable, SessionNotFound
from schema.logs import get_logger
from schema.outages import describe

POLL_S = (0.05, 0.15)
LEASE_DEADLINE = timedelta(seconds=15)  # renewed every third of it while held

log = get_logger(__name__)


class Leases:
    """``async with leases.hold(session_id, holder, wait=...): ...``"""

    def __init__(
        self,
        db: asyncpg.Pool,
        *,
        ttl: timedelta = LEASE_DEADLINE,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self._db = db
        self._ttl = ttl
        self._on_wait = on_wait or (lambda _s: None)

    async def try_acquire(self, session_id: str, holder: str) -> bool:
        """Take the lease if it is free or its holder's deadline passed."""
        try:
            got = await self._db.fetchval(
                """INSERT INTO session_leases (session_id, holder, deadline)
                   VALUES ($1, $2, now() + $3)
                   ON CONFLICT (session_id) DO UPDATE
                       SET holder = EXCLUDED.holder, acquired_at = now(),
                           deadline = EXCLUDED.deadline
                       WHERE session_leases.deadline < now()
                          OR session_leases.holder = EXCLUDED.holder
                   RETURNING holder""",
                session_id,
                holder,
                self._ttl,
            )
        except asyncpg.ForeignKeyViolationError:
            raise SessionNotFound("the session was deleted") from None
        return got is not None

    async def release(self, session_id: str, holder: str) -> None:
        await self._db.execute(
            "DELETE FROM session_leases WHERE session_id = $1 AND holder = $2", session_id, holder
        )

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str, holder: str, *, wait: timedelta) -> AsyncIterator[None]:
        """Wait up to ``wait`` for the lease (``ServiceUnavailable``, retryable, after that)."""
        started = time.monotonic()
        deadline = started + wait.total_seconds()
        while not await self.try_acquire(session_id, holder):
            if time.monotonic() >= deadline:
                self._on_wait(time.monotonic() - started)
                raise ServiceUnavailable("another job held this session for too long")
            await asyncio.sleep(random.uniform(*POLL_S))
        self._on_wait(time.monotonic() - started)
        async with self.held(session_id, holder):
            yield

    @contextlib.asynccontextmanager
    async def held(self, session_id: str, holder: str) -> AsyncIterator[None]:
        """A lease ``holder`` has taken: renewed while the block runs, released at its end."""
        renewing = asyncio.create_task(self._renew(session_id, holder))
        try:
            yield
        finally:
            renewing.cancel()
            await asyncio.shield(self.release(session_id, holder))

    async def renew(self, session_id: str, holder: str) -> bool:
        """Push the deadline on; False if the lease is no longer ``holder``'s."""
        status = await self._db.execute(
            """UPDATE session_leases SET deadline = now() + $3
               WHERE session_id = $1 AND holder = $2""",
            session_id,
            holder,
            self._ttl,
        )
        return bool(status != "UPDATE 0")

    async def _renew(self, session_id: str, holder: str) -> None:
        """While the job runs; a holder that dies stops renewing and its lease lapses."""
        while True:
            await asyncio.sleep(self._ttl.total_seconds() / 3)
            try:
                if not await self.renew(session_id, holder):
                    log.warning("lease_lost")  # it lapsed (an outage longer than the ttl)
                    return
            except Exception as exc:  # an outage: the next renewal tries again
                log.warning("lease_renew_failed", error=describe(exc))
