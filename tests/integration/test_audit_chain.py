"""The audit chain against real Postgres: concurrent writers stay linear, and `verify` finds
an edited row, a removed row, a truncated tail and a forged head.

Tampering needs a database of its own (the shared test database's chain must stay intact
for other tests), so this module migrates a scratch database and resets its log per test.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from schema.audit import AuditLog, verify
from schema.enums import AuditAction, AuditResult
from schema.errors import AuditWriteFailed
from tests.support.events import RecordingEvents
from tests.support.services import new_database

pytestmark = pytest.mark.integration

KEY = secrets.token_bytes(32)


@pytest.fixture(scope="module")
async def scratch_url(database_url: str) -> AsyncIterator[str]:
    async with new_database(f"bs_audit_{secrets.token_hex(4)}") as url:
        yield url


@pytest.fixture
async def conn(scratch_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the scratch database, with an empty audit log."""
    conn = await asyncpg.connect(scratch_url)
    await tamper(conn, "DELETE FROM audit_log")
    await conn.execute("DELETE FROM audit_head")
    yield conn
    await conn.close()


async def tamper(conn: Any, statement: str, *args: Any) -> None:
    """What an attacker with superuser does: bypass the append-only triggers."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(statement, *args)


async def write_rows(conn: Any, audit: AuditLog, n: int) -> list[int]:
    return [
        await audit.write(
            conn,
            actor_id=f"user-{i}",
            action=AuditAction.DECRYPT,
            result=AuditResult.OK,
            session_id=f"sess-{i}",
            task_id="task-1",
            request_id=f"req-{i}",
            detail=f"version {i}",
        )
        for i in range(n)
    ]


async def test_empty_and_intact_chains_verify(conn: Any) -> None:
    assert (await verify(conn, KEY)).ok
    ids = await write_rows(conn, AuditLog(key=KEY), 5)
    report = await verify(conn, KEY, batch=2)
    assert report.ok and report.rows == 5 and report.last_id == ids[-1], report


async def test_concurrent_writers_keep_one_linear_chain(scratch_url: str, conn: Any) -> None:
    audit = AuditLog(key=KEY)
    pool = await asyncpg.create_pool(scratch_url, min_size=4, max_size=4)
    try:
        ids = await asyncio.gather(
            *(
                audit.write(pool, actor_id="a", action=AuditAction.USE, result=AuditResult.OK)
                for _ in range(40)
            )
        )
    finally:
        await pool.close()
    assert len(set(ids)) == 40
    report = await verify(conn, KEY)
    assert report.ok and report.rows == 40, report


async def test_edited_row_is_found(conn: Any) -> None:
    ids = await write_rows(conn, AuditLog(key=KEY), 5)
    await tamper(conn, "UPDATE audit_log SET result = 'denied' WHERE id = $1", ids[2])
    report = await verify(conn, KEY)
    assert (report.ok, report.problem, report.first_bad_id) == (False, "edited", ids[2])
    assert report.rows == 2


async def test_removed_row_is_found(conn: Any) -> None:
    ids = await write_rows(conn, AuditLog(key=KEY), 5)
    await tamper(conn, "DELETE FROM audit_log WHERE id = $1", ids[1])
    report = await verify(conn, KEY)
    assert (report.ok, report.problem, report.first_bad_id) == (False, "removed", ids[2])


async def test_removed_first_row_is_found(conn: Any) -> None:
    ids = await write_rows(conn, AuditLog(key=KEY), 3)
    await tamper(conn, "DELETE FROM audit_log WHERE id = $1", ids[0])
    report = await verify(conn, KEY)
    assert (report.problem, report.first_bad_id) == ("removed", ids[1])


async def test_truncated_tail_is_found(conn: Any) -> None:
    ids = await write_rows(conn, AuditLog(key=KEY), 5)
    await tamper(conn, "DELETE FROM audit_log WHERE id >= $1", ids[3])
    report = await verify(conn, KEY)
    assert (report.ok, report.problem, report.first_bad_id) == (False, "truncated", ids[4])
    assert report.last_id == ids[2]


async def test_truncated_tail_with_head_rolled_back_is_found(conn: Any) -> None:
    ids = await write_rows(conn, AuditLog(key=KEY), 5)
    await tamper(conn, "DELETE FROM audit_log WHERE id >= $1", ids[3])
    # The attacker points the head at the new last row, but cannot forge its MAC.
    await conn.execute(
        "UPDATE audit_head SET last_id = $1, "
        "last_hash = (SELECT row_hash FROM audit_log WHERE id = $1)",
        ids[2],
    )
    report = await verify(conn, KEY)
    assert (report.ok, report.problem) == (False, "head_mismatch")


async def test_whole_log_deleted_is_found(conn: Any) -> None:
    await write_rows(conn, AuditLog(key=KEY), 2)
    await tamper(conn, "DELETE FROM audit_log")
    assert (await verify(conn, KEY)).problem == "truncated"


async def test_wrong_key_is_reported(conn: Any) -> None:
    await write_rows(conn, AuditLog(key=KEY), 2)
    report = await verify(conn, secrets.token_bytes(32))
    assert (report.ok, report.problem) == (False, "unknown_key")
    assert (await verify(conn, secrets.token_bytes(32), old_keys=[KEY])).ok


async def test_rows_rolled_back_with_the_caller_leave_the_chain_intact(conn: Any) -> None:
    audit = AuditLog(key=KEY)
    await write_rows(conn, audit, 2)
    tx = conn.transaction()
    await tx.start()
    await audit.write(conn, actor_id="a", action=AuditAction.SAVE, result=AuditResult.OK)
    await tx.rollback()
    await write_rows(conn, audit, 1)  # the sequence skipped an id: not a break
    report = await verify(conn, KEY)
    assert report.ok and report.rows == 3, report


async def test_failed_write_raises_audit_write_failed_and_reports_it_once(conn: Any) -> None:
    events = RecordingEvents()
    async with conn.transaction(readonly=True):
        with pytest.raises(AuditWriteFailed) as info:
            await AuditLog(key=KEY, events=events).write(
                conn, actor_id="a", action=AuditAction.SAVE, result=AuditResult.OK
            )
    assert info.value.code == "AUDIT_WRITE_FAILED"
    assert events.calls == [("audit_write_failed", ())]


async def test_detail_is_scrubbed_and_bounded(conn: Any) -> None:
    row_id = await AuditLog(key=KEY).write(
        conn,
        actor_id="a",
        action=AuditAction.SAVE,
        result=AuditResult.ERROR,
        detail="Cookie: sid=abc123secret " + "x" * 1000,
    )
    detail = await conn.fetchval("SELECT detail FROM audit_log WHERE id = $1", row_id)
    assert "abc123secret" not in detail and len(detail) <= 500
    assert (await verify(conn, KEY)).ok
