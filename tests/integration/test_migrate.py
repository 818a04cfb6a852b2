"""The migration runner against a real Postgres: idempotent and safe concurrently."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from schema.migrate import load_migrations, migrate
from tests.support.services import new_database

pytestmark = pytest.mark.integration


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    async with new_database(f"bs_migrate_{secrets.token_hex(4)}", migrated=False) as url:
        yield url


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BROWSER_SESSIONS_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_two_processes_at_once_then_again(empty_database: str) -> None:
    first, second = await asyncio.gather(
        asyncio.to_thread(_cli, "migrate", url=empty_database),
        asyncio.to_thread(_cli, "migrate", url=empty_database),
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    expected = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    # Exactly one of the two applied everything; the other found nothing to do.
    outputs = sorted([first.stdout, second.stdout], key=len)
    assert '"applied": []' in outputs[0]
    assert all(name in outputs[1] for name in expected)
    assert await migrate(empty_database) == []
    conn = await asyncpg.connect(empty_database)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [m.version for m in load_migrations()]
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {
            "browser_sessions",
            "captures",
            "browse_results",
            "tasks",
            "task_comments",
            "audit_log",
            "audit_head",
            "user_keys",
            "seal_keys",
            "schema_migrations",
        } <= tables
        # A task with only id and owner_id is valid; bad status values are refused.
        await conn.execute("INSERT INTO tasks (id, owner_id) VALUES ('t1', 'u1')")
        assert await conn.fetchval("SELECT status FROM tasks WHERE id = 't1'") == "pending"
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO browser_sessions (id, owner_id, label, start_url, site, status)"
                " VALUES ('s', 'u', 'l', 'https://a.test', 'a.test', 'bogus')"
            )
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "url",
    ["nonsense", "postgresql://postgres@127.0.0.1:1/none", "mysql://x@localhost/db"],
)
def test_wrong_database_url_gives_one_clear_line(url: str) -> None:
    done = _cli("migrate", url=url)
    assert done.returncode != 0
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    assert "BROWSER_SESSIONS_DATABASE_URL" in lines[0]
    assert '"error"' in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
