"""The write-back benchmark end to end with a handful of jobs: the three modes run (the
rotating one saving a version per job) and the report has the promised keys. Figures are
not asserted."""

from __future__ import annotations

import pytest

from schema.settings import Settings
from tests.support.bench import small_bench
from workers.dev.bench.writeback import MODES, run_writeback_bench

pytestmark = pytest.mark.integration


async def test_writeback_benchmark_runs_every_mode(
    base_settings: Settings, chromium_path: str
) -> None:
    config = small_bench(
        base_settings, chromium_path, jobs=2, concurrency=1, rounds=1, contexts_per_browser=1
    )
    report = await run_writeback_bench(config)
    for mode in MODES:
        assert report[f"{mode}_jobs_per_s"] > 0
        assert report[f"{mode}_p50_ms"] > 0
    assert {"writeback_ratio_unchanged", "writeback_ratio_rotating", "writeback_p50_cost_ms"} <= (
        set(report)
    )
