"""The HTTP API as the platform's backend uses it: who may call, admins, browse with and
without waiting, a storageState import verified by a real worker, health and metrics."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest

from tests.support.api import API_ADMIN, API_TOKEN, service_headers
from tests.support.logins import LoginState
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess

pytestmark = pytest.mark.integration


async def call(
    api_url: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, api_url + path, headers=headers, json=body) as resp,
    ):
        data = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, data, resp.headers


def owner() -> str:
    return f"owner-{secrets.token_hex(3)}"


async def add(api_url: str, user: str, site: FixtureSite) -> dict[str, Any]:
    status, created, _ = await call(
        api_url,
        "POST",
        "/v1/sessions",
        headers=service_headers(user),
        body={"label": "HTTP", "start_url": site.url("/app"), "logged_in_selector": "#whoami"},
    )
    assert status == 201, created
    return dict(created)


async def start_import(api_url: str, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    """``POST /v1/sessions/import`` with ``body``: accepted (202), checked by a worker later."""
    status, started, _ = await call(
        api_url, "POST", "/v1/sessions/import", headers=headers, body=body
    )
    assert status == 202, started
    return dict(started)


async def test_who_may_call(api_url: str) -> None:
    status, body, headers = await call(api_url, "GET", "/v1/sessions")
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    wrong = {"Authorization": f"Bearer {API_TOKEN}x", "X-Acting-User": "u"}
    assert (await call(api_url, "GET", "/v1/sessions", headers=wrong))[0] == 401
    no_actor = {"Authorization": f"Bearer {API_TOKEN}"}
    status, body, _ = await call(api_url, "GET", "/v1/sessions", headers=no_actor)
    assert (status, body["error"]["code"]) == (400, "INVALID_INPUT")
    # Only the backend mints page links; a page's cookie cannot.
    status, body, _ = await call(api_url, "POST", "/v1/ui-links", body={"user_id": "u"})
    assert status == 401


async def test_admins_revoke_and_delete_but_never_watch_or_relogin(
    api_url: str, site: FixtureSite
) -> None:
    user = owner()
    created = await add(api_url, user, site)
    admin = service_headers(API_ADMIN)
    other = service_headers("someone-else")
    sid, cid = created["session_id"], created["capture_id"]
    assert (await call(api_url, "GET", f"/v1/captures/{cid}", headers=admin))[0] == 403
    assert (await call(api_url, "POST", f"/v1/sessions/{sid}/relogin", headers=admin))[0] == 403
    assert (await call(api_url, "POST", f"/v1/sessions/{sid}/revoke", headers=other))[0] == 403
    status, body, _ = await call(api_url, "POST", f"/v1/sessions/{sid}/revoke", headers=admin)
    assert (status, body["status"]) == (200, "revoked")
    status, body, _ = await call(
        api_url, "POST", f"/v1/sessions/{sid}/relogin", headers=service_headers(user)
    )
    assert (status, body["error"]["code"]) == (409, "SESSION_REVOKED")
    assert (await call(api_url, "DELETE", f"/v1/sessions/{sid}", headers=admin))[0] == 200
    status, body, _ = await call(
        api_url, "GET", f"/v1/sessions/{sid}", headers=service_headers(user)
    )
    assert (status, body["error"]["code"]) == (404, "SESSION_NOT_FOUND")


@pytest.mark.timeout(180)
async def test_import_then_browse_with_and_without_waiting(
    api_url: str, browse_worker: WorkerProcess, site: FixtureSite, login_state: LoginState
) -> None:
    user = owner()
    site.add_user(user, "correct horse")
    state = await login_state(user)
    headers = service_headers(user)
    started = await start_import(
        api_url,
        headers,
        label="Imported",
        start_url=site.url("/app"),
        logged_in_selector="#whoami",
        state=state,
    )
    for _ in range(300):
        _, capture, _ = await call(
            api_url, "GET", f"/v1/captures/{started['capture_id']}", headers=headers
        )
        if capture["state"] in ("saved", "failed"):
            break
        await asyncio.sleep(0.1)
    assert capture["state"] == "saved", capture
    sid = started["session_id"]
    body = {"task_id": f"t-{secrets.token_hex(3)}", "session_id": sid, "url": site.url("/app")}
    status, missing_task, _ = await call(api_url, "POST", "/v1/browse", headers=headers, body=body)
    assert missing_task["error"]["code"] == "TASK_NOT_FOUND", missing_task
    status, task, _ = await call(
        api_url, "POST", "/v1/tasks", headers=headers, body={"task_id": body["task_id"]}
    )
    assert (status, task) == (201, {"task_id": body["task_id"], "owner_id": user})
    status, taken, _ = await call(
        api_url,
        "POST",
        "/v1/tasks",
        headers=service_headers("other"),
        body={"task_id": body["task_id"]},
    )
    assert (status, taken["error"]["code"]) == (403, "NOT_OWNER")
    status, result, _ = await call(api_url, "POST", "/v1/browse", headers=headers, body=body)
    assert status == 200 and result["outcome"] == "ok" and user in result["text"]

    status, queued, _ = await call(
        api_url, "POST", "/v1/browse", headers=headers, body={**body, "wait": False}
    )
    assert status == 202 and queued["status"] == "queued"
    for _ in range(300):
        status, result, _ = await call(
            api_url, "GET", f"/v1/browse/{queued['job_id']}", headers=headers
        )
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert result["outcome"] == "ok"
    # Another user never sees it (it stays "pending" for them).
    status, _, _ = await call(
        api_url, "GET", f"/v1/browse/{queued['job_id']}", headers=service_headers("other")
    )
    assert status == 202
    # Nor browses with the session.
    status, denied, _ = await call(
        api_url, "POST", "/v1/browse", headers=service_headers("other"), body=body
    )
    assert (status, denied["error"]["code"]) == (403, "NOT_OWNER")


async def test_a_refused_import_leaves_no_session(
    api_url: str, browse_worker: WorkerProcess, site: FixtureSite
) -> None:
    user = owner()
    headers = service_headers(user)
    await start_import(
        api_url,
        headers,
        label="Not logged in",
        start_url=site.url("/app"),
        login_url_pattern=site.url("/login") + "**",
        state={"cookies": [], "origins": []},
    )
    for _ in range(300):
        _, listed, _ = await call(api_url, "GET", "/v1/sessions", headers=headers)
        if not listed["sessions"]:
            break
        await asyncio.sleep(0.1)
    assert listed["sessions"] == []


async def test_health_readiness_and_metrics(api_url: str) -> None:
    assert (await call(api_url, "GET", "/healthz"))[0] == 200
    status, ready, _ = await call(api_url, "GET", "/readyz")
    assert status == 200 and ready["checks"]["database"]["ok"] and ready["checks"]["broker"]["ok"]
    status, text, _ = await call(api_url, "GET", "/metrics")
    assert status == 200
    assert 'browser_sessions_api_requests_total{method="GET",route="/readyz",status="200"}' in text
