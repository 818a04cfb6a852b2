"""Operations against a real worker: its /metrics scrape has every metric the alert rules and
the dashboard use, the counters move with real jobs, the health endpoints answer, and each
finished job writes one JSON summary line with its ids and no secret."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from producers.api import SessionsClient
from producers.enqueue import Enqueuer
from schema.jobs import ExpireJob
from schema.settings import Settings
from tests.support.deploy_files import dramatiq_sample_names, used_metric_names
from tests.support.logins import LoginState
from tests.support.services import AMQP_URL
from tests.support.sessions import import_on_site
from tests.support.waiting import wait_for
from tests.support.workers import own_ports, own_worker_fixtures
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess, free_port
from workers.runtime.health import HealthServer, amqp_check

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SUMMARY_FIELDS = ("job_id", "actor", "task_id", "session_id", "outcome", "error_code")


@pytest.fixture(scope="module")
def ops_settings(worker_settings: Settings) -> Settings:
    """This module's own queues and ports: no other test's worker takes its jobs or ports."""
    return own_ports(worker_settings, queue_prefix=f"{worker_settings.queue_prefix}ops.")


#: A real ``browser-sessions worker --queues browse expiry`` and a client, on those queues.
ops_worker, ops_client = own_worker_fixtures("ops_settings", ["browse", "expiry"])


async def scrape(port: int) -> Samples:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)
        ) as response,
    ):
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def failed_jobs(samples: Samples, actor: str, error_code: str) -> float:
    """How many jobs of ``actor`` failed with ``error_code``."""
    return value(
        samples, "browser_sessions_jobs_total", actor=actor, outcome="error", error_code=error_code
    )


async def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=10)
        ) as response,
    ):
        return response.status, await response.json()


def summary_lines(worker: WorkerProcess, job_id: str) -> list[dict[str, Any]]:
    lines = []
    for line in worker.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "job_finished" and entry.get("job_id") == job_id:
                lines.append(entry)
    return lines


async def expiring_session(db: asyncpg.Connection) -> tuple[str, str]:
    """An active session and a task that uses it, inserted as the orchestrator would."""
    session_id, task_id = f"s-{secrets.token_hex(6)}", f"t-{secrets.token_hex(6)}"
    await db.execute(
        """INSERT INTO browser_sessions (id, owner_id, label, start_url, site, status,
                                         version, enc_nonce, enc_ciphertext)
           VALUES ($1, 'ops-user', 'Ops site', 'https://ops.example/app', 'ops.example',
                   'active', 1, '\\x00', '\\x00')""",
        session_id,
    )
    await db.execute("INSERT INTO tasks (id, owner_id) VALUES ($1, 'ops-user')", task_id)
    return session_id, task_id


async def expire_new_session(
    db: asyncpg.Connection, settings: Settings, *more: dict[str, Any]
) -> tuple[str, str, str]:
    """Send an expire job for a new :func:`expiring_session`, then the ``more`` payloads;
    the session's, the task's and the job's ids."""
    session_id, task_id = await expiring_session(db)
    job_id = f"j-{secrets.token_hex(6)}"
    job = ExpireJob(session_id=session_id, task_id=task_id, job_id=job_id)
    enqueuer = Enqueuer(settings=settings)
    try:
        for payload in (job.to_message(), *more):
            await enqueuer.send_async("expire", payload)
    finally:
        await asyncio.to_thread(enqueuer.close)
    return session_id, task_id, job_id


async def summary_line(worker: WorkerProcess, job_id: str) -> dict[str, Any]:
    """The job's one summary line, once the worker has logged it."""

    async def logged() -> bool:
        return bool(summary_lines(worker, job_id))

    await wait_for(logged, timeout=30, what=f"the summary line of {job_id}")
    (line,) = summary_lines(worker, job_id)
    return line


async def test_scrape_has_every_metric_rules_and_dashboard_use(
    ops_worker: WorkerProcess, ops_settings: Settings, db: asyncpg.Connection
) -> None:
    session_id, task_id, job_id = await expire_new_session(
        db,
        ops_settings,
        # A malformed payload: not retryable, so it errors and is dead-lettered.
        {"kind": "expire", "schema_version": 999},
    )
    port = ops_settings.metrics_port

    async def jobs_counted() -> bool:
        samples = await scrape(port)
        return (
            value(samples, "browser_sessions_jobs_total", actor="expire", outcome="ok") >= 1
            and value(samples, "dramatiq_message_rejects_total", actor_name="expire") >= 1
        )

    await wait_for(jobs_counted, timeout=30, what="both expire jobs in the scrape")
    samples = await scrape(port)
    names = {name for name, _ in samples}

    used = {n for n in used_metric_names() if n.startswith(("browser_sessions_", "dramatiq_"))}
    assert used - names == set()
    assert {n for n in used if n.startswith("dramatiq_")} <= dramatiq_sample_names()

    assert value(samples, "browser_sessions_sessions_expired_total") >= 1
    assert failed_jobs(samples, "expire", "INVALID_INPUT") >= 1
    assert value(samples, "browser_sessions_job_duration_seconds_count", actor="expire") >= 2
    assert value(samples, "browser_sessions_decrypts_total", result="error") == 0
    # Low cardinality: no label value names a user, session, task or job.
    label_values = {v for _, labels in samples for _, v in labels}
    assert not label_values & {session_id, task_id, job_id, "ops-user"}
    assert all(len(v) < 64 for v in label_values)


async def test_health_endpoints(ops_worker: WorkerProcess, ops_settings: Settings) -> None:
    status, body = await get_json(ops_settings.health_port, "/healthz")
    assert status == 200 and body["status"] == "ok"
    status, body = await get_json(ops_settings.health_port, "/readyz")
    assert status == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "broker", "browser_pool"}
    assert all(check["ok"] for check in body["checks"].values())


async def test_expire_job_summary_line(
    ops_worker: WorkerProcess, ops_settings: Settings, db: asyncpg.Connection
) -> None:
    session_id, task_id, job_id = await expire_new_session(db, ops_settings)
    line = await summary_line(ops_worker, job_id)
    assert line["actor"] == "expire"
    assert (line["job_id"], line["task_id"], line["session_id"]) == (job_id, task_id, session_id)
    assert line["outcome"] == "ok" and line["error_code"] is None
    assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0
    assert line["message_id"] and line["level"] == "info" and line["timestamp"]


async def test_browse_moves_pool_decrypt_and_delivery_metrics_and_logs_no_secret(
    ops_worker: WorkerProcess,
    ops_settings: Settings,
    ops_client: SessionsClient,
    site: FixtureSite,
    login_state: LoginState,
) -> None:
    state = await login_state("erin")
    created = await import_on_site(ops_client, site, "erin", state)
    session_id = str(created["session_id"])
    task_id = f"task-{secrets.token_hex(4)}"
    await ops_client.add_task(task_id, owner_id="erin")
    result = await ops_client.browse(
        task_id=task_id, owner_id="erin", session_id=session_id, url=site.url("/app")
    )
    assert result.ok, result.error_message
    denied = await ops_client.browse(
        task_id=task_id,
        owner_id="erin",
        session_id=session_id,
        url="http://169.254.169.254/latest/meta-data/",
    )
    assert denied.error_code == "URL_NOT_ALLOWED"

    async def both_counted() -> bool:
        # A job is counted right after its result is stored, so the scrape may lag a moment.
        samples = await scrape(ops_settings.metrics_port)
        return value(samples, "browser_sessions_jobs_total", actor="browse") >= 2

    await wait_for(both_counted, timeout=10, what="both browse jobs counted")
    samples = await scrape(ops_settings.metrics_port)
    assert value(samples, "browser_sessions_jobs_total", actor="browse", outcome="ok") >= 1
    assert value(samples, "browser_sessions_jobs_total", actor="import_state", outcome="ok") >= 1
    assert value(samples, "browser_sessions_captures_total", state="saved") >= 1  # the import
    assert value(samples, "browser_sessions_decrypts_total", result="ok") >= 1
    assert value(samples, "browser_sessions_guard_refusals_total") >= 1
    assert failed_jobs(samples, "browse", "URL_NOT_ALLOWED") >= 1
    assert value(samples, "browser_sessions_result_delivery_seconds_count") >= 1
    assert value(samples, "browser_sessions_browser_launches_total") >= 1
    assert value(samples, "browser_sessions_pool_browsers") >= 1
    capacity = ops_settings.browsers * ops_settings.contexts_per_browser
    assert value(samples, "browser_sessions_pool_capacity") == capacity
    status, body = await get_json(ops_settings.health_port, "/readyz")
    assert status == 200 and body["checks"]["browser_pool"]["ok"] is True

    line = await summary_line(ops_worker, result.job_id)
    assert all(field in line for field in SUMMARY_FIELDS)
    assert (line["actor"], line["task_id"], line["session_id"]) == ("browse", task_id, session_id)
    assert line["outcome"] == "ok" and line["duration_ms"] >= 0
    log = ops_worker.log()
    cookie_values = [c["value"] for c in state["cookies"] if len(c["value"]) >= 8]
    assert cookie_values, "the fixture login sets a session cookie"
    for secret in cookie_values:
        assert secret not in log


async def test_readiness_reports_each_failing_check() -> None:
    """503 with the failing check named: a closed port, a check that hangs; the live broker
    still answers the AMQP handshake."""
    closed = free_port()

    async def hangs() -> bool:
        await asyncio.sleep(30)
        return True

    checks = {
        "broker": amqp_check(AMQP_URL),
        "down": amqp_check(f"amqp://guest:guest@127.0.0.1:{closed}/%2F"),
        "slow": hangs,
    }
    async with HealthServer(
        port=0, host="127.0.0.1", checks=checks, check_timeout=timedelta(seconds=0.5)
    ) as server:
        status, body = await get_json(server.port, "/readyz")
        assert status == 503 and body["status"] == "not_ready"
        assert body["checks"]["broker"]["ok"] is True
        assert body["checks"]["down"] == {
            "ok": False,
            "ms": body["checks"]["down"]["ms"],
            "error": "ConnectionRefusedError",
        }
        assert body["checks"]["slow"]["error"] == "timeout"
        status, body = await get_json(server.port, "/healthz")
        assert status == 200 and body["status"] == "ok"
