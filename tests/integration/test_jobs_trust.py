"""Job messages are not trusted blindly: an expiry job naming a task that is missing or
owned by someone else than the session's owner changes nothing (real Postgres, the real
expiry service as the worker runs it)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schema.audit import AuditLog
from schema.enums import CaptureState
from schema.jobs import CaptureJob, ExpireJob, ImportJob
from schema.settings import Settings
from workers.crypto.keys import LocalFileKeyProvider
from workers.jobs.capture import CaptureService
from workers.jobs.expiry import ExpiryService
from workers.jobs.imports import ImportService

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool like a worker's, for the services under test."""
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield created
    await created.close()


@pytest.fixture
def expiry(pool: asyncpg.Pool, key_dir: Path) -> ExpiryService:
    provider = LocalFileKeyProvider(key_dir=key_dir)
    return ExpiryService(db=pool, audit=AuditLog(signer=provider.audit_signer()))


async def active_session(db: Any, owner: str) -> str:
    session_id = f"s-{secrets.token_hex(6)}"
    await db.execute(
        """INSERT INTO browser_sessions (id, owner_id, label, start_url, site, status,
                                         version, enc_nonce, enc_ciphertext)
           VALUES ($1, $2, 'Victim site', 'https://v.example/app', 'v.example',
                   'active', 1, '\\x00', '\\x00')""",
        session_id,
        owner,
    )
    return session_id


async def victims_capture(db: Any, column: str, value: str) -> tuple[str, str, str]:
    """A victim's active session and a capture of it with ``column`` set to ``value`` (its
    ``kind`` or its ``state``); the victim, the session's and the capture's ids."""
    victim = f"victim-{secrets.token_hex(3)}"
    session_id = await active_session(db, victim)
    capture_id = f"cap-{secrets.token_hex(5)}"
    assert column in ("kind", "state")
    await db.execute(
        f"INSERT INTO captures (id, session_id, owner_id, {column}) VALUES ($1, $2, $3, $4)",
        capture_id,
        session_id,
        victim,
        value,
    )
    return victim, session_id, capture_id


async def capture_state(db: Any, capture_id: str) -> str:
    return str(await db.fetchval("SELECT state FROM captures WHERE id = $1", capture_id))


async def test_expiry_needs_a_task_of_the_sessions_owner(db: Any, expiry: ExpiryService) -> None:
    victim = f"victim-{secrets.token_hex(3)}"
    session_id = await active_session(db, victim)
    mallory_task, no_task = f"t-{secrets.token_hex(5)}", f"t-{secrets.token_hex(5)}"
    await db.execute("INSERT INTO tasks (id, owner_id) VALUES ($1, 'mallory')", mallory_task)

    for task_id in (mallory_task, no_task):
        job = ExpireJob(session_id=session_id, task_id=task_id, job_id=f"j-{task_id}")
        assert await expiry.run(job) is False
    assert await db.fetchval("SELECT status FROM browser_sessions WHERE id = $1", session_id) == (
        "active"
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM task_comments WHERE task_id = ANY($1::text[])",
            [mallory_task, no_task],
        )
        == 0
    )
    assert await db.fetchval("SELECT status FROM tasks WHERE id = $1", mallory_task) == "pending"
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE id = $1", no_task) == 0
    rows = await db.fetch(
        "SELECT action, result, detail FROM audit_log WHERE session_id = $1 ORDER BY id",
        session_id,
    )
    assert [tuple(r) for r in rows] == [
        ("expire", "denied", "NOT_OWNER"),
        ("expire", "denied", "TASK_NOT_FOUND"),
    ]

    # The owner's own task: expired once, one comment.
    own = f"t-{secrets.token_hex(5)}"
    await db.execute("INSERT INTO tasks (id, owner_id) VALUES ($1, $2)", own, victim)
    assert await expiry.run(ExpireJob(session_id=session_id, task_id=own, job_id="j-own"))
    assert await db.fetchval("SELECT status FROM browser_sessions WHERE id = $1", session_id) == (
        "expired"
    )


@pytest.fixture
def imports(pool: asyncpg.Pool, key_dir: Path) -> ImportService:
    """The import service as a worker runs it (its browser pool and store are never reached)."""
    provider = LocalFileKeyProvider(key_dir=key_dir)
    return ImportService(db=pool, pool=None, store=None, provider=provider)  # type: ignore[arg-type]


async def test_import_job_must_match_the_import_its_producer_started(
    db: Any, imports: ImportService
) -> None:
    _victim, session_id, capture_id = await victims_capture(db, "kind", "import")
    forged = ImportJob(
        capture_id=capture_id, session_id=session_id, owner_id="mallory", sealed_state="x"
    )
    assert await imports.run(forged) is CaptureState.QUEUED
    assert await capture_state(db, capture_id) == "queued"


@pytest.fixture
def captures(pool: asyncpg.Pool, base_settings: Settings) -> CaptureService:
    """The capture service as a worker runs it (its store, live view and browser are never
    reached)."""
    return CaptureService(
        settings=base_settings,
        db=pool,
        store=None,  # type: ignore[arg-type]
        liveview=None,  # type: ignore[arg-type]
        launch_browser=None,
    )


async def test_capture_job_must_match_the_capture_its_producer_started(
    db: Any, captures: CaptureService
) -> None:
    victim, session_id, capture_id = await victims_capture(db, "state", "open")
    # A message naming the victim's open capture as someone else's (or as an import)
    # would interrupt it if trusted; it touches nothing.
    for owner, kind in (("mallory", "capture"), (victim, "import")):
        if kind == "import":
            await db.execute("UPDATE captures SET kind = 'import' WHERE id = $1", capture_id)
        forged = CaptureJob(capture_id=capture_id, session_id=session_id, owner_id=owner)
        assert await captures.run(forged) is CaptureState.OPEN
    assert await capture_state(db, capture_id) == "open"
