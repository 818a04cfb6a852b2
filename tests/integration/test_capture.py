"""Capture jobs through the live view, against a real capture worker and Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest
from playwright.async_api import Browser

from producers.api import SessionsClient
from schema.enums import CaptureState
from schema.errors import NotOwner
from schema.results import BrowseResult
from schema.settings import Settings
from tests.support.keepalive import browse_in_new_task
from tests.support.logins import PASSWORD
from tests.support.sessions import wait_for_status
from tests.support.workers import client_fixture, own_ports, worker_on_own_queues
from workers.dev.fixture_site import FixtureSite
from workers.dev.liveview_user import LiveViewUser
from workers.dev.processes import WorkerProcess, run_worker
from workers.dev.scratch import purge_queue

pytestmark = pytest.mark.integration

TOTP_SECRET = "JBSWY3DPEHPK3PXP"
RESULT = timedelta(seconds=60)


@pytest.fixture(scope="module")
def capture_settings(worker_settings: Settings) -> Settings:
    return own_ports(worker_settings, capture_timeout=timedelta(seconds=45))


@pytest.fixture(scope="module")
def capture_worker(
    capture_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    log_path = tmp_path_factory.mktemp("capture") / "worker.log"
    # Sessions added by earlier tests (the HTTP API's) left captures nobody opened.
    purge_queue(capture_settings.amqp_url, capture_settings.queue("capture"))
    with run_worker(capture_settings, ["capture"], log_path) as worker:
        yield worker


capture_client = client_fixture("capture_settings")


async def open_capture(
    client: SessionsClient, site: FixtureSite, owner: str
) -> tuple[str, str, str]:
    created = await client.add_session(
        owner_id=owner,
        label=f"{owner} on fixture",
        start_url=site.url("/app"),
        logged_in_selector="#whoami",
        login_url_pattern=site.url("/login") + "**",
    )
    capture = await client.wait_capture(
        created["capture_id"], states=[CaptureState.OPEN], final_only=False, timeout=RESULT
    )
    assert capture.state is CaptureState.OPEN, capture
    assert capture.to_dict()["liveview_url"] is None  # only the owner's status call mints one
    capture = await client.capture_status(created["capture_id"], actor_id=owner)
    url = capture.to_dict()["liveview_url"]
    assert url and "token=" in url
    return created["session_id"], created["capture_id"], url


async def log_in_through_live_view(user: LiveViewUser, site: FixtureSite, name: str) -> None:
    await user.log_in_with_two_steps(site.url("/login?next=/app"), name, PASSWORD, TOTP_SECRET)


@contextlib.asynccontextmanager
async def live_view(browser: Browser, url: str) -> AsyncIterator[LiveViewUser]:
    """A user with the live view at ``url`` open in a window of their own."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        user = LiveViewUser(viewer=await context.new_page(), browser=browser)
        await user.open(url)
        yield user
    finally:
        await context.close()


async def status_and_version(db: asyncpg.Connection, session_id: str) -> tuple[str, int]:
    row = await db.fetchrow(
        "SELECT status, version FROM browser_sessions WHERE id = $1", session_id
    )
    return row["status"], row["version"]


@pytest.mark.timeout(360)
async def test_login_through_live_view_then_browse(
    capture_worker: WorkerProcess,
    browse_worker: WorkerProcess,
    capture_client: SessionsClient,
    site: FixtureSite,
    browser: Browser,
    db: asyncpg.Connection,
) -> None:
    owner = f"frank-{secrets.token_hex(3)}"
    site.add_user(owner, PASSWORD, totp_secret=TOTP_SECRET)
    session_id, capture_id, url = await open_capture(capture_client, site, owner)

    async def browse(path: str) -> BrowseResult:
        return await browse_in_new_task(
            capture_client, owner, session_id, site.url(path), timeout=RESULT
        )

    async with live_view(browser, url) as user:
        # Save before logging in: refused with a reason, the window stays open.
        await capture_client.save_capture(capture_id, actor_id=owner)
        refused = await capture_client.wait_capture(
            capture_id, states=[CaptureState.NOT_LOGGED_IN], final_only=False, timeout=RESULT
        )
        assert refused.state is CaptureState.NOT_LOGGED_IN
        assert refused.reason and "login page" in refused.reason
        await user.wait_for_state("not_logged_in")

        await log_in_through_live_view(user, site, owner)
        await user.viewer.screenshot(path=str(capture_worker.log_path.parent / "liveview.png"))
        await capture_client.save_capture(capture_id, actor_id=owner)
        saved = await capture_client.wait_capture(capture_id, timeout=RESULT)
        assert saved.state is CaptureState.SAVED, saved
        assert saved.to_dict()["liveview_url"] is None

    assert await status_and_version(db, session_id) == ("active", 1)
    result = await browse("/app")
    assert result.ok, result.error_message
    assert f"logged in as {owner}" in (result.text or "")
    for path in ("/app-session-storage", "/app-indexeddb"):  # captured and restored too
        more = await browse(path)
        assert more.ok, (path, more.error_message)

    # Re-login of an expired session turns it active again with a new version.
    site.revoke(owner)
    expired = await browse("/app")
    assert expired.error_code == "AUTH_SESSION_EXPIRED"
    await wait_for_status(db, session_id, "expired")
    relogin = await capture_client.relogin(session_id, actor_id=owner)
    capture = await capture_client.wait_capture(
        relogin["capture_id"], states=[CaptureState.OPEN], final_only=False, timeout=RESULT
    )
    capture = await capture_client.capture_status(capture.id, actor_id=owner)
    async with live_view(browser, str(capture.to_dict()["liveview_url"])) as user:
        await log_in_through_live_view(user, site, owner)
        await capture_client.save_capture(capture.id, actor_id=owner)
        saved = await capture_client.wait_capture(capture.id, timeout=RESULT)
        assert saved.state is CaptureState.SAVED
    assert await status_and_version(db, session_id) == ("active", 2)
    again = await browse("/app")
    assert again.ok and f"logged in as {owner}" in (again.text or "")


async def test_cancel_and_token_checks(
    capture_worker: WorkerProcess,
    capture_client: SessionsClient,
    site: FixtureSite,
    browser: Browser,
) -> None:
    import aiohttp

    _, capture_id, url = await open_capture(capture_client, site, "grace")
    _, other_capture, other_url = await open_capture(capture_client, site, "heidi")
    base = url.split("?token=")[0]
    other_token = other_url.split("?token=")[1]
    async with aiohttp.ClientSession() as http:
        for bad in (f"{base}?token=wrong", f"{base}?token={other_token}", base):
            async with http.get(bad) as response:
                assert response.status == 403
                assert "<canvas" not in await response.text()
        async with http.get(url) as response:
            assert response.status == 200
            csp = response.headers["Content-Security-Policy"]
            assert "frame-ancestors 'self'" in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        # Only the owner may read the status (and so get a viewer URL) or signal a capture.
        with pytest.raises(NotOwner):
            await capture_client.capture_status(capture_id, actor_id="heidi")
        with pytest.raises(Exception) as err:
            await capture_client.cancel_capture(capture_id, actor_id="heidi")
        assert getattr(err.value, "code", "") == "NOT_OWNER"
        await capture_client.cancel_capture(capture_id, actor_id="grace")
        done = await capture_client.wait_capture(capture_id, timeout=RESULT)
        assert done.state is CaptureState.CANCELLED
        async with http.get(url) as response:
            assert response.status == 403  # the token expired with the capture
    await capture_client.cancel_capture(other_capture, actor_id="heidi")


async def test_no_working_token_is_readable_by_the_orchestrator_role(
    capture_worker: WorkerProcess,
    capture_client: SessionsClient,
    capture_settings: Settings,
    site: FixtureSite,
) -> None:
    import aiohttp

    _, capture_id, url = await open_capture(capture_client, site, "ivy")
    base, token = url.split("?token=")
    conn = await asyncpg.connect(
        capture_settings.database_url, user="browser_sessions_orchestrator"
    )
    try:
        row = dict(await conn.fetchrow("SELECT * FROM captures WHERE id = $1", capture_id))
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM liveview_tickets")
        # It may add a ticket, but without the key file the ticket opens nothing.
        forged = "forged-" + secrets.token_urlsafe(16)
        await conn.execute(
            """INSERT INTO liveview_tickets (token_hash, capture_id, expires_at, mac)
               VALUES ($1, $2, now() + interval '1 hour', $3)""",
            hashlib.sha256(forged.encode()).digest(),
            capture_id,
            secrets.token_bytes(32),
        )
    finally:
        await conn.close()
    candidates = {str(v) for v in row.values() if v is not None} | {forged}
    assert token not in candidates
    async with aiohttp.ClientSession() as http:
        for value in candidates:  # nothing the orchestrator can read opens the view
            async with http.get(base, params={"token": value}) as response:
                assert response.status == 403, value
        async with http.get(url) as response:
            assert response.status == 200  # while the owner's token works

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers.cli", "capture", "status", capture_id, *args],
            env={**os.environ, **capture_settings.to_env()},
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli().returncode != 0  # --actor is required
    other = cli("--actor", "mallory")
    assert other.returncode != 0 and json.loads(other.stdout)["error"]["code"] == "NOT_OWNER"
    owner = cli("--actor", "ivy")
    assert owner.returncode == 0, owner.stderr
    assert "?token=" in json.loads(owner.stdout)["liveview_url"]
    await capture_client.cancel_capture(capture_id, actor_id="ivy")


async def test_websocket_refuses_another_origin(
    capture_worker: WorkerProcess, capture_client: SessionsClient, site: FixtureSite
) -> None:
    import aiohttp

    _, capture_id, url = await open_capture(capture_client, site, "jack")
    base, token = url.split("?token=")
    ws_url = f"{base.replace('http', 'ws', 1)}/ws?token={token}"
    own_origin = "/".join(base.split("/")[:3])
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url, origin="https://evil.example")
        assert refused.value.status == 403
        async with http.ws_connect(ws_url, origin=own_origin) as ws:
            status = await ws.receive_json(timeout=30)
            assert status["t"] == "status"
    await capture_client.cancel_capture(capture_id, actor_id="jack")


async def test_timeout(
    capture_settings: Settings, tmp_path_factory: pytest.TempPathFactory, site: FixtureSite
) -> None:
    short = own_ports(
        capture_settings,
        capture_timeout=timedelta(seconds=3),
        queue_prefix=capture_settings.queue_prefix + "short.",
    )
    log_path = tmp_path_factory.mktemp("capture-timeout") / "worker.log"
    with worker_on_own_queues(short, ["capture"], log_path):
        async with SessionsClient.open(short) as client:
            created = await client.add_session(
                owner_id="ivan",
                label="ivan",
                start_url=site.url("/app"),
                logged_in_selector="#whoami",
            )
            done = await client.wait_capture(created["capture_id"], timeout=RESULT)
    assert done.state is CaptureState.TIMED_OUT


@pytest.mark.parametrize("group", [False, True], ids=["main-pid", "process-group"])
async def test_worker_shutdown_interrupts_capture(
    group: bool,
    capture_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    site: FixtureSite,
    db: asyncpg.Connection,
) -> None:
    """SIGTERM to the main pid, or to the whole process group (systemd, a terminal): the
    Playwright driver and Chromium are shielded from the group signal, so both end the
    capture as ``interrupted`` and close its browser."""
    settings = own_ports(capture_settings, queue_prefix=capture_settings.queue_prefix + "stop.")
    log_path = tmp_path_factory.mktemp("capture-stop") / "worker.log"
    async with SessionsClient.open(settings) as client:
        with worker_on_own_queues(settings, ["capture"], log_path) as worker:
            session_id, capture_id, _ = await open_capture(
                client, site, "judy" if group else "karl"
            )
            browsers = worker.chromium_pids()
            assert browsers
            seconds = await asyncio.to_thread(worker.stop, group=group, timeout=30)
        done = await client.capture_status(capture_id, actor_id="judy" if group else "karl")
    assert seconds < 10
    assert done.state is CaptureState.INTERRUPTED
    assert all(not _alive(pid) for pid in browsers)
    row = await db.fetchrow(
        "SELECT status, enc_ciphertext IS NULL AS empty FROM browser_sessions WHERE id = $1",
        session_id,
    )
    assert (row["status"], row["empty"]) == ("pending", True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
