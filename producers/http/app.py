"""The aiohttp application: ``/v1`` (JSON), ``/ui/`` (the settings page), ``/healthz``,
``/readyz`` and ``/metrics``. Errors are ``{"error": {"code", "message"}}`` with the HTTP
status mapped from the code; no request body, query string or token is ever logged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from producers.api import SessionsClient
from producers.http import openapi, ui
from producers.http.auth import Auth, load_service_token
from producers.http.routes import AUTH, BACKGROUND, CLIENT, SETTINGS, routes
from schema.errors import BrowserSessionsError
from schema.health import amqp_check, database_check, run_checks
from schema.logs import get_logger
from schema.settings import Settings

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_BY_CODE = {
    "INVALID_INPUT": 400,
    "URL_NOT_ALLOWED": 400,
    "UNAUTHENTICATED": 401,
    "NOT_OWNER": 403,
    "CSRF_REJECTED": 403,
    "SESSION_NOT_FOUND": 404,
    "CAPTURE_NOT_FOUND": 404,
    "TASK_NOT_FOUND": 404,
    "SESSION_REVOKED": 409,
    "SESSION_NOT_ACTIVE": 409,
    "CAPTURE_CLOSED": 409,
    "CAPTURE_NOT_LOGGED_IN": 422,
    "AUTH_SESSION_EXPIRED": 409,
    "AUDIT_WRITE_FAILED": 503,
    "KEY_ERROR": 503,
    "SERVICE_UNAVAILABLE": 503,
    "RESULT_TIMEOUT": 504,
}
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "browser_sessions_api_requests",
    "HTTP API requests by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "browser_sessions_api_request_seconds",
    "HTTP API request duration by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)


def status_for(code: str) -> int:
    return STATUS_BY_CODE.get(code, 500)


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _route(request: web.Request) -> str:
    route = request.match_info.route
    return route.resource.canonical if route.resource is not None else "unmatched"


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as the JSON error shape; unexpected ones are logged and hidden."""
    try:
        return await handler(request)
    except BrowserSessionsError as err:
        response = error_response(status_for(err.code), err.code, err.message)
        if response.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="browser-sessions"'
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, "INVALID_INPUT", exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("api_request_failed", route=_route(request), method=request.method)
        return error_response(500, "INTERNAL_ERROR", "internal error")


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers, metrics and one log line per request (route templates only)."""
    started = time.monotonic()
    response = await handler(request)
    elapsed = time.monotonic() - started
    route = _route(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    REQUESTS.labels(route, request.method, str(response.status)).inc()
    LATENCY.labels(route).observe(elapsed)
    if request.path not in QUIET_PATHS:
        log.info(
            "api_request",
            route=route,
            method=request.method,
            status=response.status,
            ms=int(elapsed * 1000),
        )
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    ok, checks = await run_checks(
        {
            "database": database_check(request.app[CLIENT].db),
            "broker": amqp_check(request.app[SETTINGS].amqp_url),
        },
        timeout=timedelta(seconds=3),
    )
    body = {"status": "ready" if ok else "not_ready", "checks": checks}
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def build_app(settings: Settings, client: SessionsClient, auth: Auth) -> web.Application:
    """The application around an open client (tests build it on their own loop)."""
    app = web.Application(
        middlewares=[observe, errors],
        client_max_size=2 * settings.max_state_bytes + 64 * 1024,
    )
    app[SETTINGS] = settings
    app[CLIENT] = client
    app[AUTH] = auth
    app[BACKGROUND] = set[asyncio.Task[None]]()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi.handler)
    app.add_routes(routes)
    ui.add_routes(app)
    app.on_cleanup.append(_stop_background)
    return app


async def _stop_background(app: web.Application) -> None:
    background = app[BACKGROUND]
    tasks = list(background)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """Serve on ``API_HOST:API_PORT`` (0 = a free port) until the block exits; yields the
    base URL."""
    auth = Auth(token=load_service_token(settings), admins=settings.admins)
    async with SessionsClient.open(settings) as client:
        runner = web.AppRunner(build_app(settings, client, auth), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.api_host, settings.api_port).start()
            host, port = runner.addresses[0][:2]
            base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            log.info("api_started", base_url=base)
            yield base
        finally:
            await runner.cleanup()


async def serve_forever(settings: Settings) -> dict[str, str]:
    """``browser-sessions api``: serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serving(settings) as base_url:
        await stop.wait()
    return {"stopped": base_url}
