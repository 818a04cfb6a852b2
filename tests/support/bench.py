"""Benchmarks run small in the tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from schema.settings import Settings
from workers.dev.bench.browse import BenchConfig


def small_bench(base: Settings, chromium_path: str, **changes: Any) -> BenchConfig:
    """A benchmark on the test run's services and Chromium, with one browser in the worker
    and one warm-up job per path (lighter than the benchmark's defaults), plus ``changes``."""
    return BenchConfig(
        base=dataclasses.replace(base, chromium_path=chromium_path),
        browsers=1,
        warmup=1,
        **changes,
    )
