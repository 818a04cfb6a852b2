"""Connections to Postgres: a pool for queries, a dedicated connection for LISTEN."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from schema.errors import ServiceUnavailable


def other_database(database_url: str, name: str) -> str:
    """The URL of database ``name`` on the same server as ``database_url``."""
    return urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))


def _unreachable(exc: BaseException) -> str:
    return (
        f"cannot reach Postgres (check BROWSER_SESSIONS_DATABASE_URL): {type(exc).__name__}: {exc}"
    )


async def connect(database_url: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    """One connection, with a clear ``SERVICE_UNAVAILABLE`` when Postgres cannot be reached."""
    try:
        return await asyncpg.connect(database_url, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(_unreachable(exc)) from None


async def create_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0
) -> asyncpg.Pool:
    """A connection pool, with the same clear error as :func:`connect`."""
    try:
        pool = await asyncpg.create_pool(
            database_url, min_size=min_size, max_size=max_size, timeout=timeout
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(_unreachable(exc)) from None
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def connection(conn_or_pool: Any) -> AsyncIterator[Any]:
    """A connection acquired from a pool for the block, or the given connection itself.

    For functions that take either: ``async with connection(conn) as conn: ...``.
    """
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            yield conn
    else:
        yield conn_or_pool


@contextlib.asynccontextmanager
async def listening(
    database_url: str, channel: str, callback: Callable[[str], None]
) -> AsyncIterator[asyncpg.Connection]:
    """A dedicated connection that LISTENs on ``channel`` (NOTIFY is lost on pooled ones).

    ``callback`` receives each payload; callers keep state in a table too and poll as a
    fallback, because notifications sent while disconnected are lost.
    """
    conn = await connect(database_url)

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    try:
        await conn.add_listener(channel, on_notify)
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await conn.remove_listener(channel, on_notify)
        await conn.close(timeout=5)
