"""Typed queries on the shared tables. Metadata only: no query here reads encrypted columns,
so every function works under the orchestrator role too."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import asyncpg

from schema.enums import CaptureState, SessionStatus
from schema.errors import CaptureNotFound, SessionNotFound

SESSION_COLUMNS = (
    "id, owner_id, label, start_url, site, logged_in_selector, login_url_pattern, "
    "extra_origins, status, version, created_at, updated_at, saved_at, last_used_at, "
    "expired_at, revoked_at, rotating, lease_mode, expires_at, next_probe_at, last_probe_at, "
    "last_probe_verdict, probe_failures"
)
CAPTURE_COLUMNS = (
    "id, session_id, owner_id, kind, state, signal, reason, error_code, liveview_url, "
    "created_at, updated_at, opened_at, finished_at, expires_at"
)

Executor: TypeAlias = "asyncpg.Connection | asyncpg.Pool"
#: How long before its auth cookies expire a session shows ``expiring_soon`` (the
#: ``EXPIRING_SOON`` setting's default).
EXPIRING_SOON = timedelta(hours=24)
LEASE_MODES = ("auto", "exclusive", "parallel")


def new_id(prefix: str) -> str:
    """A random, URL-safe id with a readable prefix (``ses_...``, ``cap_...``, ``job_...``)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return list(value)
    return value


@dataclass(frozen=True, kw_only=True)
class _Row:
    """A row as the producers and workers see it; ``to_dict`` is its JSON form."""

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, kw_only=True)
class SessionInfo(_Row):
    id: str
    owner_id: str
    label: str
    start_url: str
    site: str
    logged_in_selector: str | None
    login_url_pattern: str | None
    extra_origins: list[str]
    status: SessionStatus
    version: int
    created_at: datetime
    updated_at: datetime
    saved_at: datetime | None
    last_used_at: datetime | None
    expired_at: datetime | None
    revoked_at: datetime | None
    rotating: bool | None = None
    lease_mode: str = "auto"
    expires_at: datetime | None = None
    next_probe_at: datetime | None = None
    last_probe_at: datetime | None = None
    last_probe_verdict: str | None = None
    probe_failures: int = 0
    expiring_soon: bool = False

    @classmethod
    def from_row(
        cls, row: asyncpg.Record, *, expiring_soon: timedelta = EXPIRING_SOON
    ) -> SessionInfo:
        data = dict(row)
        data["status"] = SessionStatus(data["status"])
        data["extra_origins"] = list(data["extra_origins"] or [])
        data["expiring_soon"] = bool(
            data["status"] is SessionStatus.ACTIVE
            and data.get("expires_at") is not None
            and data["expires_at"] < datetime.now(UTC) + expiring_soon
        )
        return cls(**data)

    @property
    def exclusive(self) -> bool:
        """Whether jobs on this session run one at a time (under a lease): forced by
        ``lease_mode``, or in ``auto`` while its site rotates tokens or is not yet known."""
        if self.lease_mode == "auto":
            return self.rotating is not False
        return self.lease_mode == "exclusive"


@dataclass(frozen=True, kw_only=True)
class CaptureInfo(_Row):
    id: str
    session_id: str
    owner_id: str
    kind: str
    state: CaptureState
    signal: str | None
    reason: str | None
    error_code: str | None
    liveview_url: str | None
    created_at: datetime
    updated_at: datetime
    opened_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    liveview_token: str | None = None  # minted for the owner only; never stored in plain text

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> CaptureInfo:
        data = dict(row)
        data["state"] = CaptureState(data["state"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """For its owner: the live-view URL carries the access token."""
        data = super().to_dict()
        del data["liveview_token"]
        if self.liveview_url and self.liveview_token and not self.state.is_final:
            data["liveview_url"] = f"{self.liveview_url}?token={self.liveview_token}"
        else:
            data["liveview_url"] = None
        return data


async def insert_session(
    db: Executor,
    *,
    owner_id: str,
    label: str,
    start_url: str,
    site: str,
    logged_in_selector: str | None,
    login_url_pattern: str | None,
    extra_origins: list[str],
) -> str:
    session_id = new_id("ses")
    await db.execute(
        """INSERT INTO browser_sessions (id, owner_id, label, start_url, site,
               logged_in_selector, login_url_pattern, extra_origins)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        session_id,
        owner_id,
        label,
        start_url,
        site,
        logged_in_selector,
        login_url_pattern,
        extra_origins,
    )
    return session_id


async def get_session(db: Executor, session_id: str) -> SessionInfo:
    row = await db.fetchrow(
        f"SELECT {SESSION_COLUMNS} FROM browser_sessions WHERE id = $1", session_id
    )
    if row is None:
        raise SessionNotFound(f"session {session_id} not found")
    return SessionInfo.from_row(row)


async def list_sessions(
    db: Executor, owner_id: str, *, expiring_soon: timedelta = EXPIRING_SOON
) -> list[SessionInfo]:
    rows = await db.fetch(
        f"SELECT {SESSION_COLUMNS} FROM browser_sessions WHERE owner_id = $1 ORDER BY created_at",
        owner_id,
    )
    return [SessionInfo.from_row(r, expiring_soon=expiring_soon) for r in rows]


async def set_session_status(
    db: Executor, session_id: str, status: SessionStatus, *, only_from: tuple[str, ...] = ()
) -> bool:
    """Change a session's status (optionally only from given statuses); True if it changed."""
    stamp = {
        SessionStatus.EXPIRED: ", expired_at = now()",
        SessionStatus.REVOKED: ", revoked_at = now()",
    }.get(status, "")
    condition = " AND status = ANY($3::text[])" if only_from else ""
    args: list[Any] = [session_id, status.value] + ([list(only_from)] if only_from else [])
    result = await db.execute(
        f"UPDATE browser_sessions SET status = $2, updated_at = now(){stamp} "
        f"WHERE id = $1 AND status <> $2{condition}",
        *args,
    )
    return bool(result.endswith(" 1"))


async def delete_session(db: Executor, session_id: str) -> bool:
    result = await db.execute("DELETE FROM browser_sessions WHERE id = $1", session_id)
    return bool(result.endswith(" 1"))


async def insert_capture(
    db: Executor, *, session_id: str, owner_id: str, kind: str = "live"
) -> str:
    capture_id = new_id("cap")
    await db.execute(
        "INSERT INTO captures (id, session_id, owner_id, kind) VALUES ($1, $2, $3, $4)",
        capture_id,
        session_id,
        owner_id,
        kind,
    )
    return capture_id


async def get_capture(db: Executor, capture_id: str) -> CaptureInfo:
    row = await db.fetchrow(f"SELECT {CAPTURE_COLUMNS} FROM captures WHERE id = $1", capture_id)
    if row is None:
        raise CaptureNotFound(f"capture {capture_id} not found")
    return CaptureInfo.from_row(row)


async def session_version(db: Executor, session_id: str) -> int | None:
    """The session's current version, or None when it is gone. A job whose logged-out
    verdict came from an older version lost a race to a write-back: not an expiry."""
    version = await db.fetchval("SELECT version FROM browser_sessions WHERE id = $1", session_id)
    return None if version is None else int(version)


async def task_owner(db: Executor, task_id: str) -> str | None:
    """The task's owner, or None when the orchestrator has no such task."""
    owner = await db.fetchval("SELECT owner_id FROM tasks WHERE id = $1", task_id)
    return None if owner is None else str(owner)


async def insert_task(db: Executor, *, task_id: str, owner_id: str) -> str:
    """Insert a minimal task row unless it exists; returns the task's owner either way."""
    await db.execute(
        "INSERT INTO tasks (id, owner_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        task_id,
        owner_id,
    )
    owner = await task_owner(db, task_id)
    assert owner is not None
    return owner


async def task_comments(db: Executor, task_id: str) -> list[str]:
    rows = await db.fetch("SELECT body FROM task_comments WHERE task_id = $1 ORDER BY id", task_id)
    return [r["body"] for r in rows]
