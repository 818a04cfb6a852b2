"""The fault scenarios of ``make faults`` that need no service restart, against the real
services of this run: kill -9 of an actor process and of Chromium mid-job, SIGTERM to the
main pid and to the process group with jobs in flight, an idle exit on every queue, poison
messages, expiry killed mid-job, a restart with a backlog. Plus the producers' outage
mapping and the supervisor's restart rules."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from producers.api import SessionsClient
from producers.enqueue import Enqueuer
from schema.errors import ServiceUnavailable
from schema.settings import Settings
from workers.dev import faults
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import free_port
from workers.dev.scratch import scratch_queues

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def threaded_site() -> Iterator[FixtureSite]:
    """The fixture site on its own loop: these tests block on workers while pages load."""
    with faults.site_in_thread() as site:
        yield site


@pytest.fixture(scope="module")
def rig(
    base_settings: Settings,
    threaded_site: FixtureSite,
    chromium_path: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[faults.Rig]:
    """Queues of their own: the session's shared workers must not take these jobs."""
    settings = dataclasses.replace(
        base_settings,
        chromium_path=chromium_path,
        allow_private_hosts=frozenset({f"127.0.0.1:{threaded_site.port}"}),
        queue_prefix=base_settings.queue_prefix + "faults.",
    )
    with scratch_queues(settings.amqp_url, settings.queue_prefix):
        yield faults.Rig(
            settings=settings,
            site_url=threaded_site.url,
            workdir=tmp_path_factory.mktemp("faults"),
        )


def assert_nothing_lost(row: faults.Row) -> None:
    assert not row.error, row
    assert row.sent > 0 and row.lost == 0 and row.duplicated == 0, row
    assert row.ok == row.sent, row


async def test_kill9_of_an_actor_process_mid_job_loses_nothing(rig: faults.Rig) -> None:
    row = await faults.actor_kill9(rig, processes=1)  # make faults kills one of two
    assert_nothing_lost(row)
    assert row.note == "restarts: 1", row  # the supervisor started dramatiq again


async def test_kill9_of_chromium_mid_job_is_browser_crashed_and_retried(rig: faults.Rig) -> None:
    row = await faults.chromium_kill9(rig)
    assert_nothing_lost(row)
    assert "BROWSER_CRASHED" in row.note and "NAVIGATION_FAILED" not in row.note, row


@pytest.mark.parametrize("group", [False, True], ids=["main-pid", "process-group"])
async def test_sigterm_drains_jobs_in_flight(rig: faults.Rig, group: bool) -> None:
    scenario = faults.sigterm_group if group else faults.sigterm_main
    row = await scenario(rig)
    assert_nothing_lost(row)
    assert row.note == "drained in flight: 4/4", row  # finished on their first attempt
    assert row.shutdown_s is not None and row.shutdown_s < 20, row


async def test_idle_worker_on_every_queue_exits_within_10s(rig: faults.Rig) -> None:
    row = await faults.idle_exit(rig)
    assert row.shutdown_s is not None and row.shutdown_s < 10, row


async def test_poison_messages_are_dead_lettered_and_never_run(rig: faults.Rig) -> None:
    row = await faults.poison(rig)
    assert not row.error, row
    assert row.failed == {"DEAD_LETTERED": 3} and row.ok == 1 and row.sent == 4, row


async def test_expiry_killed_mid_job_comments_once_per_task(rig: faults.Rig) -> None:
    row = await faults.expiry_kill9(rig)
    assert_nothing_lost(row)
    assert row.note.startswith("expire audit rows: 1;"), row


async def test_a_worker_starting_on_a_backlog_runs_every_job_on_its_first_attempt(
    rig: faults.Rig,
) -> None:
    row = await faults.backlog_restart(rig)
    assert_nothing_lost(row)
    assert row.note == "retried: 0", row  # no job spent a retry on a worker not yet ready


async def test_enqueue_with_the_broker_down_is_service_unavailable(
    base_settings: Settings,
) -> None:
    dead = dataclasses.replace(
        base_settings,
        amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
        enqueue_retry=timedelta(seconds=3),
    )
    enqueuer = Enqueuer(settings=dead)
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable, match=r"after ([2-9]|\d\d) attempts"):
            enqueuer.send("expire", {"kind": "expire"})
    finally:
        enqueuer.close()
    # Retried with a backoff until the next wait would pass the budget, then gave up.
    assert 1.0 < time.monotonic() - started < 15


async def test_client_maps_a_database_outage_to_service_unavailable(
    base_settings: Settings,
) -> None:
    async with SessionsClient.open(base_settings) as client:
        await client.db.close()  # as if Postgres went away under the pool
        with pytest.raises(ServiceUnavailable):
            await client.list_sessions("someone")
        with pytest.raises(ServiceUnavailable):
            await client.capture_status("cap_missing", actor_id="someone")


def _supervise(tmp_path: Path, child: str, **policy: float) -> subprocess.CompletedProcess[str]:
    """Run the supervisor on a tiny child program in a process of its own."""
    script = (
        "import sys\n"
        "from workers.runtime.supervisor import RestartPolicy, Supervisor\n"
        f"policy = RestartPolicy(**{policy!r})\n"
        f"argv = [sys.executable, '-c', {child!r}]\n"
        "sys.exit(Supervisor(argv, {}, policy=policy).run())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_supervisor_restarts_a_dead_child_then_gives_up_on_a_crash_loop(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    child = (
        f"import pathlib; p = pathlib.Path({str(counter)!r}); "
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x'); raise SystemExit(7)"
    )
    done = _supervise(
        tmp_path, child, first_backoff_s=0.01, max_backoff_s=0.02, max_quick_failures=3
    )
    assert done.returncode == 7, done.stderr
    assert counter.read_text() == "xxxx"  # the first run and three restarts
    assert (done.stdout + done.stderr).count("worker_restarting") == 3


def test_supervisor_does_not_restart_an_import_error(tmp_path: Path) -> None:
    done = _supervise(tmp_path, "raise SystemExit(2)", first_backoff_s=0.01)
    assert done.returncode == 2
    assert "worker_restarting" not in done.stdout + done.stderr
