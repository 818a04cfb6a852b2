"""``make faults``: inject faults into a real system under load and count what was lost.

Everything runs against real processes: a private Postgres and a private RabbitMQ started
here on free ports (so stopping them never disturbs anything else on the machine), real
``browser-sessions worker`` processes with Chromium, the fixture site, and producers from
the Python API. Each scenario sends jobs, injects one fault, waits (bounded) for every job
to end, and counts from the tables:

- *lost*: a job with no ``browse_results`` row by the scenario's deadline (or a task that
  never got its expiry comment);
- *duplicated*: more than one result for a job, or more than one comment for a task;
- *recovery*: seconds from the end of the fault to the first result stored after it;
- *shutdown*: seconds from a SIGTERM to the worker's exit.

It prints a table and a last line of JSON (``scenarios``, ``jobs``, ``lost``,
``duplicated``, ``shutdown_s_max``, ...); the exit status is 0 only if nothing was lost or
duplicated and every scenario ran. The scenarios that need no service restart are also run
by the test suite (``tests/integration/test_faults.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import queue
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pika

from producers.api import SessionsClient
from producers.enqueue import Enqueuer
from schema.enums import CaptureState
from schema.errors import BrowserSessionsError
from schema.jobs import BrowseJob, BrowseOptions, ExpireJob
from schema.settings import Settings
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess, free_port, run_worker
from workers.dev.scratch import ScratchSystem

DEADLINE_S = 150.0  # every scenario ends within this, whatever happens
SLOW_MS = 3000  # a page that keeps a job in flight long enough to hit it mid-job


@dataclass
class Row:
    """One scenario's counts."""

    scenario: str
    sent: int = 0
    ok: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    lost: int = 0
    duplicated: int = 0
    recovery_s: float | None = None
    shutdown_s: float | None = None
    note: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failed"] = dict(self.failed)
        return data


@dataclass
class Rig:
    """What a scenario needs: settings for workers and producers, the fixture site, a
    directory for logs, and (for ``make faults`` only) the private servers to stop."""

    settings: Settings
    site_url: Callable[[str], str]
    workdir: Path
    postgres: Any = None  # PrivatePostgres
    rabbit: Any = None  # PrivateRabbit
    _workers: int = 0
    _sessions: dict[str, str] = field(default_factory=dict)

    def worker_settings(self, **changes: Any) -> Settings:
        return dataclasses.replace(
            self.settings,
            metrics_port=free_port(),
            health_port=free_port(),
            liveview_port=free_port(),
            **changes,
        )

    @contextlib.contextmanager
    def worker(
        self, queues: Sequence[str] = ("browse", "expiry"), *, processes: int = 1, **changes: Any
    ) -> Iterator[WorkerProcess]:
        """A real ``browser-sessions worker``, ready on entry, stopped on exit."""
        self._workers += 1
        log_path = self.workdir / f"worker-{self._workers}.log"
        settings = self.worker_settings(**changes)
        with run_worker(settings, list(queues), log_path, worker_processes=processes) as worker:
            yield worker

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[SessionsClient]:
        async with SessionsClient.open(self.settings) as client:
            yield client

    def load(self, client: SessionsClient, owner: str, session_id: str) -> Load:
        """Browse jobs for ``owner``'s session, counted in this rig's database."""
        return Load(client, owner, session_id, self.settings.database_url)

    async def session(self, client: SessionsClient, owner: str) -> str:
        """An active session for ``owner`` (an empty state: the fixture's public pages are
        "logged in" for it; the login URL pattern still decides expiry). Imported once per
        owner, while a browse worker runs."""
        if owner in self._sessions:
            return self._sessions[owner]
        created = await client.import_session(
            owner_id=owner,
            label=f"faults {owner}",
            start_url=self.site_url("/public"),
            state=b'{"cookies": [], "origins": []}',
            login_url_pattern=self.site_url("/login") + "**",
        )
        self._sessions[owner] = str(created["session_id"])
        return self._sessions[owner]


def task_id() -> str:
    return f"task-faults-{secrets.token_hex(5)}"


class Load:
    """Browse jobs of one scenario: enqueue them, then account for them from the tables."""

    def __init__(self, client: SessionsClient, owner: str, session_id: str, db_url: str) -> None:
        self.client = client
        self.owner = owner
        self.session_id = session_id
        self.db_url = db_url  # where the results and audit rows are counted
        self.jobs: list[str] = []
        self.refused: collections.Counter[str] = collections.Counter()

    async def send(self, url: str, count: int = 1, *, every_s: float = 0.0) -> None:
        for i in range(count):
            if i and every_s:
                await asyncio.sleep(every_s)
            try:
                task = await self.client.add_task(task_id(), owner_id=self.owner)
                self.jobs.append(
                    await self.client.enqueue_browse(
                        task_id=task["task_id"],
                        owner_id=self.owner,
                        session_id=self.session_id,
                        url=url,
                        options=BrowseOptions(timeout_s=20),
                    )
                )
            except BrowserSessionsError as err:  # refused at enqueue: the caller knows
                self.refused[err.code] += 1

    async def results(self) -> dict[str, asyncpg.Record]:
        return await _fetch_results(self.db_url, self.jobs)

    async def wait(self, *, deadline: float) -> dict[str, asyncpg.Record]:
        """Until every job has a result or the deadline passes (a database outage is
        waited out)."""
        found: dict[str, asyncpg.Record] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                found = await self.results()
                if len(found) == len(self.jobs):
                    break
            await asyncio.sleep(0.25)
        return found

    async def executions(self) -> int:
        """Decrypt audit rows of these jobs: one per run of a job (a rerun adds one)."""
        conn = await asyncpg.connect(self.db_url)
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE action = 'decrypt' AND request_id = ANY($1)",
                self.jobs,
            )
        finally:
            await conn.close()
        return int(count)

    async def row(self, name: str, *, deadline: float, fault_end: float | None = None) -> Row:
        """The scenario's counts once every job has ended (or at ``deadline``); recovery is
        timed from ``fault_end`` (default: now, the fault has just ended)."""
        fault_end = time.time() if fault_end is None else fault_end
        results = await self.wait(deadline=deadline)
        row = Row(name, sent=len(self.jobs) + sum(self.refused.values()))
        row.failed.update({f"refused:{k}": v for k, v in self.refused.items()})
        for record in results.values():
            if record["outcome"] == "ok":
                row.ok += 1
            else:
                row.failed[record["error_code"]] += 1
        row.lost = len(self.jobs) - len(results)
        row.duplicated = sum(1 for r in results.values() if r["copies"] > 1)
        after = [r["at"] for r in results.values() if r["at"] >= fault_end]
        row.recovery_s = round(min(after) - fault_end, 2) if after else None
        return row


async def _fetch_results(db_url: str, jobs: Sequence[str]) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(db_url, timeout=5)
    try:
        rows = await conn.fetch(
            """SELECT job_id, min(outcome) AS outcome, min(error_code) AS error_code,
                      max(attempts) AS attempts, count(*) AS copies,
                      extract(epoch FROM min(created_at))::float8 AS at
               FROM browse_results WHERE job_id = ANY($1) GROUP BY job_id""",
            list(jobs),
        )
    finally:
        await conn.close()
    return {r["job_id"]: r for r in rows}


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def slow_load(rig: Rig, client: SessionsClient, owner: str, jobs: int, busy: int) -> Load:
    """``jobs`` slow jobs for ``owner``'s session; returns once ``busy`` of them have been
    decrypted (they are navigating: a fault now hits them mid-job)."""
    load = rig.load(client, owner, await rig.session(client, owner))
    await load.send(rig.site_url(f"/slow?ms={SLOW_MS}"), jobs)

    async def started() -> bool:
        return await load.executions() >= busy

    await wait_until(started, timeout=60, what=f"{busy} jobs in flight")
    return load


def retries_by_code(worker: WorkerProcess) -> collections.Counter[str]:
    """``job_finished`` lines with ``outcome: retry``, by error code, from a worker's log."""
    found: collections.Counter[str] = collections.Counter()
    for line in worker.log().splitlines():
        if '"job_finished"' in line and '"retry"' in line:
            with contextlib.suppress(ValueError):
                found[json.loads(line).get("error_code") or "?"] += 1
    return found


# -- scenarios: each returns its row; none takes longer than DEADLINE_S ---------------------


async def actor_kill9(rig: Rig, *, processes: int = 2) -> Row:
    """kill -9 of one actor process (of ``processes``) with jobs in flight: dramatiq stops
    the others after their jobs, the supervisor starts it again, RabbitMQ redelivers the
    killed process's jobs."""
    deadline = time.monotonic() + DEADLINE_S
    with rig.worker(processes=processes, browsers=1, contexts_per_browser=2) as worker:
        worker.wait_ready(processes)
        async with rig.client() as client:
            load = await slow_load(rig, client, "faults-kill", jobs=8, busy=3)
            os.kill(worker.actor_pids()[0], signal.SIGKILL)
            row = await load.row("kill -9 actor process", deadline=deadline)
        row.note = f"restarts: {max(worker.ready_count() - processes, 0) // processes}"
    return row


async def chromium_kill9(rig: Rig) -> Row:
    """kill -9 of the pooled Chromium with jobs in flight: ``BROWSER_CRASHED``, retried on
    a fresh browser."""
    deadline = time.monotonic() + DEADLINE_S
    with rig.worker(browsers=1, contexts_per_browser=2) as worker:
        async with rig.client() as client:
            load = await slow_load(rig, client, "faults-chromium", jobs=4, busy=2)
            for pid in worker.chromium_pids():
                os.kill(pid, signal.SIGKILL)
            row = await load.row("kill -9 Chromium", deadline=deadline)
        retried = retries_by_code(worker)
    row.note = "retried: " + (", ".join(f"{k}x{v}" for k, v in retried.items()) or "none")
    return row


SHARED_OWNER = "faults-shared"  # the SIGTERM and backlog scenarios share one session


async def _drain_after_stop(rig: Rig, name: str, *, group: bool) -> Row:
    deadline = time.monotonic() + DEADLINE_S
    async with rig.client() as client:
        with rig.worker(browsers=2, contexts_per_browser=2) as worker:
            load = await slow_load(rig, client, SHARED_OWNER, jobs=4, busy=4)
            shutdown = await asyncio.to_thread(worker.stop, group=group, timeout=60)
            fault_end = time.time()
            drained = await load.results()
        if len(drained) < len(load.jobs):
            # Whatever did not finish must still be queued: a new worker finishes it.
            with rig.worker():
                row = await load.row(name, deadline=deadline, fault_end=fault_end)
        else:
            row = await load.row(name, deadline=deadline, fault_end=fault_end)
    row.shutdown_s = round(shutdown, 2)
    first_try = sum(1 for r in drained.values() if r["attempts"] == 1 and r["outcome"] == "ok")
    row.note = f"drained in flight: {first_try}/4"
    return row


async def sigterm_main(rig: Rig) -> Row:
    """SIGTERM to the worker's main pid with 4 jobs in flight: they finish, then it exits."""
    return await _drain_after_stop(rig, "SIGTERM main pid", group=False)


async def sigterm_group(rig: Rig) -> Row:
    """SIGTERM to the worker's whole process group: the same drain as the main pid."""
    return await _drain_after_stop(rig, "SIGTERM process group", group=True)


async def idle_exit(rig: Rig) -> Row:
    """An idle worker on every queue exits promptly on SIGTERM to its pid and its group."""
    row = Row("idle exit, all queues")
    times = []
    for group in (False, True):
        with rig.worker(("browse", "capture", "expiry")) as worker:
            times.append(await asyncio.to_thread(worker.stop, group=group, timeout=60))
    row.shutdown_s = round(max(times), 2)
    row.note = f"main pid {times[0]:.1f}s, group {times[1]:.1f}s"
    return row


async def _session_with_worker(rig: Rig, client: SessionsClient, owner: str) -> str:
    """The owner's session, with a short-lived worker to import it if there is none yet."""
    if owner in rig._sessions:
        return rig._sessions[owner]
    with rig.worker(browsers=1, contexts_per_browser=1):
        return await rig.session(client, owner)


async def backlog_restart(rig: Rig) -> Row:
    """Jobs waiting while no worker runs; a worker starting on that backlog runs every one
    on its first attempt (no job fails because the worker was not ready yet)."""
    deadline = time.monotonic() + DEADLINE_S
    async with rig.client() as client:
        session_id = await _session_with_worker(rig, client, SHARED_OWNER)
        load = rig.load(client, SHARED_OWNER, session_id)
        await load.send(rig.site_url("/public"), 12)
        fault_end = time.time()
        with rig.worker(browsers=1, contexts_per_browser=2) as worker:
            row = await load.row("restart with a backlog", deadline=deadline, fault_end=fault_end)
        retried = retries_by_code(worker)  # attempts that failed, of any kind
    row.note = "retried: " + (", ".join(f"{k}x{v}" for k, v in retried.items()) or "0")
    return row


async def poison(rig: Rig) -> Row:
    """Non-JSON, malformed and oversized messages: dead-lettered, never run; the worker
    stays up and the next job runs."""
    deadline = time.monotonic() + DEADLINE_S
    row = Row("poison messages")
    queue = rig.settings.queue("browse")
    with rig.worker(browsers=1, contexts_per_browser=1) as worker:
        pids = worker.actor_pids()
        async with rig.client() as client:
            session_id = await rig.session(client, "faults-poison")
            before = await asyncio.to_thread(_queue_depth, rig.settings.amqp_url, f"{queue}.XQ")
            oversized = BrowseJob(
                job_id=f"job_{secrets.token_hex(6)}",
                task_id=task_id(),
                owner_id="faults-poison",
                session_id=session_id,
                url=rig.site_url("/public?pad=" + "x" * (5 * 1024 * 1024)),
            )
            await asyncio.to_thread(
                _publish_raw,
                rig.settings.amqp_url,
                queue,
                [b"\xff not json {", _dramatiq_body(queue, "browse", {"bad": 1})],
            )
            enqueuer = Enqueuer(settings=rig.settings)
            try:
                await enqueuer.send_async("browse", oversized.to_message())
            finally:
                enqueuer.close()
            row.sent = 4  # three poison messages and one good job after them

            async def dead_lettered() -> bool:
                depth = await asyncio.to_thread(_queue_depth, rig.settings.amqp_url, f"{queue}.XQ")
                return depth - before >= 3

            await wait_until(dead_lettered, timeout=60, what="3 dead-lettered messages")
            row.failed["DEAD_LETTERED"] = 3
            load = rig.load(client, "faults-poison", session_id)
            await load.send(rig.site_url("/public"))
            after = await load.row("poison", deadline=deadline)
            ran = await _fetch_results(rig.settings.database_url, [oversized.job_id])
        row.ok = after.ok
        row.lost = after.lost
        alive = worker.actor_pids() == pids
    row.note = (
        f"next job ok: {after.ok == 1}; worker kept its processes: {alive}; "
        f"oversized ran: {bool(ran)}"
    )
    if ran or not alive:
        row.error = "a poison message ran or took a process down"
    return row


async def expiry_kill9(rig: Rig) -> Row:
    """Expiry jobs for 6 tasks of one session; the actor process is killed while they are
    inside their transactions (held on a row lock); after the restart, exactly one comment
    per task and one ``expire`` audit row."""
    deadline = time.monotonic() + DEADLINE_S
    row = Row("expiry, kill -9 mid-job")
    with rig.worker() as worker:
        async with rig.client() as client:
            session_id = await rig.session(client, "faults-expiry")
        tasks = [task_id() for _ in range(6)]
        conn = await asyncpg.connect(rig.settings.database_url)
        try:
            for task in tasks:
                await conn.execute(
                    "INSERT INTO tasks (id, owner_id) VALUES ($1, 'faults-expiry')", task
                )
            holder = conn.transaction()
            await holder.start()
            await conn.execute(
                "SELECT 1 FROM browser_sessions WHERE id = $1 FOR UPDATE", session_id
            )
            enqueuer = Enqueuer(settings=rig.settings)
            try:
                for task in tasks:
                    job = ExpireJob(session_id=session_id, task_id=task, job_id=f"job_{task}")
                    await enqueuer.send_async("expire", job.to_message())
            finally:
                enqueuer.close()

            async def blocked() -> bool:
                waiting = await conn.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                       WHERE datname = current_database() AND wait_event_type = 'Lock'"""
                )
                return bool(waiting)

            await wait_until(blocked, timeout=60, what="expiry jobs inside their transaction")
            pids = worker.actor_pids()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            fault_end = time.time()
            await holder.rollback()
            row.sent = len(tasks)
            counts: dict[str, int] = {}
            while time.monotonic() < deadline:
                rows = await conn.fetch(
                    """SELECT task_id, count(*) AS n,
                              extract(epoch FROM min(created_at))::float8 AS at
                       FROM task_comments WHERE task_id = ANY($1) GROUP BY task_id""",
                    tasks,
                )
                counts = {r["task_id"]: r["n"] for r in rows}
                if len(counts) == len(tasks):
                    row.recovery_s = round(min(r["at"] for r in rows) - fault_end, 2)
                    break
                await asyncio.sleep(0.25)
            expires = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE session_id = $1 AND action = 'expire'",
                session_id,
            )
        finally:
            await conn.close()
        restarts = worker.ready_count() - 1
    row.ok = sum(1 for n in counts.values() if n == 1)
    row.duplicated = sum(1 for n in counts.values() if n > 1) + max(int(expires) - 1, 0)
    row.lost = len(tasks) - len(counts)
    row.note = f"expire audit rows: {expires}; killed {len(pids)} process, restarts: {restarts}"
    return row


async def rabbitmq_restart(rig: Rig) -> Row:
    """RabbitMQ stopped for 5 s while producers send jobs (their enqueues wait it out) and
    the worker runs them (it reconnects; unacknowledged jobs are redelivered)."""
    return await _service_outage(
        rig, "RabbitMQ stopped 5 s", rig.rabbit, down_s=5.0, send_every_s=0.2
    )


async def postgres_restart(rig: Rig) -> Row:
    """Postgres stopped for 10 s while the worker works through 60 jobs: every job that
    meets the outage waits it out on the infrastructure retry budget."""
    return await _service_outage(
        rig, "Postgres stopped 10 s", rig.postgres, down_s=10.0, send_every_s=0.0
    )


async def capture_postgres_restart(rig: Rig) -> Row:
    """Postgres stopped for 10 s while a login window is open: the window stays open through
    the outage, and a Save after it stores the session."""
    row = Row("Postgres stopped 10 s, login open", sent=1)
    owner = f"faults-{secrets.token_hex(3)}"
    with rig.worker(("capture",)):
        async with rig.client() as client:
            added = await client.add_session(
                owner_id=owner,
                label="faults login",
                start_url=rig.site_url("/public"),
                login_url_pattern=rig.site_url("/login") + "**",
            )
            capture_id = added["capture_id"]
            opened = await client.wait_capture(
                capture_id, states=(CaptureState.OPEN,), final_only=False
            )
            if opened.state is not CaptureState.OPEN:
                row.error = f"the login window never opened: {opened.state.value}"
                return row
        await asyncio.to_thread(rig.postgres.stop)
        await asyncio.sleep(10.0)
        await asyncio.to_thread(rig.postgres.start)
        fault_end = time.monotonic()
        async with rig.client() as client:  # a new pool: the old one's connections died
            survived = await client.capture_status(capture_id, actor_id=owner)
            if survived.state is CaptureState.OPEN:
                await client.save_capture(capture_id, actor_id=owner)
            final = await client.wait_capture(capture_id)
            row.recovery_s = round(time.monotonic() - fault_end, 2)
    if final.state is CaptureState.SAVED:
        row.ok = 1
    elif final.state.is_final:
        row.failed[final.state.value] += 1
    else:
        row.lost = 1  # no final state: the user's dialog would wait for ever
    row.note = f"after the outage the window was {survived.state.value}"
    return row


async def _service_outage(
    rig: Rig, name: str, server: Any, *, down_s: float, send_every_s: float
) -> Row:
    deadline = time.monotonic() + DEADLINE_S
    with rig.worker(browsers=1, contexts_per_browser=2):
        async with rig.client() as client:
            owner = f"faults-{secrets.token_hex(3)}"
            load = rig.load(client, owner, await rig.session(client, owner))
            sending = asyncio.create_task(
                load.send(rig.site_url("/slow?ms=300"), 60, every_s=send_every_s)
            )
            if not send_every_s:
                await sending  # all queued before the outage; the worker meets it mid-run
            await asyncio.sleep(2.0)  # under load: jobs queued and running
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(down_s)  # the outage itself
            await asyncio.to_thread(server.start)
            fault_end = time.time()
            await sending
            row = await load.row(name, deadline=deadline, fault_end=fault_end)
    return row


def _publish_raw(amqp_url: str, queue: str, bodies: Sequence[bytes]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def _dramatiq_body(queue: str, actor: str, payload: dict[str, Any]) -> bytes:
    from dramatiq import Message

    return Message(
        queue_name=queue, actor_name=actor, args=(payload,), kwargs={}, options={}
    ).encode()


def _queue_depth(amqp_url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


SCENARIOS: dict[str, Callable[[Rig], Awaitable[Row]]] = {
    "actor_kill9": actor_kill9,
    "chromium_kill9": chromium_kill9,
    "rabbitmq_restart": rabbitmq_restart,
    "postgres_restart": postgres_restart,
    "capture_postgres_restart": capture_postgres_restart,
    "backlog_restart": backlog_restart,
    "sigterm_main": sigterm_main,
    "sigterm_group": sigterm_group,
    "idle_exit": idle_exit,
    "poison": poison,
    "expiry_kill9": expiry_kill9,
}


# -- the make target ------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    head = ("scenario", "sent", "ok", "failed by code", "lost", "dup", "recovery s", "shutdown s")
    lines = [head]
    for r in rows:
        failed = ", ".join(f"{k} {v}" for k, v in sorted(r.failed.items())) or "-"
        lines.append(
            (
                r.scenario,
                str(r.sent),
                str(r.ok),
                failed,
                str(r.lost),
                str(r.duplicated),
                "-" if r.recovery_s is None else f"{r.recovery_s:.1f}",
                "-" if r.shutdown_s is None else f"{r.shutdown_s:.1f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    for r in rows:
        if r.note or r.error:
            out.append(f"  {r.scenario}: {r.note}{'; ERROR ' + r.error if r.error else ''}")
    return "\n".join(out)


def summary(rows: Sequence[Row], seconds: float) -> dict[str, Any]:
    shutdowns = [r.shutdown_s for r in rows if r.shutdown_s is not None]
    return {
        "scenarios": len(rows),
        "jobs": sum(r.sent for r in rows),
        "ok": sum(r.ok for r in rows),
        "lost": sum(r.lost for r in rows),
        "duplicated": sum(r.duplicated for r in rows),
        "errors": sum(1 for r in rows if r.error),
        "shutdown_s_max": max(shutdowns) if shutdowns else None,
        "recovery_s_max": max((r.recovery_s or 0.0) for r in rows),
        "seconds": round(seconds, 1),
    }


@contextlib.contextmanager
def site_in_thread() -> Iterator[FixtureSite]:
    """The fixture site on an event loop of its own: the harness blocks (waiting for a
    worker to stop, for a server to start) while jobs still load its pages."""
    import threading

    ready: queue.Queue[FixtureSite | BaseException] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        try:
            async with FixtureSite.start() as site:
                ready.put(site)
                await asyncio.to_thread(stop.wait)
        except BaseException as exc:
            ready.put(exc)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    got = ready.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got
    finally:
        stop.set()
        thread.join(timeout=10)


async def _run(names: Sequence[str], out: Any) -> int:
    from schema.migrate import migrate
    from workers.browser.chromium import find_chromium
    from workers.dev.services import PrivatePostgres, PrivateRabbit

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="browser-sessions-faults-"))
    (workdir / "keys").mkdir(mode=0o700)
    rows: list[Row] = []
    with PrivatePostgres.running() as postgres, PrivateRabbit.running() as rabbit:
        out.write(
            f"private Postgres on :{postgres.port}, RabbitMQ on :{rabbit.port}; logs in {workdir}\n"
        )
        admin = await asyncpg.connect(postgres.url)
        try:
            await admin.execute("CREATE DATABASE browser_sessions")
        finally:
            await admin.close()
        db_url = postgres.url.rsplit("/", 1)[0] + "/browser_sessions"
        await migrate(db_url)
        with site_in_thread() as site:
            system = ScratchSystem(db_url, rabbit.url, "faults.", workdir / "keys")
            settings = system.settings(
                chromium_path=find_chromium(os.environ.get("BROWSER_SESSIONS_CHROMIUM_PATH", "")),
                allow_private_hosts=frozenset({f"127.0.0.1:{site.port}"}),
            )
            rig = Rig(
                settings=settings,
                site_url=site.url,
                workdir=workdir,
                postgres=postgres,
                rabbit=rabbit,
            )
            for name in names:
                out.write(f"- {name} ...\n")
                out.flush()
                began = time.monotonic()
                try:
                    row = await asyncio.wait_for(SCENARIOS[name](rig), DEADLINE_S + 90)
                except Exception as exc:
                    row = Row(name, error=f"{type(exc).__name__}: {exc}"[:300])
                rows.append(row)
                out.write(f"  done in {time.monotonic() - began:.1f} s\n")
    out.write(table(rows) + "\n")
    result = summary(rows, time.monotonic() - started)
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 and not result["errors"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from schema.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m workers.dev.faults", description=__doc__)
    parser.add_argument("scenarios", nargs="*", help=f"some of: {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    configure_logging(level="ERROR", fmt="json")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # the outages are on purpose
    return asyncio.run(_run(args.scenarios or list(SCENARIOS), sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
