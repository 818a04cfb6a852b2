"""The browse benchmark end to end with a handful of jobs: every path runs, extracts the same
logged-in text, and the report has the promised keys. Figures are not asserted."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from schema.settings import Settings
from tests.support.bench import small_bench
from workers.dev.bench.browse import render_table, run_benchmark

pytestmark = pytest.mark.integration

REQUIRED_KEYS = {
    "system_jobs_per_s",
    "plain_jobs_per_s",
    "launch_jobs_per_s",
    "ratio_vs_plain",
    "ratio_vs_launch",
    "system_p50_ms",
    "system_p95_ms",
    "plain_p50_ms",
    "worker_rss_mb_start",
    "worker_rss_mb_end",
    "launch_p50_ms",
    "jobs",
    "concurrency",
    "worker",
}


async def test_benchmark_runs_three_paths_with_the_same_text(
    base_settings: Settings, chromium_path: str, tmp_path: Path
) -> None:
    config = small_bench(
        base_settings,
        chromium_path,
        jobs=4,
        concurrency=2,
        memory_jobs=2,
        memory_checkpoints=2,
        rounds=2,
        contexts_per_browser=2,
        worker_log=tmp_path / "worker.log",
        memory_settle=timedelta(seconds=0.5),
    )
    report = await run_benchmark(config)

    assert not REQUIRED_KEYS - report.keys()
    assert report["jobs"] == 4 and report["concurrency"] == 2
    assert report["same_text"] is True and report["distinct_texts"] == 1
    assert "logged in as bench" in report["text"]
    for path in ("system", "plain", "launch"):
        assert report[f"{path}_jobs_per_s"] > 0
    assert report["worker_rss_mb_start"] > 0 and report["worker_rss_mb_end"] > 0
    assert report["worker_processes_start"] >= 3  # dramatiq, its worker, Playwright, Chromium
    # Settled samples: start, after the timed run, after each memory checkpoint.
    assert [jobs for jobs, _ in report["worker_pss_mb_trend"]] == [0, 4, 5, 6]
    assert report["worker"]["browsers"] == 1 and report["worker"]["threads"] == 2
    # The pool's --disable-features replaces Playwright's (Chromium keeps the last one): it must
    # still carry every feature Playwright disables, plus the pool's own.
    assert report["worker"]["lean_flags_active"] is True
    assert report["worker"]["playwright_features_dropped"] == []
    json.loads(json.dumps(report))
    table = render_table(report)
    assert "plain Playwright" in table and "browser per job" in table
    # The system path really went through the worker: one finished browse per job.
    events = [
        json.loads(line)
        for line in (tmp_path / "worker.log").read_text().splitlines()
        if line.startswith("{")
    ]
    browses = [
        e
        for e in events
        if e.get("event") == "job_finished" and e.get("actor") == "browse" and e["outcome"] == "ok"
    ]
    assert len(browses) == config.warmup + config.jobs + config.memory_jobs
