"""Wait for browse results: one dedicated LISTEN connection per client, plus polling.

NOTIFY is lost while disconnected, so every waiter also polls the table at an interval;
the notification only makes the common case fast. A database outage during the wait is
ridden out (the listener reconnects, polling goes on) until the deadline, which then ends
in ``SERVICE_UNAVAILABLE`` instead of ``RESULT_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import asyncpg

from schema.db import connect
from schema.errors import ResultTimeout, ServiceUnavailable
from schema.logs import get_logger
from schema.outages import describe, is_outage
from schema.results import RESULTS_CHANNEL, BrowseResult, fetch_result

log = get_logger(__name__)


class ResultWaiter:
    """``await waiter.wait(job_id, owner_id=..., timeout=...)`` → the stored result."""

    def __init__(
        self,
        *,
        database_url: str,
        db: asyncpg.Pool,
        poll_interval: timedelta = timedelta(seconds=1),
    ) -> None:
        self._database_url = database_url
        self._db = db
        self._poll = poll_interval.total_seconds()
        self._events: dict[str, asyncio.Event] = {}
        self._listener: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._next_attempt = 0.0

    async def _ensure_listener(self) -> None:
        async with self._lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            now = asyncio.get_running_loop().time()
            if now < self._next_attempt:
                return
            self._next_attempt = now + self._poll
            try:
                conn = await connect(self._database_url)
                await conn.add_listener(RESULTS_CHANNEL, self._on_notify)
                self._listener = conn
            except Exception as exc:  # polling still delivers the result
                log.warning("result_listener_unavailable", error=type(exc).__name__)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, job_id: str) -> None:
        event = self._events.get(job_id)
        if event is not None:
            event.set()

    async def wait(self, job_id: str, *, owner_id: str, timeout: timedelta) -> BrowseResult:
        event = self._events.setdefault(job_id, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        outage: BaseException | None = None
        try:
            while True:
                await self._ensure_listener()
                try:
                    result = await fetch_result(self._db, job_id, owner_id=owner_id)
                    outage = None
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    outage = exc
                    result = None
                if result is not None:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    if outage is not None:
                        raise ServiceUnavailable(describe(outage)) from None
                    raise ResultTimeout(
                        f"no result for job {job_id} within {timeout.total_seconds():g}s"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(self._poll, remaining))
                event.clear()
        finally:
            self._events.pop(job_id, None)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=5)
            self._listener = None
