"""Browse jobs end to end: producers → RabbitMQ → a real worker with Chromium → Postgres."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from producers.api import SessionsClient
from schema.jobs import BrowseJob, BrowseOptions, ExpireJob
from schema.results import BrowseResult
from tests.support.keepalive import (
    NewTaskBrowses,
    browse_in_new_task,
    load_state,
    new_task,
    store_for,
)
from tests.support.logins import UNREACHABLE, LoginState
from tests.support.pools import local_pool
from tests.support.sessions import import_on_site
from tests.support.tasks import comments, has_one_comment
from tests.support.waiting import wait_for
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess
from workers.guard.policy import UrlGuard
from workers.jobs.browse import BrowseService

pytestmark = pytest.mark.integration

RESULT = timedelta(seconds=60)


def task_id() -> str:
    return f"task-{secrets.token_hex(4)}"


async def import_session(
    client: SessionsClient,
    site: FixtureSite,
    login_state: LoginState,
    user: str,
    *,
    selector: str | None = "#whoami",
) -> str:
    created = await import_on_site(client, site, user, await login_state(user), selector=selector)
    assert created["status"] == "active"
    return str(created["session_id"])


async def job_in_new_task(
    client: SessionsClient, owner: str, session_id: str, url: str, options: BrowseOptions
) -> BrowseJob:
    """A browse job of ``owner``'s for a new task of theirs (built, not sent)."""
    return BrowseJob(
        job_id=f"job_{secrets.token_hex(6)}",
        task_id=await new_task(client, owner),
        owner_id=owner,
        session_id=session_id,
        url=url,
        options=options,
    )


ImportAs = Callable[[str], Awaitable[str]]


@pytest.fixture
def import_as(
    browse_worker: WorkerProcess, client: SessionsClient, site: FixtureSite, login_state: LoginState
) -> ImportAs:
    """``await import_as("alice")``: a session imported from a real login of the user, with
    the browse worker running; its id."""

    async def imported(user: str) -> str:
        return await import_session(client, site, login_state, user)

    return imported


async def test_logged_in_browse_returns_protected_text(
    import_as: ImportAs, client: SessionsClient, site: FixtureSite, db: asyncpg.Connection
) -> None:
    session_id = await import_as("alice")
    result = await browse_in_new_task(client, "alice", session_id, site.url("/app"), timeout=RESULT)
    assert result.ok, result.error_message
    assert "logged in as alice" in (result.text or "")
    assert result.final_url == site.url("/app")
    assert result.http_status == 200
    row = await db.fetchrow(
        "SELECT status, last_used_at FROM browser_sessions WHERE id = $1", session_id
    )
    assert row["status"] == "active" and row["last_used_at"] is not None


async def test_a_job_past_its_budget_ends_itself_and_stores_its_result(
    import_as: ImportAs,
    client: SessionsClient,
    site: FixtureSite,
    worker_settings: Any,
    database_url: str,
    chromium_path: str,
) -> None:
    """A browse ends itself at its budget, before dramatiq's time limit would kill it and
    leave the caller waiting for a result that never comes: a page whose wait-for selector
    never appears (within a 60 s timeout) fails with NAVIGATION_FAILED after the 2 s budget,
    and the result of that last attempt is stored."""
    session_id = await import_as("alice")
    store = store_for(worker_settings)
    job = await job_in_new_task(
        client,
        "alice",
        session_id,
        site.url("/app"),
        BrowseOptions(wait_for_selector="#never-there", timeout_s=60),
    )
    async with (
        asyncpg.create_pool(database_url, min_size=1, max_size=2) as db,
        local_pool(chromium_path, size=1) as pool,
    ):
        service = BrowseService(
            db=db,
            pool=pool,
            store=store,
            audit=store.audit,
            guard=UrlGuard(allow_private_hosts=worker_settings.allow_private_hosts),
            on_expired=_never_expires,
            budget=timedelta(seconds=2),
        )
        started = time.monotonic()
        code = await service.run(job, retry=lambda err: False)
        took = time.monotonic() - started
    assert code == "NAVIGATION_FAILED"
    assert took < 15, took  # the budget's 2 s plus decrypt, launch and close; not 60 s
    result = await client.wait_result(job.job_id, owner_id="alice", timeout=RESULT)
    assert not result.ok and result.error_code == "NAVIGATION_FAILED"
    assert "time budget of 2s" in (result.error_message or "")


async def _never_expires(job: ExpireJob) -> None:
    raise AssertionError(f"a job past its budget is not an expiry: {job}")


async def test_expiry_marks_session_fails_task_and_comments_once(
    import_as: ImportAs, client: SessionsClient, site: FixtureSite, db: asyncpg.Connection
) -> None:
    session_id = await import_as("bob")
    assert site.revoke("bob") >= 1
    result = await browse_in_new_task(client, "bob", session_id, site.url("/app"), timeout=RESULT)
    assert not result.ok and result.error_code == "AUTH_SESSION_EXPIRED"
    first = result.task_id

    async def expired() -> bool:
        status = await db.fetchval("SELECT status FROM browser_sessions WHERE id = $1", session_id)
        return bool(status == "expired" and await comments(db, first))

    await wait_for(expired, what="session expired and comment posted")
    task_row = await db.fetchrow("SELECT status, error_code FROM tasks WHERE id = $1", first)
    assert (task_row["status"], task_row["error_code"]) == ("failed", "AUTH_SESSION_EXPIRED")
    bodies = await comments(db, first)
    assert len(bodies) == 1
    assert "bob's fixture" in bodies[0] and "Re-login" in bodies[0]
    assert f"127.0.0.1:{site.port}" in bodies[0]

    # A later task fails fast with the same code and gets its own comment.
    again = await browse_in_new_task(client, "bob", session_id, site.url("/app"), timeout=RESULT)
    assert again.error_code == "AUTH_SESSION_EXPIRED"
    assert (again.duration_ms or 0) < 2000
    await wait_for(lambda: has_one_comment(db, again.task_id), what="second task's comment")
    assert len(await comments(db, first)) == 1
    audit = await db.fetch(
        "SELECT action, result FROM audit_log WHERE session_id = $1 AND action = 'expire'",
        session_id,
    )
    assert [tuple(r) for r in audit] == [("expire", "ok")]


async def test_owner_mismatch_is_refused_and_audited(
    import_as: ImportAs, client: SessionsClient, site: FixtureSite, db: asyncpg.Connection
) -> None:
    session_id = await import_as("carol")
    result = await browse_in_new_task(
        client, "mallory", session_id, site.url("/app"), timeout=RESULT
    )
    assert result.error_code == "NOT_OWNER"
    # A task owned by someone else, named by the session's owner, is refused too.
    theirs = task_id()
    await db.execute("INSERT INTO tasks (id, owner_id) VALUES ($1, 'mallory')", theirs)
    job = await client.enqueue_browse(
        task_id=theirs, owner_id="carol", session_id=session_id, url=site.url("/app")
    )
    refused = await client.wait_result(job, owner_id="carol", timeout=RESULT)
    assert refused.error_code == "NOT_OWNER"
    # A task nobody created is refused, and the job does not create it.
    invented = task_id()
    job = await client.enqueue_browse(
        task_id=invented, owner_id="carol", session_id=session_id, url=site.url("/app")
    )
    missing = await client.wait_result(job, owner_id="carol", timeout=RESULT)
    assert missing.error_code == "TASK_NOT_FOUND"
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE id = $1", invented) == 0
    denied = await db.fetch(
        "SELECT detail FROM audit_log WHERE session_id = $1 AND result = 'denied' ORDER BY id",
        session_id,
    )
    assert [r["detail"] for r in denied] == ["NOT_OWNER", "NOT_OWNER", "TASK_NOT_FOUND"]
    decrypts = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE session_id = $1 AND action = 'decrypt'", session_id
    )
    assert decrypts == 0  # denials never reach a decrypt


async def test_revoked_session_fails_fast(
    import_as: ImportAs, client: SessionsClient, site: FixtureSite
) -> None:
    session_id = await import_as("dave")
    await client.revoke(session_id, actor_id="dave")
    result = await browse_in_new_task(client, "dave", session_id, site.url("/app"), timeout=RESULT)
    assert result.error_code == "SESSION_REVOKED"
    missing = await browse_in_new_task(
        client, "dave", "ses_missing", site.url("/app"), timeout=RESULT
    )
    assert missing.error_code == "SESSION_NOT_FOUND"


@pytest.fixture(scope="module")
async def erin_session(
    browse_worker: WorkerProcess, worker_settings: Any, site: FixtureSite, login_state: LoginState
) -> str:
    # No logged-in selector: this session browses public pages of the site too.
    async with SessionsClient.open(worker_settings) as c:
        return await import_session(c, site, login_state, "erin", selector=None)


@pytest.fixture
def erin(client: SessionsClient, erin_session: str) -> NewTaskBrowses:
    """Erin's browses with her session, each for a new task."""
    return NewTaskBrowses(client, "erin", erin_session)


@pytest.mark.parametrize(
    "url",
    [
        "redirect-other-port",
        "http://localhost:{port}/app",
        "http://2130706433:{other}/app",
        "http://[::1]:{port}/app",
        "http://0x7f.1:{other}/app",
        "http://127.0.0.1:{other}/app",
        "file:///etc/passwd",
        "chrome://version",
        "https://example.com/",
    ],
)
async def test_guard_refuses(
    url: str, erin_session: str, client: SessionsClient, site: FixtureSite
) -> None:
    other = site.port + 1 if site.port < 65000 else site.port - 1
    if url == "redirect-other-port":
        url = site.url(f"/redirect?to=http://127.0.0.1:{other}/")
    url = url.format(port=site.port, other=other)
    try:
        result = await browse_in_new_task(client, "erin", erin_session, url, timeout=RESULT)
        code = result.error_code
    except Exception as err:  # refused on the producer side already
        code = getattr(err, "code", repr(err))
    assert code == "URL_NOT_ALLOWED"


async def test_killed_browser_mid_job_is_replaced_and_job_completes(
    browse_worker: WorkerProcess, client: SessionsClient, site: FixtureSite, erin: NewTaskBrowses
) -> None:
    import asyncio

    job = await erin.enqueue(site.url("/slow?ms=4000"), BrowseOptions(timeout_s=20))
    await asyncio.sleep(1.5)
    before = browse_worker.chromium_pids()
    assert before, "the worker should have a warm browser"
    for pid in before:
        with contextlib.suppress(ProcessLookupError):  # a helper process may have exited
            os.kill(pid, signal.SIGKILL)
    result = await client.wait_result(job, owner_id="erin", timeout=RESULT)
    assert result.ok, result.error_message
    assert result.attempts >= 2
    after = browse_worker.chromium_pids()
    assert after and not set(after) & set(before)


@pytest.mark.parametrize("lease_mode", ["parallel", "exclusive"])
async def test_a_redelivered_message_runs_again_and_stores_one_result(
    lease_mode: str,
    browse_worker: WorkerProcess,
    client: SessionsClient,
    site: FixtureSite,
    erin_session: str,
    db: asyncpg.Connection,
    worker_settings: Any,
) -> None:
    """The same message (same id) delivered again after a kill -9 mid-job and once more
    after it succeeded: two executions (decrypt audit rows), one result, one use row. On a
    session whose jobs hold its lease, the killed job's lease lapses within its 15 s
    deadline (it is no longer renewed), not after LEASE_TTL (90 s)."""
    await client.set_lease_mode(erin_session, mode=lease_mode, actor_id="erin")
    job = await job_in_new_task(
        client, "erin", erin_session, site.url("/slow?ms=3000"), BrowseOptions(timeout_s=20)
    )
    message = _message(worker_settings, "browse", job.to_message())
    broker = RabbitmqBroker(url=worker_settings.amqp_url, middleware=[], confirm_delivery=True)
    try:
        broker.enqueue(message)
        await wait_for(lambda: _audit_rows(db, job.job_id, "decrypt", 1), what="job in flight")
        for pid in browse_worker.actor_pids():
            os.kill(pid, signal.SIGKILL)  # the message is unacked: RabbitMQ redelivers it
        await wait_for(lambda: _has_result(db, job.job_id), timeout=60, what="result")
        assert await _audit_rows(db, job.job_id, "decrypt", 2)  # it really ran twice
        assert await _audit_rows(db, job.job_id, "use", 1)
        runs = _finished(browse_worker, message.message_id)
        assert [(r["outcome"], r["attempt"]) for r in runs] == [("ok", 1)]  # redelivered
        broker.enqueue(message)  # the same message once more, after its result
        await wait_for(
            lambda: _skipped(browse_worker, message.message_id), what="duplicate skipped"
        )
    finally:
        broker.close()
    assert await _audit_rows(db, job.job_id, "decrypt", 2)  # not run a third time
    assert (
        await db.fetchval("SELECT count(*) FROM browse_results WHERE job_id = $1", job.job_id) == 1
    )


async def test_a_job_longer_than_the_lease_deadline_keeps_the_session_to_itself(
    erin: NewTaskBrowses,
    erin_session: str,
    client: SessionsClient,
    site: FixtureSite,
    db: asyncpg.Connection,
) -> None:
    """A job that runs past a lease's 15 s deadline keeps renewing it: a second job on a
    session whose jobs take its lease waits for the first to end, never takes it over."""
    await client.set_lease_mode(erin_session, mode="exclusive", actor_id="erin")
    try:
        slow = await erin.enqueue(site.url("/slow?ms=20000"), BrowseOptions(timeout_s=40))
        await wait_for(lambda: _audit_rows(db, slow, "decrypt", 1), what="the slow job running")
        quick = await erin.enqueue(site.url("/public"))
        for job_id in (slow, quick):
            result = await client.wait_result(job_id, owner_id="erin", timeout=RESULT)
            assert result.ok, f"{result.error_code}: {result.error_message}"
    finally:
        await client.set_lease_mode(erin_session, mode="auto", actor_id="erin")
    rows = await db.fetch(
        "SELECT job_id, created_at FROM browse_results WHERE job_id = ANY($1)", [slow, quick]
    )
    stored = {row["job_id"]: row["created_at"] for row in rows}
    assert stored[quick] > stored[slow]  # it waited for the lease; it did not run alongside


async def test_a_redelivered_expiry_posts_one_comment(
    browse_worker: WorkerProcess,
    import_as: ImportAs,
    client: SessionsClient,
    db: asyncpg.Connection,
    worker_settings: Any,
) -> None:
    session_id = await import_as("alice")
    task_id = await new_task(client, "alice")
    expire = ExpireJob(session_id=session_id, task_id=task_id, job_id=f"job_{task_id}")
    message = _message(worker_settings, "expire", expire.to_message())
    broker = RabbitmqBroker(url=worker_settings.amqp_url, middleware=[], confirm_delivery=True)
    try:
        for _ in range(3):
            broker.enqueue(message)
        await wait_for(
            lambda: _ran(browse_worker, message.message_id, 3), what="three deliveries run"
        )
    finally:
        broker.close()
    assert len(await comments(db, task_id)) == 1
    assert await expiries(db, session_id) == 1


async def expiries(db: asyncpg.Connection, session_id: str) -> int:
    """How many times the session was expired (its audit rows)."""
    return int(
        await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE session_id = $1 AND action = 'expire'",
            session_id,
        )
    )


def _message(settings: Any, actor: str, payload: dict[str, Any]) -> Message[Any]:
    from schema.jobs import ACTOR_QUEUES

    return Message(
        queue_name=settings.queue(ACTOR_QUEUES[actor]),
        actor_name=actor,
        args=(payload,),
        kwargs={},
        options={},
    )


async def _audit_rows(db: asyncpg.Connection, job_id: str, action: str, count: int) -> bool:
    found = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE request_id = $1 AND action = $2", job_id, action
    )
    return bool(found == count)


async def _has_result(db: asyncpg.Connection, job_id: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM browse_results WHERE job_id = $1", job_id))


def _finished(worker: WorkerProcess, message_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in worker.log().splitlines() if message_id in x]
    return [x for x in lines if x.get("event") == "job_finished"]


async def _ran(worker: WorkerProcess, message_id: str, count: int) -> bool:
    return len(_finished(worker, message_id)) == count


async def _skipped(worker: WorkerProcess, message_id: str) -> bool:
    return any(
        '"browse_duplicate_skipped"' in line and message_id in line
        for line in worker.log().splitlines()
    )


@pytest.mark.parametrize("where", ["http-503", "unreachable"])
async def test_site_failures_never_expire_the_session_or_comment(
    where: str,
    import_as: ImportAs,
    client: SessionsClient,
    site: FixtureSite,
    db: asyncpg.Connection,
    worker_settings: Any,
) -> None:
    """A 5xx page has no logged-in selector and an unreachable site has no page: neither is
    a logged-out verdict."""
    session_id = await import_as("alice")
    url = site.url("/status/503") if where == "http-503" else f"http://{UNREACHABLE}/app"
    result = await browse_in_new_task(
        client, "alice", session_id, url, options=BrowseOptions(timeout_s=10), timeout=RESULT
    )
    assert result.error_code == "NAVIGATION_FAILED", result
    task_id = result.task_id
    await wait_for(lambda: _queue_drained(worker_settings), what="queues drained")
    status = await db.fetchval("SELECT status FROM browser_sessions WHERE id = $1", session_id)
    assert status == "active"
    assert await comments(db, task_id) == []
    task_code = await db.fetchval("SELECT error_code FROM tasks WHERE id = $1", task_id)
    assert task_code is None
    assert await expiries(db, session_id) == 0


async def _queue_drained(settings: Any) -> bool:
    import asyncio

    import pika

    def depth() -> int:
        conn = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        try:
            ch = conn.channel()
            total = 0
            for q in ("browse", "expiry"):
                total += ch.queue_declare(settings.queue(q), passive=True).method.message_count
            return total
        finally:
            conn.close()

    return await asyncio.to_thread(depth) == 0


async def test_result_is_only_readable_by_its_owner(
    client: SessionsClient, erin: NewTaskBrowses, site: FixtureSite
) -> None:
    job = await erin.enqueue(site.url("/public"))
    result = await client.wait_result(job, owner_id="erin", timeout=RESULT)
    assert result.ok
    with pytest.raises(Exception) as err:
        await client.wait_result(job, owner_id="mallory", timeout=timedelta(seconds=1))
    assert getattr(err.value, "code", "") == "RESULT_TIMEOUT"


async def test_session_storage_and_indexeddb_are_restored(
    browse_worker: WorkerProcess,
    client: SessionsClient,
    site: FixtureSite,
    login_state: LoginState,
) -> None:
    paths = ("/app-session-storage", "/app-indexeddb")

    async def import_and_browse(state: dict[str, Any], label: str) -> list[BrowseResult]:
        created = await import_on_site(client, site, "alice", state, label=label)
        return [
            await browse_in_new_task(
                client, "alice", created["session_id"], site.url(path), timeout=RESULT
            )
            for path in paths
        ]

    state = await login_state("alice", indexed_db=True, session_storage=True)
    origin = next(o for o in state["origins"] if o["origin"] == site.base_url)
    assert origin.get("indexedDB") and origin.get("sessionStorage")
    for path, result in zip(
        paths, await import_and_browse(state, "alice (all storage)"), strict=True
    ):
        assert result.ok, (path, result.error_message)
        assert "logged in as alice" in (result.text or "")
    # Without them, the same pages are logged out: the restore is what makes them work.
    origin.pop("sessionStorage")
    origin.pop("indexedDB")
    for path, result in zip(
        paths, await import_and_browse(state, "alice (no storage)"), strict=True
    ):
        assert result.error_code == "AUTH_SESSION_EXPIRED", path


async def test_canary_secret_never_in_logs_or_plain_columns(
    browse_worker: WorkerProcess,
    client: SessionsClient,
    site: FixtureSite,
    login_state: LoginState,
    database_url: str,
) -> None:
    import asyncio

    canary = f"CANARY{secrets.token_hex(8)}"
    state = await login_state("alice")
    host = site.host
    state["cookies"].append(
        {
            "name": "canary",
            "value": canary,
            "domain": host,
            "path": "/",
            "expires": -1,
            "httpOnly": True,
            "secure": False,
            "sameSite": "Lax",
        }
    )
    origin = next(o for o in state["origins"] if o["origin"] == site.base_url)
    origin["localStorage"].append({"name": "canary", "value": canary})
    created = await import_on_site(
        client, site, "alice", state, label="canary", login_pattern=False
    )
    result = await browse_in_new_task(
        client,
        "alice",
        created["session_id"],
        site.url("/app"),
        options=BrowseOptions(extract_html=True),
        timeout=RESULT,
    )
    assert result.ok
    assert canary not in json.dumps(result.to_dict())
    assert canary not in browse_worker.log()
    dump = await asyncio.to_thread(
        __import__("subprocess").run,
        ["pg_dump", database_url],
        capture_output=True,
        check=True,
    )
    assert canary.encode() not in dump.stdout


async def test_import_keeps_only_the_sessions_site(
    browse_worker: WorkerProcess,
    client: SessionsClient,
    site: FixtureSite,
    login_state: LoginState,
    worker_settings: Any,
) -> None:
    state = await login_state("alice")
    state["cookies"].append(
        {"name": "foreign", "value": "x", "domain": ".elsewhere.example", "path": "/"}
    )
    state["origins"].append(
        {"origin": "https://elsewhere.example", "localStorage": [{"name": "k", "value": "v"}]}
    )
    created = await import_on_site(
        client, site, "alice", state, label="scoped", login_pattern=False
    )
    store = store_for(worker_settings)
    stored = await load_state(store, client.db, created["session_id"], "alice", actor="alice")
    assert {c["domain"] for c in stored["cookies"]} == {"127.0.0.1"}
    assert [o["origin"] for o in stored["origins"]] == [site.base_url]
