"""What a task shows its user."""

from __future__ import annotations

import asyncpg


async def comments(db: asyncpg.Connection, task_id: str) -> list[str]:
    rows = await db.fetch("SELECT body FROM task_comments WHERE task_id = $1", task_id)
    return [r["body"] for r in rows]


async def has_one_comment(db: asyncpg.Connection, task_id: str) -> bool:
    return len(await comments(db, task_id)) == 1
