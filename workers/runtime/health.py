"""Liveness and readiness over HTTP on ``BROWSER_SESSIONS_HEALTH_PORT`` (default 9192).

Runs on the worker's asyncio loop (the one dramatiq's AsyncIO middleware owns):

- ``GET /healthz`` — liveness: 200 while the process is up and its loop answers (a blocked
  loop does not answer at all, which is what a liveness probe needs to see).
- ``GET /readyz`` — readiness: 200 when every check passes (the broker and the database are
  reachable and, for browse workers, the pool has a live browser), else 503.

Both answer JSON. Several processes of one worker may serve the same port (``SO_REUSEPORT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from schema.logs import get_logger

log = get_logger(__name__)

Check = Callable[[], Awaitable[bool]]

AMQP_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP_FRAME_METHOD = 1


class HealthServer:
    """``async with HealthServer(port=9192, checks={"database": ...}) as server: ...``"""

    def __init__(
        self,
        *,
        port: int,
        checks: Mapping[str, Check],
        host: str = "0.0.0.0",
        check_timeout: timedelta = timedelta(seconds=3),
    ) -> None:
        self._host = host
        self._port = port
        self._checks = dict(checks)
        self._timeout = check_timeout.total_seconds()
        self._started = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (useful when constructed with ``port=0``)."""
        return self._port

    async def __aenter__(self) -> HealthServer:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_port=True)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        if self._port == 0:
            self._port = int(self._runner.addresses[0][1])
        log.info("health_server_started", port=self._port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        """Liveness: answering at all means the loop is responsive."""
        body = {
            "status": "ok",
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 1),
        }
        return web.json_response(body)

    async def _readyz(self, request: web.Request) -> web.Response:
        """Readiness: every check, run concurrently, each under a timeout."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        ready = not self._closing and all(r["ok"] for r in results)
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": checks}
        if self._closing:
            body["reason"] = "shutting down"
        return web.json_response(body, status=200 if ready else 503)

    async def _run(self, check: Check) -> dict[str, Any]:
        started = time.monotonic()
        try:
            ok = bool(await asyncio.wait_for(check(), self._timeout))
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
