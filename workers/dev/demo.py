"""``browser-sessions demo``: the whole product in one command, through the settings page.

Starts the fixture site, the workers and the HTTP API. A scripted user in headless Chromium
opens the settings page with a signed link, adds a session through the form, logs in
*inside the dialog's live view* (clicking and typing, 2FA included) and presses Save; the
platform browses a protected page over HTTP; the demo expires the login on the site, the
browse fails with AUTH_SESSION_EXPIRED, the page shows Expired, the user re-logs in the same
way and browsing works again. It verifies the audit chain, saves screenshots of the list,
the login dialog and the Expired state, and stops everything it started (``--serve`` keeps
it running for a person to try).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from playwright.async_api import Browser, async_playwright, expect

from producers.api import SessionsClient
from schema import queries
from schema.audit import verify_configured
from schema.settings import Settings
from workers.browser.chromium import browser_launch_options, find_chromium
from workers.dev import totp
from workers.dev.fixture_site import FixtureSite
from workers.dev.liveview_user import log_in_to_fixture_site
from workers.dev.processes import free_port, run_api, run_worker
from workers.dev.scratch import admin_url, create_database, scratch_queues
from workers.dev.settings_page import SettingsPageUser

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


async def run_demo(settings: Settings, *, out: Any = None, serve: bool = False) -> bool:
    demo = Demo(out)
    workdir = Path(tempfile.mkdtemp(prefix="browser-sessions-demo-"))
    try:
        await _run(demo, settings, workdir, serve=serve)
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
    name = f"{urlsplit(settings.database_url).path.lstrip('/') or 'browser_sessions'}_demo"
    url = await create_database(admin_url(settings.database_url), name, replace=True)
    return dataclasses.replace(settings, database_url=url)


async def _run(demo: Demo, settings: Settings, workdir: Path, *, serve: bool = False) -> None:
    chromium = find_chromium(settings.chromium_path)
    settings = await demo.step(
        "create and migrate the demo database", lambda: _fresh_demo_database(settings)
    )
    demo.say(f"     database: {settings.database_url.rsplit('/', 1)[-1]}")
    async with FixtureSite.start() as site:
        site.add_user(USER, PASSWORD, totp_secret=TOTP_SECRET)
        demo.say(f"     fixture site at {site.base_url} (user {USER}, password + TOTP)")
        api_port = free_port()
        run = dataclasses.replace(
            settings,
            chromium_path=chromium,
            queue_prefix=f"{settings.queue_prefix}demo-{secrets.token_hex(3)}.",
            allow_private_hosts=settings.allow_private_hosts | {f"127.0.0.1:{site.port}"},
            liveview_port=free_port(),
            metrics_port=free_port(),
            health_port=free_port(),
            browsers=1,
            api_host="127.0.0.1",
            api_port=api_port,
            api_token=secrets.token_urlsafe(24),
            # the live view is shown inside the settings page's dialog
            frame_ancestors=f"http://127.0.0.1:{api_port}",
            probe_tick=timedelta(seconds=1),  # the probe step does not wait for 30 s ticks
        )
        demo.say("[..] starting workers (browse+expiry, capture) and the HTTP API ...")
        with (
            scratch_queues(run.amqp_url, run.queue_prefix),
            run_worker(run, ["browse", "expiry"], workdir / "browse-worker.log"),
            run_worker(
                dataclasses.replace(run, metrics_port=free_port(), health_port=free_port()),
                ["capture"],
                workdir / "capture-worker.log",
            ),
            run_api(run, workdir / "api.log"),
        ):
            api = HttpApi(f"http://127.0.0.1:{api_port}", run.api_token)
            demo.say(f"     workers and API ready at {api.base_url} (logs in {workdir})")
            async with (
                SessionsClient.open(run) as client,
                aiohttp.ClientSession() as http,
                async_playwright() as pw,
            ):
                api.http = http
                browser = await pw.chromium.launch(
                    headless=True, **browser_launch_options(chromium, user=run.chromium_user)
                )
                try:
                    await _story(demo, client, api, site, browser, workdir, run)
                    if serve:
                        await _serve(demo, api, site)
                finally:
                    await browser.close()
        demo.say("     workers and API stopped")


class HttpApi:
    """The platform's backend calling the HTTP API with its service token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self._token = token
        self.http: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str, *, actor: str | None, body: Any = None) -> Any:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {self._token}"}
        if actor is not None:
            headers["X-Acting-User"] = actor
        async with self.http.request(
            method, self.base_url + path, headers=headers, json=body
        ) as response:
            data = await response.json()
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {data}")
            return data

    async def ui_link(self, user: str) -> str:
        return str(
            (await self.call("POST", "/v1/ui-links", actor=None, body={"user_id": user}))["url"]
        )

    def curl_for_link(self, user: str) -> str:
        return (
            f"curl -s -X POST {self.base_url}/v1/ui-links -H 'Authorization: Bearer "
            f"{self._token}' -H 'Content-Type: application/json' -d '{{\"user_id\": \"{user}\"}}'"
        )


async def _story(
    demo: Demo,
    client: SessionsClient,
    api: HttpApi,
    site: FixtureSite,
    browser: Browser,
    workdir: Path,
    settings: Settings,
) -> None:
    label = "Fixture site"
    shots = {name: workdir / f"{name}.png" for name in ("list", "dialog", "expired")}
    shown = {"list": "list (Active)", "dialog": "login dialog", "expired": "Expired state"}
    link = await demo.step(
        "the platform asks for a signed settings-page link for alice (POST /v1/ui-links)",
        lambda: api.ui_link(USER),
    )
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    person = SettingsPageUser(page=await context.new_page(), browser=browser)
    words = person.words
    await demo.step(
        "alice opens the link: the settings page (an HttpOnly cookie is set)",
        lambda: person.open(link),
    )

    async def add() -> None:
        dialog = await person.fill_form(
            label=label,
            start_url="fixture-site/app",
            selector="#whoami",
            pattern=site.url("/login") + "**",
        )
        await person.button("open_login_window", dialog).click()
        await expect(dialog.get_by_text(words["error_url"])).to_be_visible(timeout=20_000)
        demo.say(f"     inline validation: {words['error_url']!r}")
        await dialog.get_by_label(words["start_url"], exact=True).fill(site.url("/app"))
        await person.button("open_login_window", dialog).click()
        await expect(person.login_dialog()).to_be_visible(timeout=20_000)
        await person.wait_for_capture_state("capture_open")
        demo.say(f"     login dialog open, capture state {words['capture_open']!r}")

    await demo.step(
        "Add site session: fill in the form (a bad URL is refused inline), Open login window",
        add,
    )

    async def log_in(shot: Path | None) -> None:
        live = await person.live_view()
        try:
            await log_in_to_fixture_site(
                live, site.url("/login?next=/app"), USER, PASSWORD, lambda: totp.totp(TOTP_SECRET)
            )
        except Exception:
            await person.page.screenshot(path=str(workdir / "failure.png"))
            demo.say(f"     what the page showed: {workdir / 'failure.png'}")
            raise
        await _sleep(1.0)  # let the logged-in page paint before the screenshot
        if shot is not None:
            await person.page.screenshot(path=str(shot))
        await person.save()
        await person.wait_for_capture_state("capture_saved")
        await person.wait_for_status(label, "status_active")

    await demo.step(
        "log in inside the dialog's live view (click, type, password, 2FA code), Save: Active",
        lambda: log_in(shots["dialog"]),
    )
    await expect(person.login_dialog()).to_be_hidden(timeout=20_000)
    await person.page.screenshot(path=str(shots["list"]))
    sessions = await api.call("GET", "/v1/sessions", actor=USER)
    session_id = sessions["sessions"][0]["id"]
    demo.say(f"     session {session_id}: {sessions['sessions'][0]['status']}")

    async def browse(task_id: str) -> Any:
        await api.call("POST", "/v1/tasks", actor=USER, body={"task_id": task_id})
        body = {"task_id": task_id, "session_id": session_id, "url": site.url("/app")}
        return await api.call("POST", "/v1/browse", actor=USER, body=body)

    async def browse_ok() -> None:
        result = await browse(f"task-{secrets.token_hex(4)}")
        if result["outcome"] != "ok":
            raise RuntimeError(f"{result['error']}")
        text = (result.get("text") or "").strip()[:80]
        demo.say(f"     the agent sees: {result['title']!r} — {text!r}")

    await demo.step("browse the protected page with the saved session (POST /v1/browse)", browse_ok)
    await demo.step(
        "revoke alice's login on the site (server side)", _async(lambda: site.revoke(USER))
    )
    expired_task = f"task-{secrets.token_hex(4)}"

    async def browse_expired() -> None:
        result = await browse(expired_task)
        code = (result.get("error") or {}).get("code")
        if code != "AUTH_SESSION_EXPIRED":
            raise RuntimeError(f"expected AUTH_SESSION_EXPIRED, got {result['outcome']} {code}")
        demo.say(f"     browse failed with {code}")
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

    async def shows_expired() -> None:
        await person.wait_for_status(label, "status_expired")
        await expect(person.button("relogin", person.row(label))).to_be_visible(timeout=20_000)
        await person.page.screenshot(path=str(shots["expired"]))

    await demo.step("the settings page shows Expired with a Re-login button", shows_expired)

    async def relogin() -> None:
        await person.relogin(label)
        await person.wait_for_capture_state("capture_open")
        await log_in(None)

    await demo.step("Re-login: log in again inside the dialog's live view, Save: Active", relogin)
    await demo.step("browse the protected page again", browse_ok)
    await context.close()

    async def audit() -> None:
        report = await verify_configured(settings)
        if not report.ok:
            raise RuntimeError(report.message)
        demo.say(f"     audit chain intact: {report.rows} rows")

    await keepalive_steps(demo, client, site, session_id)
    await demo.step("verify the audit log's hash chain", audit)
    for name, path in shots.items():
        demo.say(f"     screenshot of the {shown[name]}: {path}")


async def _serve(demo: Demo, api: HttpApi, site: FixtureSite) -> None:
    """``demo --serve``: keep everything running for a person to try, until Ctrl-C."""
    demo.say("")
    demo.say(f"All {demo.passed} steps passed. Everything keeps running (Ctrl-C to stop).")
    demo.say("Open the settings page as alice:")
    demo.say(f"  {await api.ui_link(USER)}")
    demo.say("The link is valid for 2 minutes; ask for a fresh one as the platform does:")
    demo.say(f"  {api.curl_for_link(USER)}")
    demo.say(
        f"Log in to the fixture site ({site.base_url}) as {USER} / {PASSWORD!r}, 2FA secret "
        f"{TOTP_SECRET} (codes: python -m workers.dev.totp {TOTP_SECRET})"
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    demo.say("     stopping")


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
            task = await client.add_task(f"task-{secrets.token_hex(4)}", owner_id=USER)
            result = await client.browse(
                task_id=task["task_id"],
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
    await asyncio.sleep(seconds)
