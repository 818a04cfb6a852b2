"""Readiness checks shared by the workers' health server and the HTTP API: each check is a
coroutine answering True when one dependency is usable; ``run_checks`` runs them
concurrently, each under a timeout, and says why one failed (never with a secret)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg

Check = Callable[[], Awaitable[bool]]

AMQP_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP_FRAME_METHOD = 1


async def run_checks(
    checks: Mapping[str, Check], *, timeout: timedelta = timedelta(seconds=3)
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Every check at once; ``(all ok, {name: {"ok", "ms", ["error"]}})``."""
    names = list(checks)
    results = await asyncio.gather(*(_run(checks[n], timeout.total_seconds()) for n in names))
    return all(r["ok"] for r in results), dict(zip(names, results, strict=True))


async def _run(check: Check, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    try:
        ok = bool(await asyncio.wait_for(check(), timeout))
        error = None
    except TimeoutError:
        ok, error = False, "timeout"
    except Exception as exc:
        ok, error = False, type(exc).__name__
    result: dict[str, Any] = {"ok": ok, "ms": int((time.monotonic() - started) * 1000)}
    if error is not None:
        result["error"] = error
    return result


def database_check(db: asyncpg.Pool) -> Check:
    """Ready when a pooled connection answers ``SELECT 1``."""

    async def check() -> bool:
        return bool(await db.fetchval("SELECT 1") == 1)

    return check


def amqp_check(url: str) -> Check:
    """Ready when the broker answers the AMQP 0-9-1 protocol header with a method frame.

    A fresh connection each time (pika's connections are not for this loop); it is closed
    right after the broker's ``Connection.Start``, so no login is attempted.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "amqps"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (5671 if secure else 5672)

    async def check() -> bool:
        context = ssl.create_default_context() if secure else None
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            writer.write(AMQP_PROTOCOL_HEADER)
            await writer.drain()
            frame = await reader.readexactly(7)
            return frame[0] == AMQP_FRAME_METHOD
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    return check


def predicate_check(predicate: Callable[[], bool]) -> Check:
    """A synchronous predicate as a check (e.g. ``lambda: pool is not None and pool.healthy``)."""

    async def check() -> bool:
        return predicate()

    return check
