"""The cost of guarded write-back per browse job (``make bench-writeback``).

The same N authenticated jobs through the whole system (producers -> RabbitMQ -> a real
browse worker -> Postgres), three ways, each on a fresh worker and database: write-back off
(``BROWSER_SESSIONS_WRITE_BACK=false``), on with a site that changes nothing (each job reads
the context's state back and compares: ``unchanged``), and on with a site that rotates its
session cookie on every request (each job saves a new encrypted version, and the session's
jobs run one at a time under its lease). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from producers.api import SessionsClient
from schema.settings import Settings
from workers.browser.chromium import find_chromium
from workers.dev.bench.browse import (
    LOGGED_IN_SELECTOR,
    PAGE,
    USER,
    BenchConfig,
    BenchError,
    PathResult,
    Sample,
    check_text,
    launch,
    log_in,
    run_path,
    run_worker,
    system_settings,
)
from workers.dev.fixture_site import FixtureSite

MODES = ("off", "unchanged", "rotating")


async def _run_mode(config: BenchConfig, site: FixtureSite, state: Any, mode: str) -> PathResult:
    site.set_switches(rotate_cookie=False)
    url = site.url(PAGE)
    log_dir = tempfile.mkdtemp(prefix="bs-bench-wb-")
    try:
        async with system_settings(config, site) as base:
            settings = dataclasses.replace(base, write_back=mode != "off", probe_scheduler=False)
            async with (
                run_worker(settings, Path(log_dir) / "worker.log", threads=config.worker_threads),
                SessionsClient.open(settings) as client,
            ):
                created = await client.import_session(
                    owner_id=USER,
                    label="bench fixture",
                    start_url=url,
                    state=json.dumps(state).encode(),
                    logged_in_selector=LOGGED_IN_SELECTOR,
                    login_url_pattern=site.url("/login") + "**",
                )
                session_id = str(created["session_id"])
                site.set_switches(rotate_cookie=mode == "rotating")

                async def job(_i: int) -> Sample:
                    started = time.monotonic()
                    result = await client.browse(
                        task_id=f"bench-{secrets.token_hex(6)}",
                        owner_id=USER,
                        session_id=session_id,
                        url=url,
                        timeout=config.job_timeout,
                    )
                    if not result.ok:
                        raise BenchError(f"{mode} job failed: {result.error_code}")
                    return Sample(time.monotonic() - started, check_text(result.text or "", mode))

                await run_path("warm-up", config.warmup, config.concurrency, job)
                return await run_path(mode, config.jobs, config.concurrency, job)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


async def run_writeback_bench(config: BenchConfig) -> dict[str, Any]:
    chromium = find_chromium(config.base.chromium_path)
    password = secrets.token_urlsafe(12)
    async with FixtureSite.start() as site, async_playwright() as playwright:
        site.add_user(USER, password)
        browser = await launch(playwright, chromium)
        try:
            state = await log_in(browser, site, password)
        finally:
            await browser.close()
        results = {mode: await _run_mode(config, site, state, mode) for mode in MODES}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.dev.bench.writeback", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    from schema.logs import configure_logging

    configure_logging(level="WARNING", fmt="console")
    config = BenchConfig(
        base=Settings.from_env(), jobs=args.jobs, concurrency=args.concurrency, warmup=args.warmup
    )
    rep = asyncio.run(run_writeback_bench(config))
    for mode in MODES:
        print(
            f"{mode:>10}: {rep[f'{mode}_jobs_per_s']:6.2f} jobs/s  p50 {rep[f'{mode}_p50_ms']} ms"
        )
    print(
        f"write-back vs off: {rep['writeback_ratio_unchanged']:.2f}x (site changes nothing), "
        f"{rep['writeback_ratio_rotating']:.2f}x (site rotates its cookie: saved every job, "
        "one job at a time per session)"
    )
    print(json.dumps(rep, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
