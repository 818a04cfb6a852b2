"""The cost of guarded write-back per browse job (``make bench-writeback``).

The same N authenticated jobs through the whole system (producers -> RabbitMQ -> a real
browse worker -> Postgres), three ways, each on a worker and database of its own, run side
by side and interleaved in rounds: write-back off
(``BROWSER_SESSIONS_WRITE_BACK=false``), on with a site that changes nothing (each job reads
the context's state back and compares: ``unchanged``), and on with a site that rotates its
session cookie on every request (each job saves a new encrypted version, and the session's
jobs run one at a time under its lease). Prints a table and one JSON line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from producers.api import SessionsClient
from workers.browser.chromium import find_chromium
from workers.dev.bench.browse import (
    PAGE,
    USER,
    BenchConfig,
    BenchError,
    Job,
    PathResult,
    Sample,
    _split,
    bench_main,
    bench_parser,
    check_text,
    import_bench_session,
    launch,
    log_in,
    merge,
    run_path,
    system_settings,
)
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import run_worker

MODES = ("off", "unchanged", "rotating")


@contextlib.asynccontextmanager
async def _system(
    config: BenchConfig, site: FixtureSite, state: Any, mode: str, log_dir: Path
) -> AsyncIterator[Job]:
    """A worker and database of its own for ``mode``; yields one browse job."""
    url = site.url(PAGE)
    async with system_settings(config, site) as base:
        settings = dataclasses.replace(base, write_back=mode != "off", probe_scheduler=False)
        queues = ["browse", "expiry"]
        with run_worker(settings, queues, log_dir / f"{mode}.log", threads=config.worker_threads):
            async with SessionsClient.open(settings) as client:
                session_id = await import_bench_session(client, site, state)

                async def job(_i: int) -> Sample:
                    started = time.monotonic()
                    task_id = f"bench-{secrets.token_hex(6)}"
                    await client.add_task(task_id, owner_id=USER)
                    result = await client.browse(
                        task_id=task_id,
                        owner_id=USER,
                        session_id=session_id,
                        url=url,
                        timeout=config.job_timeout,
                    )
                    if not result.ok:
                        raise BenchError(f"{mode} job failed: {result.error_code}")
                    return Sample(time.monotonic() - started, check_text(result.text or "", mode))

                yield job


async def run_writeback_bench(config: BenchConfig) -> dict[str, Any]:
    """The three modes side by side (one worker each), interleaved in rounds so that outside
    load hits them alike. The site rotates its cookie only while the rotating mode runs
    (sessions are imported before any rotation)."""
    chromium = find_chromium(config.base.chromium_path)
    password = secrets.token_urlsafe(12)
    log_dir = Path(tempfile.mkdtemp(prefix="bs-bench-wb-"))
    try:
        async with (
            FixtureSite.start() as site,
            async_playwright() as playwright,
            contextlib.AsyncExitStack() as stack,
        ):
            site.add_user(USER, password)
            browser = await launch(playwright, chromium)
            try:  # a login of its own per mode: rotating one kills the others' cookies
                states = {mode: await log_in(browser, site, password) for mode in MODES}
            finally:
                await browser.close()
            jobs = {
                mode: await stack.enter_async_context(
                    _system(config, site, states[mode], mode, log_dir)
                )
                for mode in MODES
            }
            rounds: dict[str, list[PathResult]] = {mode: [] for mode in MODES}
            for count in [config.warmup, *_split(config.jobs, config.rounds)]:
                for mode in MODES:
                    site.set_switches(rotate_cookie=mode == "rotating")
                    result = await run_path(mode, count, config.concurrency, jobs[mode])
                    rounds[mode].append(result)
            results = {mode: merge(mode, found[1:]) for mode, found in rounds.items()}
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    off = results["off"]
    out: dict[str, Any] = {"jobs": config.jobs, "concurrency": config.concurrency}
    for mode, result in results.items():
        out[f"{mode}_jobs_per_s"] = round(result.jobs_per_s, 2)
        out[f"{mode}_p50_ms"] = round(result.latency_ms(50), 1)
    out["writeback_ratio_unchanged"] = round(results["unchanged"].jobs_per_s / off.jobs_per_s, 3)
    out["writeback_ratio_rotating"] = round(results["rotating"].jobs_per_s / off.jobs_per_s, 3)
    out["writeback_p50_cost_ms"] = round(
        results["unchanged"].latency_ms(50) - off.latency_ms(50), 1
    )
    return out


def render(rep: dict[str, Any]) -> str:
    """Each mode's throughput and median, then write-back's cost against ``off``."""
    lines = [
        f"{mode:>10}: {rep[f'{mode}_jobs_per_s']:6.2f} jobs/s  p50 {rep[f'{mode}_p50_ms']} ms"
        for mode in MODES
    ]
    lines.append(
        f"write-back vs off: {rep['writeback_ratio_unchanged']:.2f}x (site changes nothing), "
        f"{rep['writeback_ratio_rotating']:.2f}x (site rotates its cookie: saved every job, "
        "one job at a time per session)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(
        "python -m workers.dev.bench.writeback",
        __doc__,
        dict.fromkeys(("jobs", "concurrency", "warmup", "rounds"), ""),
    )
    return bench_main(parser, argv, run_writeback_bench, render)


if __name__ == "__main__":
    sys.exit(main())
