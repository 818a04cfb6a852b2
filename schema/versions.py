"""Versions, rollback, the lease mode and the notifications outbox: metadata only (no query
here reads a ciphertext), so they work under the orchestrator role too.

Every ciphertext of a session, current and kept versions, is wiped by one database
function, ``wipe_session_ciphertext(session_id)``: revoking a session (and shredding its
owner) runs it through a trigger, deleting a session removes its versions by cascade.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schema.errors import InvalidInput, ResultTimeout
from schema.queries import LEASE_MODES, Executor


@dataclass(frozen=True, kw_only=True)
class VersionInfo:
    version: int
    source: str
    source_id: str | None
    verdict: str | None
    created_at: datetime
    current: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "source_id": self.source_id,
            "verdict": self.verdict,
            "created_at": self.created_at.isoformat(),
            "current": self.current,
        }


async def list_versions(db: Executor, session_id: str, current: int) -> list[VersionInfo]:
    """The kept versions of a session, newest first (never their ciphertext)."""
    rows = await db.fetch(
        """SELECT version, source, source_id, verdict, created_at FROM session_versions
           WHERE session_id = $1 ORDER BY version DESC""",
        session_id,
    )
    return [VersionInfo(**dict(r), current=r["version"] == current) for r in rows]


async def is_kept(db: Executor, session_id: str, version: int) -> bool:
    return bool(
        await db.fetchval(
            "SELECT 1 FROM session_versions WHERE session_id = $1 AND version = $2",
            session_id,
            version,
        )
    )


async def wait_rollback(db: Executor, request_id: str, *, timeout: timedelta) -> int:
    """The version a worker saved for rollback ``request_id`` (``RESULT_TIMEOUT`` if none
    shows up in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout.total_seconds()
    while True:
        new = await db.fetchval(
            "SELECT version FROM session_versions WHERE source = 'rollback' AND source_id = $1",
            request_id,
        )
        if new is not None:
            return int(new)
        if loop.time() >= deadline:
            raise ResultTimeout("the rollback was not done in time; it may still happen")
        await asyncio.sleep(0.1)


async def wipe_ciphertext(db: Executor, session_id: str) -> int:
    """Remove every kept version and (unless it is active) the current ciphertext."""
    return int(await db.fetchval("SELECT wipe_session_ciphertext($1)", session_id))


async def set_lease_mode(db: Executor, session_id: str, mode: str) -> None:
    if mode not in LEASE_MODES:
        raise InvalidInput(f"lease mode must be one of {', '.join(LEASE_MODES)}")
    await db.execute("UPDATE browser_sessions SET lease_mode = $2 WHERE id = $1", session_id, mode)


async def notifications(
    db: Executor, user_id: str, *, pending_only: bool = True, limit: int = 100
) -> list[dict[str, Any]]:
    rows = await db.fetch(
        """SELECT id, user_id, session_id, kind, message, created_at, delivered_at
           FROM session_notifications
           WHERE user_id = $1 AND (NOT $2 OR delivered_at IS NULL)
           ORDER BY id LIMIT $3""",
        user_id,
        pending_only,
        limit,
    )
    return [
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in dict(r).items()}
        for r in rows
    ]


async def mark_delivered(db: Executor, user_id: str, ids: list[int]) -> list[int]:
    rows = await db.fetch(
        """UPDATE session_notifications SET delivered_at = now()
           WHERE user_id = $1 AND id = ANY($2::bigint[]) AND delivered_at IS NULL
           RETURNING id""",
        user_id,
        ids,
    )
    return sorted(r["id"] for r in rows)
