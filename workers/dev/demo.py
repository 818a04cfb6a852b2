"""``browser-sessions demo``: the whole product in one command.

Starts the fixture site and the workers, adds a session, logs in *through the live-view
page* (a scripted user in headless Chromium clicking and typing, 2FA included), saves,
browses a protected page, expires the session on the site, shows AUTH_SESSION_EXPIRED, the
Expired status and the task comment, re-logs in, browses again, verifies the audit chain,
saves a screenshot of the live view, and stops everything it started.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from playwright.async_api import Browser, async_playwright

from producers.api import SessionsClient
from schema import queries
from schema.audit import load_audit_key, verify
from schema.db import connect
from schema.enums import CaptureState
from schema.migrate import migrate
from schema.settings import Settings
from workers.browser.chromium import HEADLESS_ARGS, find_chromium
from workers.dev import totp
from workers.dev.fixture_site import FixtureSite
from workers.dev.liveview_user import LiveViewUser
from workers.dev.processes import free_port, run_worker

T = TypeVar("T")
USER, PASSWORD, TOTP_SECRET = "alice", "correct horse battery", "JBSWY3DPEHPK3PXP"
WAIT = timedelta(seconds=60)


class Demo:
    """Numbered steps with progress lines; remembers whether every step passed."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.passed = 0
        self.failed: list[str] = []
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        self.out.write(f"{text}\n")
        self.out.flush()

    async def step(self, title: str, action: Callable[[], Awaitable[T]]) -> T:
        number = self.passed + len(self.failed) + 1
        self.say(f"[{number:2d}] {title} ...")
        began = time.monotonic()
        try:
            result = await action()
        except Exception as exc:
            self.failed.append(title)
            self.say(f"     FAILED: {type(exc).__name__}: {exc}")
            raise
        self.passed += 1
        self.say(f"     ok ({(time.monotonic() - began) * 1000:.0f} ms)")
        return result


async def run_demo(settings: Settings, *, out: Any = None) -> bool:
    demo = Demo(out)
    workdir = Path(tempfile.mkdtemp(prefix="browser-sessions-demo-"))
    try:
        await _run(demo, settings, workdir)
    except Exception as exc:
        if not demo.failed:  # a failure outside a step (set-up, workers) still fails the demo
            demo.failed.append(f"set-up: {type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - demo.started
    if demo.failed:
        demo.say(
            f"DEMO FAILED: {demo.passed} steps passed, failed at: {demo.failed[0]} "
            f"({elapsed:.1f} s; logs in {workdir})"
        )
        return False
    demo.say(f"DEMO PASSED: all {demo.passed} steps passed in {elapsed:.1f} s")
    return True


async def _fresh_demo_database(settings: Settings) -> Settings:
    """A database of the demo's own next to the configured one, recreated on every run, so
    its audit chain and sessions are the demo's alone."""
    parts = urlsplit(settings.database_url)
    name = f"{parts.path.lstrip('/') or 'browser_sessions'}_demo"
    admin = await connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = urlunsplit(parts._replace(path=f"/{name}"))
    await migrate(url)
    return dataclasses.replace(settings, database_url=url)


async def _run(demo: Demo, settings: Settings, workdir: Path) -> None:
    chromium = find_chromium(settings.chromium_path)
    settings = await demo.step(
        "create and migrate the demo database", lambda: _fresh_demo_database(settings)
    )
    demo.say(f"     database: {settings.database_url.rsplit('/', 1)[-1]}")
    async with FixtureSite.start() as site:
        site.add_user(USER, PASSWORD, totp_secret=TOTP_SECRET)
        demo.say(f"     fixture site at {site.base_url} (user {USER}, password + TOTP)")
        run = dataclasses.replace(
            settings,
            chromium_path=chromium,
            queue_prefix=f"{settings.queue_prefix}demo-{secrets.token_hex(3)}.",
            allow_private_hosts=settings.allow_private_hosts | {f"127.0.0.1:{site.port}"},
            liveview_port=free_port(),
            metrics_port=free_port(),
            health_port=free_port(),
            browsers=1,
            probe_tick=timedelta(seconds=1),  # the probe step does not wait for 30 s ticks
        )
        demo.say("[..] starting workers (browse+expiry, capture) ...")
        with (
            run_worker(run, ["browse", "expiry"], workdir / "browse-worker.log"),
            run_worker(
                dataclasses.replace(run, metrics_port=free_port(), health_port=free_port()),
                ["capture"],
                workdir / "capture-worker.log",
            ),
        ):
            demo.say(f"     workers ready (logs in {workdir})")
            async with SessionsClient.open(run) as client, async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=chromium, args=list(HEADLESS_ARGS), headless=True
                )
                try:
                    await _story(demo, client, site, browser, workdir, run)
                finally:
                    await browser.close()
        demo.say("     workers stopped")


async def _story(
    demo: Demo,
    client: SessionsClient,
    site: FixtureSite,
    browser: Browser,
    workdir: Path,
    settings: Settings,
) -> None:
    created = await demo.step(
        "add a session (label 'Fixture site', start URL /app) and open its login window",
        lambda: client.add_session(
            owner_id=USER,
            label="Fixture site",
            start_url=site.url("/app"),
            logged_in_selector="#whoami",
            login_url_pattern=site.url("/login") + "**",
        ),
    )
    session_id, capture_id = created["session_id"], created["capture_id"]
    demo.say(f"     session {session_id}, capture {capture_id}")
    screenshot = workdir / "liveview.png"

    async def login(capture_id: str, shot: Path | None) -> None:
        capture = await client.wait_capture(
            capture_id, states=[CaptureState.OPEN], final_only=False, timeout=WAIT
        )
        url = capture.to_dict()["liveview_url"]
        if not url:
            raise RuntimeError(f"the capture is {capture.state.value}, not open")
        demo.say(f"     live view: {url.split('?')[0]}?token=…")
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            user = LiveViewUser(viewer=await context.new_page(), browser=browser)
            await user.open(url)
            await user.wait_for_remote_url("/login")
            x, y = await user.locate(site.url("/login?next=/app"), "#username")
            await user.click_remote(x, y)
            await user.type(USER)
            await user.press("Tab")
            await user.type(PASSWORD)
            await user.press("Enter", settle=True)
            await user.type(totp.totp(TOTP_SECRET))
            await user.press("Enter")
            await user.wait_for_remote_url("/app")
            await _sleep(1.0)  # let the logged-in page paint before the screenshot
            if shot is not None:
                await user.viewer.screenshot(path=str(shot))
            await client.save_capture(capture_id, actor_id=USER)
            saved = await client.wait_capture(capture_id, timeout=WAIT)
            if saved.state is not CaptureState.SAVED:
                raise RuntimeError(f"save ended {saved.state.value}: {saved.reason}")
        finally:
            await context.close()

    await demo.step(
        "log in through the live view (click, type, password, 2FA code) and Save",
        lambda: login(capture_id, screenshot),
    )
    demo.say(f"     live-view screenshot: {screenshot}")

    async def browse(task_id: str) -> Any:
        return await client.browse(
            task_id=task_id,
            owner_id=USER,
            session_id=session_id,
            url=site.url("/app"),
            timeout=WAIT,
        )

    async def browse_ok() -> None:
        result = await browse(f"task-{secrets.token_hex(4)}")
        if not result.ok:
            raise RuntimeError(f"{result.error_code}: {result.error_message}")
        demo.say(f"     the agent sees: {result.title!r} — {(result.text or '').strip()[:80]!r}")

    await demo.step("browse the protected page with the saved session", browse_ok)
    await demo.step(
        "revoke alice's login on the site (server side)", _async(lambda: site.revoke(USER))
    )
    expired_task = f"task-{secrets.token_hex(4)}"

    async def browse_expired() -> None:
        result = await browse(expired_task)
        if result.error_code != "AUTH_SESSION_EXPIRED":
            raise RuntimeError(f"expected AUTH_SESSION_EXPIRED, got {result.outcome}")
        demo.say(f"     browse failed with {result.error_code}")
        deadline = time.monotonic() + 20
        while True:
            session = await queries.get_session(client.db, session_id)
            comments = await queries.task_comments(client.db, expired_task)
            if session.status.value == "expired" and comments:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the session was not marked expired with a comment")
            await _sleep(0.2)
        demo.say(f"     session status: {session.status.value}")
        demo.say(f"     task comment: {comments[0]}")

    await demo.step(
        "browse again: AUTH_SESSION_EXPIRED, session Expired, task comment", browse_expired
    )
    relogin = await demo.step(
        "re-login: start a fresh capture into the same session",
        lambda: client.relogin(session_id, actor_id=USER),
    )
    await demo.step(
        "log in again through the live view and Save", lambda: login(relogin["capture_id"], None)
    )
    await demo.step("browse the protected page again", browse_ok)

    async def audit() -> None:
        conn = await connect(settings.database_url)
        try:
            report = await verify(conn, load_audit_key(settings.key_dir))
        finally:
            await conn.close()
        if not report.ok:
            raise RuntimeError(report.message)
        demo.say(f"     audit chain intact: {report.rows} rows")

    await keepalive_steps(demo, client, site, session_id)
    await demo.step("verify the audit log's hash chain", audit)


# -- sessions that stay alive: write-back and a health probe ------------------------------


async def keepalive_steps(
    demo: Demo, client: SessionsClient, site: FixtureSite, session_id: str
) -> None:
    """The site starts rotating its session cookie: each browse writes the new cookie back as
    the next version. Then a health probe, due now, opens the start URL with the session."""

    async def version() -> int:
        return (await queries.get_session(client.db, session_id)).version

    async def rotating_browses() -> None:
        site.set_switches(rotate_cookie=True, reuse_detection=True)
        seen = [await version()]
        for _ in range(3):
            result = await client.browse(
                task_id=f"task-{secrets.token_hex(4)}",
                owner_id=USER,
                session_id=session_id,
                url=site.url("/app"),
                timeout=WAIT,
            )
            if not result.ok:
                raise RuntimeError(f"{result.error_code}: {result.error_message}")
            seen.append(await version())
        demo.say(f"     session version across browses: {' -> '.join(map(str, seen))}")
        if not all(b > a for a, b in itertools.pairwise(seen)):
            raise RuntimeError("the version did not rise with every browse")
        kept = await client.versions(session_id, actor_id=USER)
        demo.say(
            "     kept versions: "
            + ", ".join(f"v{v['version']} ({v['source']})" for v in kept["versions"])
        )

    await demo.step(
        "write-back: the site rotates its cookie on every request; browse three times",
        rotating_browses,
    )

    async def probe() -> None:
        before = (await queries.get_session(client.db, session_id)).last_probe_at
        await client.db.execute(
            "UPDATE browser_sessions SET next_probe_at = now() WHERE id = $1", session_id
        )
        deadline = time.monotonic() + WAIT.total_seconds()
        while True:
            session = await queries.get_session(client.db, session_id)
            if session.last_probe_at is not None and session.last_probe_at != before:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("no probe ran")
            await _sleep(0.2)
        demo.say(
            f"     probe verdict: {session.last_probe_verdict}; status {session.status.value}; "
            f"version {session.version}; next probe {session.next_probe_at:%H:%M} UTC"
        )
        if session.last_probe_verdict != "logged_in":
            raise RuntimeError(f"the probe found {session.last_probe_verdict}")

    await demo.step("health probe: the scheduler enqueues it, the session stays logged in", probe)


def _async(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        return fn()

    return run


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
