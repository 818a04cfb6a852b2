"""Operations against a real worker: its /metrics scrape has every metric the alert rules and
the dashboard use, the counters move with real jobs, the health endpoints answer, and each
finished job writes one JSON summary line with its ids and no secret."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from producers.api import SessionsClient
from producers.enqueue import Enqueuer
from schema.jobs import ExpireJob
from schema.settings import Settings
from tests.integration.conftest import (
    LoginState,
    WorkerProcess,
    free_port,
    run_worker,
    wait_for,
)
from tests.unit.test_deploy_files import dramatiq_sample_names, used_metric_names
from workers.fixture_site import FixtureSite

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SUMMARY_FIELDS = ("job_id", "actor", "task_id", "session_id", "outcome", "error_code")


@pytest.fixture(scope="module")
def expiry_settings(base_settings: Settings) -> Settings:
    return dataclasses.replace(base_settings, metrics_port=free_port(), health_port=free_port())


@pytest.fixture(scope="module")
def expiry_worker(
    expiry_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real ``browser-sessions worker --queues expiry`` with its own metrics port."""
    log_path = tmp_path_factory.mktemp("expiry-worker") / "worker.log"
    with run_worker(expiry_settings, ["expiry"], log_path) as worker:
        yield worker


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


async def test_scrape_has_every_metric_rules_and_dashboard_use(
    expiry_worker: WorkerProcess, expiry_settings: Settings, db: asyncpg.Connection
) -> None:
    session_id, task_id = await expiring_session(db)
    job_id = f"j-{secrets.token_hex(6)}"
    enqueuer = Enqueuer(settings=expiry_settings)
    try:
        await enqueuer.send_async(
            "expire", ExpireJob(session_id=session_id, task_id=task_id, job_id=job_id).to_message()
        )
        # A malformed payload: not retryable, so it errors and is dead-lettered.
        await enqueuer.send_async("expire", {"kind": "expire", "schema_version": 999})
    finally:
        await asyncio.to_thread(enqueuer.close)

    port = expiry_settings.metrics_port

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
    # dramatiq's series that the rules and dashboard use are live here too.
    assert {n for n in used if n.startswith("dramatiq_")} <= dramatiq_sample_names()

    assert value(samples, "browser_sessions_sessions_expired_total") >= 1
    assert (
        value(
            samples,
            "browser_sessions_jobs_total",
            actor="expire",
            outcome="error",
            error_code="INVALID_INPUT",
        )
        >= 1
    )
    assert value(samples, "browser_sessions_job_duration_seconds_count", actor="expire") >= 2
    assert value(samples, "browser_sessions_decrypts_total", result="error") == 0
    # Low cardinality: no label value names a user, session, task or job.
    label_values = {v for _, labels in samples for _, v in labels}
    assert not label_values & {session_id, task_id, job_id, "ops-user"}
    assert all(len(v) < 64 for v in label_values)


async def test_health_endpoints(expiry_worker: WorkerProcess, expiry_settings: Settings) -> None:
    status, body = await get_json(expiry_settings.health_port, "/healthz")
    assert status == 200 and body["status"] == "ok"
    status, body = await get_json(expiry_settings.health_port, "/readyz")
    assert status == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "broker"}  # no browser pool on expiry workers
    assert all(check["ok"] for check in body["checks"].values())


async def test_expire_job_summary_line(
    expiry_worker: WorkerProcess, expiry_settings: Settings, db: asyncpg.Connection
) -> None:
    session_id, task_id = await expiring_session(db)
    job_id = f"j-{secrets.token_hex(6)}"
    enqueuer = Enqueuer(settings=expiry_settings)
    try:
        await enqueuer.send_async(
            "expire", ExpireJob(session_id=session_id, task_id=task_id, job_id=job_id).to_message()
        )
    finally:
        await asyncio.to_thread(enqueuer.close)

    async def logged() -> bool:
        return bool(summary_lines(expiry_worker, job_id))

    await wait_for(logged, timeout=30, what="the job's summary line")
    (line,) = summary_lines(expiry_worker, job_id)
    assert line["actor"] == "expire"
    assert (line["job_id"], line["task_id"], line["session_id"]) == (job_id, task_id, session_id)
    assert line["outcome"] == "ok" and line["error_code"] is None
    assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0
    assert line["message_id"] and line["level"] == "info" and line["timestamp"]


async def test_browse_moves_pool_decrypt_and_delivery_metrics_and_logs_no_secret(
    browse_worker: WorkerProcess,
    worker_settings: Settings,
    client: SessionsClient,
    site: FixtureSite,
    login_state: LoginState,
    tmp_path: Path,
) -> None:
    state = await login_state("erin")
    created = await client.import_session(
        owner_id="erin",
        label="erin's fixture",
        start_url=site.url("/app"),
        state=json.dumps(state).encode(),
        logged_in_selector="#whoami",
        login_url_pattern=site.url("/login") + "**",
    )
    session_id = str(created["session_id"])
    task_id = f"task-{secrets.token_hex(4)}"
    result = await client.browse(
        task_id=task_id, owner_id="erin", session_id=session_id, url=site.url("/app")
    )
    assert result.ok, result.error_message

    samples = await scrape(worker_settings.metrics_port)
    assert value(samples, "browser_sessions_jobs_total", actor="browse", outcome="ok") >= 1
    assert value(samples, "browser_sessions_decrypts_total", result="ok") >= 1
    assert value(samples, "browser_sessions_result_delivery_seconds_count") >= 1
    assert value(samples, "browser_sessions_browser_launches_total") >= 1
    assert value(samples, "browser_sessions_pool_browsers") >= 1
    assert value(samples, "browser_sessions_pool_capacity") == (
        worker_settings.browsers * worker_settings.contexts_per_browser
    )
    status, body = await get_json(worker_settings.health_port, "/readyz")
    assert status == 200 and body["checks"]["browser_pool"]["ok"] is True

    (line,) = summary_lines(browse_worker, result.job_id)
    assert all(field in line for field in SUMMARY_FIELDS)
    assert (line["actor"], line["task_id"], line["session_id"]) == ("browse", task_id, session_id)
    assert line["outcome"] == "ok" and line["duration_ms"] >= 0
    log = browse_worker.log()
    cookie_values = [c["value"] for c in state["cookies"] if len(c["value"]) >= 8]
    assert cookie_values, "the fixture login sets a session cookie"
    for secret in cookie_values:
        assert secret not in log
