"""The ``/v1`` routes: sessions, captures, browse and UI links. JSON in and out; every
call names its acting user (service token + ``X-Acting-User``, or the page's cookie) and
every service call passes that actor on, capture status included."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from producers.api import SessionsClient
from producers.http.auth import Auth, Caller
from producers.validation import require_id
from schema.errors import BrowserSessionsError, InvalidInput
from schema.jobs import WAIT_CONDITIONS, BrowseOptions
from schema.logs import get_logger
from schema.results import fetch_result
from schema.settings import Settings

log = get_logger(__name__)

CLIENT = web.AppKey("client", SessionsClient)
AUTH = web.AppKey("auth", Auth)
SETTINGS = web.AppKey("settings", Settings)
BACKGROUND: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("background")

MAX_WAIT_S = 300.0
IMPORT_TIMEOUT = timedelta(seconds=120)

routes = web.RouteTableDef()


# -- request helpers -------------------------------------------------------------------


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or ``INVALID_INPUT`` saying what is wrong with it."""
    raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    return data


def text(data: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    return value


def flag(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false")
    return value


def seconds(data: dict[str, Any], name: str, default: float, *, maximum: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= maximum:
        raise InvalidInput(f"{name} must be a number of seconds in (0, {maximum:g}]")
    return float(value)


def origins(data: dict[str, Any]) -> list[str]:
    value = data.get("extra_origins", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput("extra_origins must be a list of URLs")
    if len(value) > 20:
        raise InvalidInput("at most 20 extra_origins")
    return value


def path_id(request: web.Request, name: str) -> str:
    return require_id(name, request.match_info[name])


def caller(request: web.Request) -> Caller:
    return request.app[AUTH].caller(request)


def session_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "label": text(data, "label", required=True) or "",
        "start_url": text(data, "start_url", required=True) or "",
        "logged_in_selector": text(data, "logged_in_selector"),
        "login_url_pattern": text(data, "login_url_pattern"),
        "extra_origins": origins(data),
    }


# -- sessions --------------------------------------------------------------------------


@routes.get("/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    who = caller(request)
    sessions = await request.app[CLIENT].list_sessions(who.user_id)
    return web.json_response({"sessions": [s.to_dict() for s in sessions]})


@routes.post("/v1/sessions")
async def add_session(request: web.Request) -> web.Response:
    who = caller(request)
    fields = session_fields(await json_body(request))
    client = request.app[CLIENT]
    created = await client.add_session(owner_id=who.user_id, **fields)
    return await _with_capture(client, who, created, status=201)


@routes.post("/v1/sessions/import")
async def import_session(request: web.Request) -> web.Response:
    """Accepted at once; the import's capture says when a worker has verified it."""
    who = caller(request)
    data = await json_body(request)
    fields = session_fields(data)
    state = data.get("state")
    if not isinstance(state, dict):
        raise InvalidInput("state must be a Playwright storageState object")
    client = request.app[CLIENT]
    started = await client.start_import(
        owner_id=who.user_id, state=json.dumps(state).encode(), **fields
    )
    _in_background(request.app, _finish_import(client, started["capture_id"]))
    return await _with_capture(client, who, started, status=202)


async def _with_capture(
    client: SessionsClient, who: Caller, started: dict[str, str], *, status: int
) -> web.Response:
    """A started capture's ids and its first status (with the live-view URL)."""
    capture = await client.capture_status(started["capture_id"], actor_id=who.user_id)
    return web.json_response({**started, "capture": capture.to_dict()}, status=status)


@routes.get("/v1/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    who = caller(request)
    session = await request.app[CLIENT].get_session(
        path_id(request, "session_id"), actor_id=who.user_id, admin=who.admin
    )
    return web.json_response(session.to_dict())


@routes.post("/v1/sessions/{session_id}/relogin")
async def relogin(request: web.Request) -> web.Response:
    who = caller(request)
    client = request.app[CLIENT]
    started = await client.relogin(path_id(request, "session_id"), actor_id=who.user_id)
    return await _with_capture(client, who, started, status=201)


@routes.post("/v1/sessions/{session_id}/revoke")
async def revoke(request: web.Request) -> web.Response:
    who = caller(request)
    result = await request.app[CLIENT].revoke(
        path_id(request, "session_id"), actor_id=who.user_id, admin=who.admin
    )
    return web.json_response(result)


@routes.delete("/v1/sessions/{session_id}")
async def delete(request: web.Request) -> web.Response:
    who = caller(request)
    result = await request.app[CLIENT].delete(
        path_id(request, "session_id"), actor_id=who.user_id, admin=who.admin
    )
    return web.json_response(result)


# -- captures --------------------------------------------------------------------------


async def _on_capture(request: web.Request, action: str) -> web.Response:
    """Status, Save or Cancel, always for the acting user (admins never watch a login)."""
    who = caller(request)
    client = request.app[CLIENT]
    act = {
        "status": client.capture_status,
        "save": client.save_capture,
        "cancel": client.cancel_capture,
    }[action]
    capture = await act(path_id(request, "capture_id"), actor_id=who.user_id)
    return web.json_response(capture.to_dict())


@routes.get("/v1/captures/{capture_id}")
async def capture_status(request: web.Request) -> web.Response:
    return await _on_capture(request, "status")


@routes.post("/v1/captures/{capture_id}/save")
async def save_capture(request: web.Request) -> web.Response:
    return await _on_capture(request, "save")


@routes.post("/v1/captures/{capture_id}/cancel")
async def cancel_capture(request: web.Request) -> web.Response:
    return await _on_capture(request, "cancel")


# -- browse ----------------------------------------------------------------------------


def browse_options(data: dict[str, Any]) -> BrowseOptions:
    raw = data.get("options", {})
    if not isinstance(raw, dict):
        raise InvalidInput("options must be an object")
    wait_until = text(raw, "wait_until") or "load"
    if wait_until not in WAIT_CONDITIONS:
        raise InvalidInput(f"options.wait_until must be one of {', '.join(WAIT_CONDITIONS)}")
    return BrowseOptions(
        wait_until=wait_until,
        wait_for_selector=text(raw, "wait_for_selector"),
        extract_html=flag(raw, "html", False),
        screenshot=flag(raw, "screenshot", False),
        timeout_s=seconds(raw, "navigation_timeout_s", 30.0, maximum=300.0),
    )


@routes.post("/v1/tasks")
async def add_task(request: web.Request) -> web.Response:
    """Record a task of the acting user's (the minimal row a browse needs), for a platform
    that does not write the ``tasks`` table itself. Idempotent; 403 if another user owns it."""
    who = caller(request)
    data = await json_body(request)
    task_id = require_id("task_id", text(data, "task_id", required=True) or "")
    return web.json_response(
        await request.app[CLIENT].add_task(task_id, owner_id=who.user_id), status=201
    )


@routes.post("/v1/browse")
async def browse(request: web.Request) -> web.Response:
    """Enqueue a browse for a task of the actor's; wait for its result (default) or answer
    202 at once and let the caller poll ``GET /v1/browse/{job_id}``."""
    who = caller(request)
    data = await json_body(request)
    client = request.app[CLIENT]
    task_id = require_id("task_id", text(data, "task_id", required=True) or "")
    session_id = require_id("session_id", text(data, "session_id", required=True) or "")
    url = text(data, "url", required=True) or ""
    wait = flag(data, "wait", True)
    default_wait = request.app[SETTINGS].result_timeout.total_seconds()
    timeout = seconds(data, "timeout_s", min(default_wait, MAX_WAIT_S), maximum=MAX_WAIT_S)
    options = browse_options(data)
    await client.get_session(session_id, actor_id=who.user_id)  # 404 / 403 before enqueueing
    job_id = await client.enqueue_browse(
        task_id=task_id, owner_id=who.user_id, session_id=session_id, url=url, options=options
    )
    if not wait:
        return web.json_response({"job_id": job_id, "status": "queued"}, status=202)
    result = await client.wait_result(
        job_id, owner_id=who.user_id, timeout=timedelta(seconds=timeout)
    )
    return web.json_response(result.to_dict())


@routes.get("/v1/browse/{job_id}")
async def browse_result(request: web.Request) -> web.Response:
    """The job's result once stored (only for the task's owner), else 202 ``pending``."""
    who = caller(request)
    job_id = path_id(request, "job_id")
    result = await fetch_result(request.app[CLIENT].db, job_id, owner_id=who.user_id)
    if result is None:
        return web.json_response({"job_id": job_id, "status": "pending"}, status=202)
    return web.json_response(result.to_dict())


# -- links for the settings page --------------------------------------------------------


@routes.post("/v1/ui-links")
async def ui_link(request: web.Request) -> web.Response:
    """For the platform's backend only: a short-lived link that opens the settings page as
    ``user_id`` (put it in the iframe's ``src``)."""
    auth = request.app[AUTH]
    auth.service_only(request)
    data = await json_body(request)
    user_id = require_id("user_id", text(data, "user_id", required=True) or "")
    lang = text(data, "lang")
    base = request.app[SETTINGS].api_public_url.rstrip("/") or _origin(request)
    url = f"{base}/ui/login?token={auth.link_token(user_id)}"
    if lang in ("en", "ja"):
        url += f"&lang={lang}"
    expires = datetime.now(UTC) + auth.link_ttl
    return web.json_response({"url": url, "expires_at": expires.isoformat()}, status=201)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


# -- background work -------------------------------------------------------------------


def _in_background(app: web.Application, coro: Any) -> None:
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
    app[BACKGROUND].add(task)
    task.add_done_callback(app[BACKGROUND].discard)


async def _finish_import(client: SessionsClient, capture_id: str) -> None:
    """Wait for an import's verdict; a refused import's session is removed."""
    try:
        await client.finish_import(capture_id, timeout=IMPORT_TIMEOUT)
    except BrowserSessionsError as err:
        log.info("api_import_refused", capture_id=capture_id, code=err.code)
    except Exception:
        log.exception("api_import_wait_failed", capture_id=capture_id)
