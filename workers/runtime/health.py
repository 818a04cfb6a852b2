"""Liveness and readiness over HTTP on ``BROWSER_SESSIONS_HEALTH_PORT`` (default 9192).

Runs on the worker's asyncio loop (the one dramatiq's AsyncIO middleware owns):

- ``GET /healthz`` — liveness: 200 while the process is up and its loop answers (a blocked
  loop does not answer at all, which is what a liveness probe needs to see).
- ``GET /readyz`` — readiness: 200 when every check passes (the broker and the database are
  reachable and, for browse workers, the pool has a live browser), else 503.

Both answer JSON. Several processes of one worker may serve the same port (``SO_REUSEPORT``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from aiohttp import web

from schema.health import Check, amqp_check, database_check, predicate_check, run_checks
from schema.logs import get_logger

log = get_logger(__name__)


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
        self._timeout = check_timeout
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
        ok, checks = await run_checks(self._checks, timeout=self._timeout)
        ready = not self._closing and ok
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": checks}
        if self._closing:
            body["reason"] = "shutting down"
        return web.json_response(body, status=200 if ready else 503)


__all__ = ["Check", "HealthServer", "amqp_check", "database_check", "predicate_check"]
