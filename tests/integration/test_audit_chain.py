"""The audit chain against real Postgres: rows go in only through ``audit_append()``, each
signed by its writer side; `verify` finds an edited, removed or forged row, a truncated tail
and a tail cut with the head put back (through the signed checkpoints kept outside the
database), and lists every break.

Tampering needs a database of its own (the shared test database's chain must stay intact
for other tests), so this module migrates a scratch database and resets its log per test.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schema.audit import (
    AuditKeys,
    AuditLog,
    AuditSigner,
    CheckpointFile,
    VerifyReport,
    legacy_key_id,
    legacy_row_hash,
    read_checkpoints,
    signed_message,
    verify,
)
from schema.enums import AuditAction, AuditResult
from schema.errors import AuditWriteFailed
from tests.support.events import RecordingEvents
from tests.support.privileges import assert_refused

pytestmark = pytest.mark.integration

PRODUCERS = AuditSigner(side="producers", private_key=secrets.token_bytes(32))
WORKERS = AuditSigner(side="workers", private_key=secrets.token_bytes(32))
KEYS = AuditKeys.of(PRODUCERS, WORKERS)
ORCHESTRATOR = "browser_sessions_orchestrator"
WORKER = "browser_sessions_worker"


@pytest.fixture
async def conn(scratch_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the scratch database, with an empty audit log."""
    conn = await asyncpg.connect(scratch_url)
    await tamper(conn, "DELETE FROM audit_log")
    await conn.execute("DELETE FROM audit_head")
    yield conn
    await conn.close()


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints.jsonl"


@pytest.fixture
def workers(checkpoint_path: Path) -> AuditLog:
    return AuditLog(signer=WORKERS, checkpoints=CheckpointFile(checkpoint_path))


@pytest.fixture
def producers(checkpoint_path: Path) -> AuditLog:
    return AuditLog(signer=PRODUCERS, checkpoints=CheckpointFile(checkpoint_path))


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


async def check(conn: Any, path: Path | None = None) -> VerifyReport:
    return await verify(conn, KEYS, checkpoints=read_checkpoints([path] if path else []))


def problems(report: VerifyReport) -> list[tuple[int | None, str]]:
    return [(b["id"], b["problem"]) for b in report.breaks]


async def test_empty_and_intact_chains_verify(
    conn: Any, workers: AuditLog, producers: AuditLog, checkpoint_path: Path
) -> None:
    assert (await check(conn)).ok
    ids = await write_rows(conn, workers, 3) + await write_rows(conn, producers, 2)
    report = await verify(conn, KEYS, checkpoints=read_checkpoints([checkpoint_path]), batch=2)
    assert report.ok and report.rows == 5 and report.last_id == ids[-1], report
    assert report.rows_by_side == {"workers": 3, "producers": 2}
    assert (report.checkpoints, report.last_checkpoint_id) == (5, ids[-1])


async def test_concurrent_writers_keep_one_linear_chain(
    scratch_url: str, conn: Any, workers: AuditLog, producers: AuditLog, checkpoint_path: Path
) -> None:
    pool = await asyncpg.create_pool(scratch_url, min_size=4, max_size=4)
    try:
        ids = await asyncio.gather(
            *(
                (workers if i % 2 else producers).write(
                    pool, actor_id="a", action=AuditAction.USE, result=AuditResult.OK
                )
                for i in range(40)
            )
        )
    finally:
        await pool.close()
    assert len(set(ids)) == 40
    report = await check(conn, checkpoint_path)
    assert report.ok and report.rows == 40 and report.checkpoints == 40, report


async def test_every_edited_row_is_listed(conn: Any, workers: AuditLog) -> None:
    ids = await write_rows(conn, workers, 6)
    await tamper(conn, "UPDATE audit_log SET result = 'denied' WHERE id = $1", ids[1])
    await tamper(conn, "UPDATE audit_log SET actor_id = 'someone' WHERE id = $1", ids[4])
    report = await check(conn)
    assert (report.ok, report.problem, report.first_bad_id) == (False, "edited", ids[1])
    assert problems(report) == [(ids[1], "edited"), (ids[4], "edited")]
    assert report.rows == 6


async def test_edited_time_is_found(conn: Any, workers: AuditLog) -> None:
    ids = await write_rows(conn, workers, 3)
    await tamper(conn, "UPDATE audit_log SET at = at - interval '1 day' WHERE id = $1", ids[1])
    assert problems(await check(conn)) == [(ids[1], "edited")]


async def test_removed_rows_are_each_found(conn: Any, workers: AuditLog) -> None:
    ids = await write_rows(conn, workers, 6)
    await tamper(conn, "DELETE FROM audit_log WHERE id = ANY($1::bigint[])", [ids[1], ids[4]])
    report = await check(conn)
    assert problems(report) == [(ids[2], "removed"), (ids[5], "removed")]


async def test_removed_first_row_is_found(conn: Any, workers: AuditLog) -> None:
    ids = await write_rows(conn, workers, 3)
    await tamper(conn, "DELETE FROM audit_log WHERE id = $1", ids[0])
    report = await check(conn)
    assert (report.problem, report.first_bad_id) == ("removed", ids[1])


async def test_truncated_tail_is_found(conn: Any, workers: AuditLog) -> None:
    ids = await write_rows(conn, workers, 5)
    await tamper(conn, "DELETE FROM audit_log WHERE id >= $1", ids[3])
    report = await check(conn)
    assert (report.ok, report.problem, report.first_bad_id) == (False, "truncated", ids[4])
    assert report.last_id == ids[2]


async def test_cut_tail_with_the_head_put_back_is_found_by_the_checkpoints(
    conn: Any, workers: AuditLog, checkpoint_path: Path
) -> None:
    ids = await write_rows(conn, workers, 5)
    old_head = await conn.fetchrow("SELECT last_id, last_hash FROM audit_head")
    assert old_head["last_id"] == ids[-1]
    # The attacker deletes the last rows and puts back the head as it was at row 3.
    await tamper(conn, "DELETE FROM audit_log WHERE id >= $1", ids[3])
    await conn.execute(
        "UPDATE audit_head SET last_id = $1, "
        "last_hash = (SELECT row_hash FROM audit_log WHERE id = $1)",
        ids[2],
    )
    # The database alone cannot tell: the cut chain is consistent.
    assert (await check(conn)).ok
    report = await check(conn, checkpoint_path)
    assert (report.ok, report.problem, report.first_bad_id) == (False, "truncated", ids[4])
    assert "rows were removed from the end" in report.message


async def test_plain_cli_verify_reads_the_configured_checkpoints(
    scratch_url: str, conn: Any, workers: AuditLog, checkpoint_path: Path, tmp_path: Path
) -> None:
    ids = await write_rows(conn, workers, 4)
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    for signer in (PRODUCERS, WORKERS):
        (key_dir / f"audit-{signer.side}.pub").write_bytes(signer.public_key)
    env = {
        **os.environ,
        "BROWSER_SESSIONS_DATABASE_URL": scratch_url,
        "BROWSER_SESSIONS_KEY_DIR": str(key_dir),
        "BROWSER_SESSIONS_AUDIT_CHECKPOINT_FILE": str(checkpoint_path),
        "BROWSER_SESSIONS_LOG_FORMAT": "json",
    }

    def cli() -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", "audit", "verify"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, json.loads(done.stdout)

    code, intact = await asyncio.to_thread(cli)
    assert code == 0 and intact["ok"] and intact["rows"] == 4, intact
    await tamper(conn, "DELETE FROM audit_log WHERE id >= $1", ids[2])
    await conn.execute(
        "UPDATE audit_head SET last_id = $1, "
        "last_hash = (SELECT row_hash FROM audit_log WHERE id = $1)",
        ids[1],
    )
    code, report = await asyncio.to_thread(cli)
    assert code == 1
    # The JSON keeps its old fields and adds the list of breaks.
    assert {"ok", "rows", "last_id", "first_bad_id", "problem", "message"} <= set(report)
    assert (report["ok"], report["problem"], report["first_bad_id"]) == (
        False,
        "truncated",
        ids[3],
    )
    assert report["breaks"] and report["checkpoints"] == 4


async def test_rewritten_chain_differs_from_its_checkpoints(
    conn: Any, workers: AuditLog, checkpoint_path: Path
) -> None:
    ids = await write_rows(conn, workers, 3)
    # Rewriting a row's hash (and its successor's link) is caught by the signed checkpoint.
    await tamper(conn, "UPDATE audit_log SET row_hash = sha256(row_hash) WHERE id = $1", ids[0])
    await tamper(
        conn,
        "UPDATE audit_log SET prev_hash = (SELECT row_hash FROM audit_log WHERE id = $1) "
        "WHERE id = $2",
        ids[0],
        ids[1],
    )
    report = await check(conn, checkpoint_path)
    assert (ids[0], "checkpoint_mismatch") in problems(report)
    assert (ids[0], "edited") in problems(report)


async def test_whole_log_deleted_is_found(conn: Any, workers: AuditLog) -> None:
    await write_rows(conn, workers, 2)
    await tamper(conn, "DELETE FROM audit_log")
    assert (await check(conn)).problem == "truncated"


async def test_one_side_cannot_write_in_the_others_name(
    conn: Any, producers: AuditLog, workers: AuditLog
) -> None:
    await write_rows(conn, workers, 1)
    # A producer signing a row that claims the workers' key id: the signature fails.
    head = await conn.fetchrow(
        "SELECT c.chain_id, h.last_hash FROM audit_chain c JOIN audit_head h ON h.singleton"
    )
    row = {
        "actor_id": "alice",
        "action": "decrypt",
        "session_id": "s",
        "task_id": "t",
        "request_id": "r",
        "result": "ok",
        "detail": "version 1",
        "key_id": WORKERS.key_id,
    }
    prev = bytes(head["last_hash"])
    forged = PRODUCERS.sign(signed_message(head["chain_id"], prev, row))
    added = await conn.fetchval(
        "SELECT out_id FROM audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        prev,
        *row.values(),
        forged,
    )
    # A key of its own making, unknown to the verifier, is refused too.
    impostor = AuditLog(signer=AuditSigner(side="workers", private_key=secrets.token_bytes(32)))
    [impostor_id] = await write_rows(conn, impostor, 1)
    await write_rows(conn, producers, 1)
    report = await check(conn)
    assert problems(report) == [(added, "edited"), (impostor_id, "unknown_key")]


async def test_roles_append_only_through_the_function(
    conn: Any, scratch_url: str, workers: AuditLog
) -> None:
    await write_rows(conn, workers, 1)
    for role, audit in ((ORCHESTRATOR, AuditLog(signer=PRODUCERS)), (WORKER, workers)):
        app = await asyncpg.connect(scratch_url, user=role)
        try:
            assert await audit.write(app, actor_id="a", action="use", result="ok") > 0
            await assert_refused(
                app,
                (
                    "INSERT INTO audit_log (id, actor_id, action, result, key_id, prev_hash, "
                    "row_hash) VALUES (999999, 'x', 'use', 'ok', 'k', '\\x00', '\\x00')",
                    "UPDATE audit_head SET last_id = 1",
                    "DELETE FROM audit_head",
                    "SELECT nextval('audit_log_id_seq')",
                ),
            )
            # A row that does not build on the current head is refused.
            with pytest.raises(asyncpg.SerializationError):
                await app.execute(
                    "SELECT audit_append($1, 'a', 'use', NULL, NULL, NULL, 'ok', NULL, $2, $3)",
                    bytes(32),
                    WORKERS.key_id,
                    bytes(64),
                )
        finally:
            await app.close()
    assert (await check(conn)).ok


async def test_rows_rolled_back_with_the_caller_leave_chain_and_checkpoints_intact(
    conn: Any, workers: AuditLog, checkpoint_path: Path
) -> None:
    await write_rows(conn, workers, 2)
    tx = conn.transaction()
    await tx.start()
    await workers.write(conn, actor_id="a", action=AuditAction.SAVE, result=AuditResult.OK)
    await tx.rollback()
    await write_rows(conn, workers, 1)  # the sequence skipped an id: not a break
    report = await check(conn, checkpoint_path)
    assert report.ok and report.rows == 3, report


async def test_legacy_hmac_rows_still_verify(conn: Any, workers: AuditLog) -> None:
    legacy = secrets.token_bytes(32)
    at = await conn.fetchval("SELECT clock_timestamp()")
    row = {
        "id": 1,
        "at": at,
        "actor_id": "old",
        "action": "save",
        "session_id": None,
        "task_id": None,
        "request_id": None,
        "result": "ok",
        "detail": None,
        "key_id": legacy_key_id(legacy),
    }
    digest = legacy_row_hash(legacy, bytes(32), row)
    await conn.execute(
        "INSERT INTO audit_log (id, at, actor_id, action, result, key_id, prev_hash, row_hash) "
        "VALUES (1, $1, 'old', 'save', 'ok', $2, $3, $4)",
        at,
        row["key_id"],
        bytes(32),
        digest,
    )
    await conn.execute("INSERT INTO audit_head (last_id, last_hash) VALUES (1, $1)", digest)
    await write_rows(conn, workers, 2)
    assert (await verify(conn, AuditKeys.of(PRODUCERS, WORKERS, legacy=[legacy]))).ok
    assert problems(await check(conn)) == [(1, "unknown_key")]


async def test_failed_write_raises_audit_write_failed_and_reports_it_once(
    conn: Any, workers: AuditLog
) -> None:
    events = RecordingEvents()
    writer = AuditLog(signer=workers.signer, events=events)
    async with conn.transaction(readonly=True):
        with pytest.raises(AuditWriteFailed) as info:
            await writer.write(conn, actor_id="a", action=AuditAction.SAVE, result=AuditResult.OK)
    assert info.value.code == "AUDIT_WRITE_FAILED"
    assert events.calls == [("audit_write_failed", ())]


async def test_detail_is_scrubbed_and_bounded(conn: Any, workers: AuditLog) -> None:
    row_id = await workers.write(
        conn,
        actor_id="a",
        action=AuditAction.SAVE,
        result=AuditResult.ERROR,
        detail="Cookie: sid=abc123secret " + "x" * 1000,
    )
    detail = await conn.fetchval("SELECT detail FROM audit_log WHERE id = $1", row_id)
    assert "abc123secret" not in detail and len(detail) <= 500
    assert (await check(conn)).ok


async def test_a_row_written_in_a_callers_transaction_is_checkpointed_after_commit(
    conn: Any, workers: AuditLog, checkpoint_path: Path
) -> None:
    await write_rows(conn, workers, 2)
    async with conn.transaction():
        last = await workers.write(conn, actor_id="a", action="revoke", result="ok")
        assert await workers.checkpoint(conn) is None  # may still roll back: not yet
    assert await workers.checkpoint(conn) == last
    # Cut exactly that row and put the head back: the checkpoint still names it.
    await tamper(conn, "DELETE FROM audit_log WHERE id = $1", last)
    await conn.execute(
        "UPDATE audit_head SET last_id = $1, "
        "last_hash = (SELECT row_hash FROM audit_log WHERE id = $1)",
        last - 1,
    )
    report = await check(conn, checkpoint_path)
    assert (report.problem, report.first_bad_id) == ("truncated", last)
