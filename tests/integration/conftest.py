"""Integration fixtures: the fixture site, a Playwright Chromium, a real worker process and
a producer client, all against the real services of this run."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Browser, async_playwright

from producers.api import SessionsClient
from schema.settings import Settings
from workers.chromium import HEADLESS_ARGS
from workers.fixture_site import FixtureSite

PASSWORD = "correct horse"
LoginState = Callable[..., Awaitable[dict[str, Any]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
async def site() -> AsyncIterator[FixtureSite]:
    async with FixtureSite.start() as fixture:
        for user in ("alice", "bob", "carol", "dave", "erin"):
            fixture.add_user(user, PASSWORD)
        yield fixture


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=chromium_path, args=list(HEADLESS_ARGS), headless=True
        )
        yield b
        await b.close()


@pytest.fixture(scope="session")
def login_state(browser: Browser, site: FixtureSite) -> LoginState:
    """Log a user in on the fixture site with a real browser; returns its storage state."""

    async def login(user: str, *, indexed_db: bool = False) -> dict[str, Any]:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(site.url("/login?next=/app"))
            await page.fill("#username", user)
            await page.fill("#password", PASSWORD)
            await page.click("#submit")
            await page.wait_for_selector("#whoami", timeout=10_000)
            return dict(await context.storage_state(indexed_db=indexed_db))
        finally:
            await context.close()

    return login


@pytest.fixture(scope="session")
def worker_settings(base_settings: Settings, site: FixtureSite) -> Settings:
    return dataclasses.replace(
        base_settings,
        allow_private_hosts=frozenset({f"127.0.0.1:{site.port}"}),
        metrics_port=free_port(),
        health_port=free_port(),
        browsers=1,
        contexts_per_browser=2,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The BROWSER_SESSIONS_* environment that reproduces ``settings`` in a subprocess."""
    return {
        "BROWSER_SESSIONS_DATABASE_URL": settings.database_url,
        "BROWSER_SESSIONS_AMQP_URL": settings.amqp_url,
        "BROWSER_SESSIONS_QUEUE_PREFIX": settings.queue_prefix,
        "BROWSER_SESSIONS_KEY_DIR": str(settings.key_dir),
        "BROWSER_SESSIONS_ALLOW_PRIVATE_HOSTS": ",".join(sorted(settings.allow_private_hosts)),
        "BROWSER_SESSIONS_METRICS_PORT": str(settings.metrics_port),
        "BROWSER_SESSIONS_HEALTH_PORT": str(settings.health_port),
        "BROWSER_SESSIONS_LIVEVIEW_PORT": str(settings.liveview_port),
        "BROWSER_SESSIONS_BROWSERS": str(settings.browsers),
        "BROWSER_SESSIONS_CONTEXTS_PER_BROWSER": str(settings.contexts_per_browser),
        "BROWSER_SESSIONS_CAPTURE_TIMEOUT": str(settings.capture_timeout.total_seconds()),
        "BROWSER_SESSIONS_LOG_FORMAT": "json",
    }


@dataclasses.dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> list[int]:
        """PIDs of every process below the worker (its dramatiq children and browsers)."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [], [self.process.pid]
        while frontier:
            pid = frontier.pop()
            children = [c for c, p in parents.items() if p == pid]
            found.extend(children)
            frontier.extend(children)
        return found

    def chromium_pids(self) -> list[int]:
        """The browser (main) processes the worker launched."""
        pids = []
        for pid in self.descendants():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"chrom" in cmd[0] and not any(a.startswith(b"--type=") for a in cmd):
                    pids.append(pid)
        return pids


@contextlib.contextmanager
def run_worker(
    settings: Settings, queues: list[str], log_path: Path, **extra_env: str
) -> Iterator[WorkerProcess]:
    env = {**os.environ, **settings_env(settings), **extra_env}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "worker", "--queues", *queues],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(process, log_path)
    try:
        deadline = time.monotonic() + 60
        while "worker_ready" not in worker.log():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{worker.log()[-4000:]}")
            time.sleep(0.2)
        yield worker
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def browse_worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real ``browser-sessions worker`` on the browse and expiry queues."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with run_worker(worker_settings, ["browse", "expiry"], log_path) as worker:
        yield worker


@pytest.fixture
async def client(worker_settings: Settings) -> AsyncIterator[SessionsClient]:
    async with SessionsClient.open(worker_settings) as c:
        yield c


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 20, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def comments(db: asyncpg.Connection, task_id: str) -> list[str]:
    rows = await db.fetch("SELECT body FROM task_comments WHERE task_id = $1", task_id)
    return [r["body"] for r in rows]
