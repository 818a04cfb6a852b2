"""Health probes through a real worker (its own queues, a short interval): they keep an idle
session alive, never expire on 5xx or a site that is down, expire and notify on a real
logout. The scheduler's claims are safe with several replicas."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Browser

from producers.api import SessionsClient
from schema.db import create_pool
from schema.jobs import ProbeJob
from schema.results import BrowseResult
from schema.settings import Settings
from tests.support.keepalive import browse_in_new_task, store_for
from tests.support.logins import PASSWORD, log_in
from tests.support.services import new_database
from tests.support.sessions import import_on_site, wait_for_status
from tests.support.tasks import has_one_comment
from tests.support.waiting import wait_for
from tests.support.workers import own_ports, own_worker_fixtures
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess, free_port
from workers.jobs.probes import ProbeScheduler

pytestmark = pytest.mark.integration

INTERVAL = timedelta(seconds=1)


@contextlib.contextmanager
def site_in_thread(port: int = 0) -> Iterator[FixtureSite]:
    """A fixture site on a loop of its own: a worker's teardown blocks the tests' loop, and
    a probe still running then must get its page."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    started: list[FixtureSite] = []

    async def serve() -> None:
        async with FixtureSite.start(port=port) as site:
            started.append(site)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the fixture site did not start"
    try:
        yield started[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def own_site() -> Iterator[FixtureSite]:
    """A site of this module's own (its tests set idle death and 5xx start URLs)."""
    with site_in_thread() as started:
        yield started


@pytest.fixture(scope="module")
def down_port() -> int:
    """The port of a site that a test starts, then stops (the site is down)."""
    return free_port()


@pytest.fixture(scope="module")
def probe_settings(worker_settings: Settings, own_site: FixtureSite, down_port: int) -> Settings:
    return own_ports(
        worker_settings,
        queue_prefix=f"{worker_settings.queue_prefix}probes.",
        allow_private_hosts=frozenset({f"127.0.0.1:{own_site.port}", f"127.0.0.1:{down_port}"}),
        probe_interval=INTERVAL,
        probe_tick=timedelta(seconds=0.3),
        probe_scheduler=True,
        browse_retries=0,
    )


probe_worker, probe_client = own_worker_fixtures("probe_settings", ["browse", "expiry"])


@dataclasses.dataclass(frozen=True)
class Probed:
    """A user logged in on ``site`` with a real browser, imported as a session."""

    client: SessionsClient
    site: FixtureSite
    user: str
    session_id: str

    async def browse(self, url: str) -> BrowseResult:
        return await browse_in_new_task(
            self.client, self.user, self.session_id, url, timeout=timedelta(seconds=60)
        )


async def new_session(client: SessionsClient, site: FixtureSite, browser: Browser) -> Probed:
    user = f"probe-{secrets.token_hex(3)}"
    site.add_user(user, PASSWORD)
    state = await log_in(browser, site, user)
    created = await import_on_site(client, site, user, state, label="Probed")
    return Probed(client, site, user, str(created["session_id"]))


@pytest.fixture
async def own_session(
    probe_worker: WorkerProcess,
    probe_client: SessionsClient,
    own_site: FixtureSite,
    browser: Browser,
) -> Probed:
    """A new user's session on ``own_site``, with the probe worker running."""
    return await new_session(probe_client, own_site, browser)


async def probe_now(db: asyncpg.Connection, session_id: str) -> None:
    await db.execute("UPDATE browser_sessions SET next_probe_at = now() WHERE id = $1", session_id)


async def probes_of(db: asyncpg.Connection, session_id: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE session_id = $1 AND action = 'decrypt' "
            "AND actor_id = 'system:probe'",
            session_id,
        )
    )


async def row(db: asyncpg.Connection, session_id: str) -> asyncpg.Record:
    return await db.fetchrow(
        """SELECT status, version, last_probe_verdict, probe_failures, next_probe_at
           FROM browser_sessions WHERE id = $1""",
        session_id,
    )


async def test_probes_alone_keep_an_idle_session_alive(
    own_session: Probed, db: asyncpg.Connection
) -> None:
    own_site, user, session_id = own_session.site, own_session.user, own_session.session_id
    own_site.set_switches(idle_timeout_s=3.0)
    try:
        await probe_now(db, session_id)
        # Six probes take well over twice the idle limit: only the probes kept it alive.
        await wait_for(
            lambda: _at_least(probes_of(db, session_id), 6), timeout=30, what="six probes"
        )
        assert own_site.session_count(user) == 1
        result = await own_session.browse(own_site.url("/app"))
        assert result.ok, result.error_message
        probed = await row(db, session_id)
        assert (probed["status"], probed["last_probe_verdict"]) == ("active", "logged_in")
    finally:
        own_site.set_switches(idle_timeout_s=0.0)


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count >= n)


async def test_a_5xx_start_page_is_inconclusive_never_expires_nor_writes_back(
    own_session: Probed, db: asyncpg.Connection
) -> None:
    own_site, session_id = own_session.site, own_session.session_id
    own_site.set_switches(rotate_cookie=True)  # any write-back would raise the version
    try:
        start_url = own_site.url("/app")
        await db.execute(
            "UPDATE browser_sessions SET start_url = $2 WHERE id = $1",
            session_id,
            own_site.url("/status/503"),
        )
        await probe_now(db, session_id)
        await wait_for(lambda: _failures(db, session_id, 2), what="two inconclusive probes")
        await db.execute(
            "UPDATE browser_sessions SET start_url = $2 WHERE id = $1", session_id, start_url
        )
        after_5xx = await row(db, session_id)
        assert (after_5xx["status"], after_5xx["version"]) == ("active", 1)
        assert after_5xx["last_probe_verdict"] == "inconclusive"
    finally:
        own_site.set_switches(rotate_cookie=False)


async def _failures(db: asyncpg.Connection, session_id: str, n: int) -> bool:
    return bool((await row(db, session_id))["probe_failures"] >= n)


async def test_a_site_that_is_down_never_expires_nor_writes_back(
    probe_worker: WorkerProcess,
    probe_client: SessionsClient,
    down_port: int,
    browser: Browser,
    db: asyncpg.Connection,
) -> None:
    with site_in_thread(port=down_port) as down:
        down_session = await new_session(probe_client, down, browser)
        app = down.url("/app")
    # The site is gone: connections are refused.
    result = await down_session.browse(app)
    session_id = down_session.session_id
    assert result.error_code == "NAVIGATION_FAILED"
    await probe_now(db, session_id)
    await wait_for(lambda: _failures(db, session_id, 2), what="two inconclusive probes")
    after = await row(db, session_id)
    assert (after["status"], after["version"], after["last_probe_verdict"]) == (
        "active",
        1,
        "inconclusive",
    )


async def test_a_real_logout_found_by_a_probe_expires_and_notifies(
    own_session: Probed, db: asyncpg.Connection
) -> None:
    own_site, user, session_id = own_session.site, own_session.user, own_session.session_id
    own_site.revoke(user)
    await probe_now(db, session_id)
    await wait_for_status(db, session_id, "expired")  # by a probe
    expired = await row(db, session_id)
    assert (expired["version"], expired["last_probe_verdict"]) == (1, "logged_out")
    assert expired["next_probe_at"] is None
    pending = await own_session.client.notifications(user)
    assert [n["kind"] for n in pending] == ["expired"]
    assert "Re-login" in pending[0]["message"] and session_id == pending[0]["session_id"]
    # The next task that picks the session hears about it on its own comment.
    result = await own_session.browse(own_site.url("/app"))
    assert result.error_code == "AUTH_SESSION_EXPIRED"
    await wait_for(lambda: has_one_comment(db, result.task_id), what="the task's comment")


# -- the scheduler on its own: replicas, expiring soon -------------------------------------


async def test_scheduler_replicas_claim_each_due_session_once_and_warn_expiring_soon(
    base_settings: Settings,
) -> None:
    # A database of its own: workers of other tests run schedulers on the shared one.
    async with new_database(f"bs_test_sched_{secrets.token_hex(4)}") as url:
        settings = dataclasses.replace(base_settings, database_url=url)
        db = await asyncpg.connect(url)
        try:
            await _claims_and_notices(url, db, settings)
        finally:
            await db.close()


async def _claims_and_notices(
    database_url: str, db: asyncpg.Connection, base_settings: Settings
) -> None:
    owner = f"sched-{secrets.token_hex(3)}"
    store = store_for(base_settings)
    ids = []
    for _ in range(12):
        session_id = f"ses_{secrets.token_hex(8)}"
        await db.execute(
            """INSERT INTO browser_sessions (id, owner_id, label, start_url, site)
               VALUES ($1, $2, 'S', 'https://example.com/app', 'example.com')""",
            session_id,
            owner,
        )
        await store.save(
            db, session_id=session_id, owner_id=owner, actor_id=owner, state={"cookies": []}
        )
        ids.append(session_id)
    await db.execute(
        "UPDATE browser_sessions SET next_probe_at = now() - interval '1 s' "
        "WHERE id = ANY($1::text[])",
        ids,
    )
    await db.execute(
        "UPDATE browser_sessions SET expires_at = now() + interval '1 hour' WHERE id = $1", ids[0]
    )
    pool = await create_pool(database_url, min_size=2, max_size=4)
    try:
        claimed: list[list[str]] = [[], []]

        def scheduler(i: int) -> ProbeScheduler:
            async def enqueue(job: ProbeJob) -> None:
                claimed[i].append(job.session_id)
                await asyncio.sleep(0)

            return ProbeScheduler(
                db=pool,
                enqueue=enqueue,
                tick=timedelta(seconds=1),
                expiring_soon=timedelta(hours=24),
                batch=8,
            )

        first, second = scheduler(0), scheduler(1)
        await asyncio.gather(first.tick(), second.tick())
        await asyncio.gather(first.tick(), second.tick())
    finally:
        await pool.close()
    mine = [s for s in claimed[0] + claimed[1] if s in ids]
    assert sorted(mine) == sorted(ids)  # every due session once, across both replicas
    notes = await db.fetch(
        "SELECT kind, session_id FROM session_notifications WHERE user_id = $1", owner
    )
    assert [(n["kind"], n["session_id"]) for n in notes] == [("expiring_soon", ids[0])]
    async with SessionsClient.open(base_settings) as client:
        listed = {s.id: s.to_dict() for s in await client.list_sessions(owner)}
    assert listed[ids[0]]["expiring_soon"] is True
    assert listed[ids[1]]["expiring_soon"] is False
    assert {"expires_at", "status", "version", "label"} <= set(listed[ids[0]])
