"""Benchmark authenticated browse jobs three ways against the local fixture site.

``python -m workers.dev.bench.browse [--jobs N] [--concurrency C] [--memory-jobs M]`` runs the same
N jobs (open ``/app`` with a saved login, wait for ``#whoami``, take the visible text) at the
same concurrency: (a) plain Playwright, one warm browser and ``new_context(storage_state=...)``
per job; (b) a browser launched per job; (c) the whole system: producers → RabbitMQ → a real
``browser-sessions worker`` subprocess → Postgres result. It then runs M more system jobs and
reports the worker tree's memory (RSS and PSS, browsers included) before and after. Paths run
interleaved in rounds, and CPU per job is reported beside wall-clock figures, so load from other
programs on the machine skews the comparison less. It prints a table and, as its last line, one
JSON object. Needs Postgres, RabbitMQ and Chromium; uses a throw-away database, queue prefix and
key directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from playwright.async_api import Browser, Playwright, StorageState, async_playwright

from producers.api import SessionsClient
from schema.settings import Settings
from workers.browser.chromium import browser_launch_options, find_chromium
from workers.browser.pool import LEAN_CONTEXT_ARGS, LEAN_DISABLED_FEATURES
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess, free_port, process_tree, processes, run_worker
from workers.dev.scratch import admin_url, delete_queues, scratch_database
from workers.runtime.periodic import every

USER = "bench"
PAGE = "/app"
LOGGED_IN_SELECTOR = "#whoami"
CALL_TIMEOUT = timedelta(seconds=30)
WORKER_START_TIMEOUT = timedelta(seconds=90)


class BenchError(RuntimeError):
    """A job or a set-up step failed; the benchmark's figures would mean nothing."""


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What to run; ``base`` supplies the Postgres server and RabbitMQ to use."""

    base: Settings
    jobs: int = 40
    concurrency: int = 2
    memory_jobs: int = 1000
    warmup: int = 2
    rounds: int = 4
    browsers: int = 2
    contexts_per_browser: int = 2
    threads: int | None = None
    worker_log: Path | None = None
    job_timeout: timedelta = timedelta(seconds=60)
    memory_settle: timedelta = timedelta(seconds=3)
    tuned_baselines: bool = False  # give (a) and (b) the pool's Chromium flags too
    memory_checkpoints: int = 5  # settled samples during the memory run, for the trend

    @property
    def worker_threads(self) -> int:
        return self.threads or self.browsers * self.contexts_per_browser


@dataclass(frozen=True)
class Sample:
    """One job: latency in seconds and the text it extracted; phases for system jobs."""

    latency_s: float
    text: str
    enqueue_s: float | None = None
    worker_s: float | None = None


@dataclass(frozen=True)
class PathResult:
    """One path's jobs: wall time, per-job samples, CPU used meanwhile."""

    name: str
    wall_s: float
    samples: list[Sample]
    cpu_s: float = 0.0  # CPU meanwhile: this process tree (worker, browsers) + DB backends

    @property
    def jobs_per_s(self) -> float:
        return len(self.samples) / self.wall_s

    @property
    def cpu_ms_per_job(self) -> float:
        return self.cpu_s * 1000 / len(self.samples)

    def latency_ms(self, q: float) -> float:
        return percentile([s.latency_s * 1000 for s in self.samples], q)

    def phase_ms(self, field: str, q: float) -> float | None:
        values = [getattr(s, field) for s in self.samples if getattr(s, field) is not None]
        return percentile([v * 1000 for v in values], q) if values else None

    @property
    def texts(self) -> set[str]:
        return {s.text for s in self.samples}


@dataclass(frozen=True)
class Memory:
    """A worker process tree's resident memory, browsers included."""

    processes: int
    rss_kb: int
    pss_kb: int
    pss_kb_by_kind: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def rss_mb(self) -> float:
        return self.rss_kb / 1024

    @property
    def pss_mb(self) -> float:
        return self.pss_kb / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) / 100)))
    return ordered[rank - 1]


async def run_path(
    name: str,
    jobs: int,
    concurrency: int,
    job: Callable[[int], Awaitable[Sample]],
    *,
    cpu_probe: Callable[[], Awaitable[float]] | None = None,
) -> PathResult:
    """Run ``jobs`` jobs with at most ``concurrency`` in flight; latency from job start.

    CPU is this process tree's, plus whatever ``cpu_probe`` adds (e.g. Postgres backends).
    """
    probe = cpu_probe or _tree_cpu
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Sample:
        async with gate:
            return await job(i)

    cpu = await probe()
    started = time.monotonic()
    samples = await asyncio.gather(*(one(i) for i in range(jobs)))
    wall = time.monotonic() - started
    return PathResult(name, wall, list(samples), await probe() - cpu)


# ----- process accounting: CPU and orphans ----------------------------------------------


async def _tree_cpu() -> float:
    return tree_cpu_s(os.getpid())


def _pid_cpu_s(pid: int) -> float:
    """CPU seconds of one process (itself and its reaped children); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu_s(root: int) -> float:
    """CPU seconds used by the tree so far, reaped children included (utime+stime+cu+cs).

    Postgres and RabbitMQ run outside the tree and are not counted.
    """
    return sum(_pid_cpu_s(pid) for pid in process_tree(root))


PR_SET_CHILD_SUBREAPER = 36


def _direct_children() -> dict[int, str]:
    """This process's children and their states (``Z`` for a zombie)."""
    me = os.getpid()
    return {pid: state for pid, (parent, state) in processes().items() if parent == me}


def _set_subreaper(on: bool) -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class OrphanKeeper:
    """Keeps orphaned descendants in this process tree so their CPU time is counted.

    A closing browser's last children outlive it and would be re-parented to init, taking
    their CPU time with them. As a child subreaper this process adopts them instead; they are
    counted while they run and as zombies, and :meth:`reap` collects them. It never touches a
    child this process started itself (those present on entry, and any passed to ``keep``).
    """

    def __init__(self) -> None:
        self._keep: set[int] = set()
        self._on = False

    def __enter__(self) -> OrphanKeeper:
        self._keep = set(_direct_children())
        self._on = _set_subreaper(True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.reap()
        if self._on:
            _set_subreaper(False)

    def keep(self, pid: int) -> None:
        self._keep.add(pid)

    def reap(self) -> None:
        for pid, state in _direct_children().items():
            if pid not in self._keep and state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)


def check_text(text: str, where: str) -> str:
    if f"logged in as {USER}" not in text:
        raise BenchError(f"{where}: the page is not logged in ({text[:80]!r})")
    return text


# ----- (a) and (b): Playwright the way its docs show -------------------------------------


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


async def visit_page(browser: Browser, state: dict[str, Any], url: str) -> str:
    """A context with the saved state, one page, the logged-in text; the context closed."""
    timeout_ms = _seconds(CALL_TIMEOUT) * 1000
    context = await asyncio.wait_for(
        browser.new_context(storage_state=cast(StorageState, state)), _seconds(CALL_TIMEOUT)
    )
    try:
        page = await asyncio.wait_for(context.new_page(), _seconds(CALL_TIMEOUT))
        await page.goto(url, timeout=timeout_ms)
        await page.wait_for_selector(LOGGED_IN_SELECTOR, timeout=timeout_ms)
        return await page.inner_text("body", timeout=timeout_ms)
    finally:
        await asyncio.wait_for(context.close(), _seconds(CALL_TIMEOUT))


async def launch(playwright: Playwright, chromium: str, *, tuned: bool = False) -> Browser:
    """Chromium as plain Playwright launches it (``tuned``: plus the pool's lean flags)."""
    options = browser_launch_options(chromium)
    options["args"] += LEAN_CONTEXT_ARGS if tuned else ()
    return await playwright.chromium.launch(
        headless=True, timeout=_seconds(CALL_TIMEOUT) * 1000, **options
    )


async def log_in(browser: Browser, site: FixtureSite, password: str) -> dict[str, Any]:
    """Log in once with a real browser; the storage state has the cookie and the token."""
    timeout_ms = _seconds(CALL_TIMEOUT) * 1000
    context = await asyncio.wait_for(browser.new_context(), _seconds(CALL_TIMEOUT))
    try:
        page = await asyncio.wait_for(context.new_page(), _seconds(CALL_TIMEOUT))
        await page.goto(site.url("/login?next=" + PAGE), timeout=timeout_ms)
        await page.fill("#username", USER, timeout=timeout_ms)
        await page.fill("#password", password, timeout=timeout_ms)
        await page.click("#submit", timeout=timeout_ms)
        await page.wait_for_selector(LOGGED_IN_SELECTOR, timeout=timeout_ms)
        state = dict(await asyncio.wait_for(context.storage_state(), _seconds(CALL_TIMEOUT)))
    finally:
        await asyncio.wait_for(context.close(), _seconds(CALL_TIMEOUT))
    if not state.get("origins"):
        raise BenchError("the saved state has no localStorage token")
    return state


# ----- (c): the worker subprocess --------------------------------------------------------


@dataclass
class WorkerTree:
    """A ``browser-sessions worker`` subprocess and everything below it."""

    worker: WorkerProcess

    def pids(self) -> list[int]:
        """The worker and every process below it (dramatiq children, drivers, browsers)."""
        return process_tree(self.worker.process.pid)

    def memory(self) -> Memory:
        """Summed VmRSS (double-counts shared pages) and PSS (shares split) of the tree."""
        rss = pss = count = 0
        by_kind: dict[str, int] = {}
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError):
                proc_rss = _kb_field(Path(f"/proc/{pid}/status").read_text(), "VmRSS:")
                proc_pss = _kb_field(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss:")
                kind = _process_kind(Path(f"/proc/{pid}/cmdline").read_bytes())
                rss, pss, count = rss + proc_rss, pss + proc_pss, count + 1
                by_kind[kind] = by_kind.get(kind, 0) + proc_pss
        return Memory(processes=count, rss_kb=rss, pss_kb=pss, pss_kb_by_kind=by_kind)


def feature_check(worker: WorkerTree) -> dict[str, Any]:
    """Whether the worker's browsers run with the pool's lean flags without losing any feature
    Playwright disables (Chromium honours only the last ``--disable-features``)."""
    for pid in worker.pids():
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if _process_kind(cmdline) != "chromium-browser":
                continue
            lists = [
                set(arg.split("=", 1)[1].split(","))
                for arg in cmdline.decode(errors="replace").split("\0")
                if arg.startswith("--disable-features=")
            ]
            if lists:
                return {
                    "lean_flags_active": set(LEAN_DISABLED_FEATURES) <= lists[-1],
                    "playwright_features_dropped": sorted(set().union(*lists) - lists[-1]),
                }
    return {"lean_flags_active": False, "playwright_features_dropped": []}


def _process_kind(cmdline: bytes) -> str:
    """python, playwright-driver, chromium-browser, chromium-renderer or chromium-other."""
    args = cmdline.replace(b"\0", b" ").split()
    if not args:
        return "other"
    if b"chrom" in args[0]:
        if b"--type=renderer" in args:
            return "chromium-renderer"
        return (
            "chromium-other" if any(a.startswith(b"--type=") for a in args) else "chromium-browser"
        )
    if b"node" in args[0]:
        return "playwright-driver"
    return "python" if b"python" in args[0] else "other"


def _kb_field(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return 0


@contextlib.asynccontextmanager
async def bench_worker(
    settings: Settings, log_path: Path, *, threads: int
) -> AsyncIterator[WorkerTree]:
    """``browser-sessions worker --queues browse expiry``, ready on entry."""
    with run_worker(
        settings,
        ["browse", "expiry"],
        log_path,
        threads=threads,
        ready_timeout=_seconds(WORKER_START_TIMEOUT),
    ) as worker:
        yield WorkerTree(worker)


@contextlib.asynccontextmanager
async def system_settings(config: BenchConfig, site: FixtureSite) -> AsyncIterator[Settings]:
    """Settings on a throw-away database, queue prefix and key directory (mode 0700)."""
    prefix = f"bs-bench-{secrets.token_hex(4)}."
    key_dir = Path(tempfile.mkdtemp(prefix="bs-bench-keys-"))  # created with mode 0700
    os.chmod(key_dir, 0o700)
    try:
        async with scratch_database(
            admin_url(config.base.database_url), f"bs_bench_{secrets.token_hex(4)}"
        ) as database_url:
            yield dataclasses.replace(
                config.base,
                database_url=database_url,
                queue_prefix=prefix,
                key_dir=key_dir,
                allow_private_hosts=frozenset({f"{site.host}:{site.port}"}),
                metrics_port=free_port(),
                health_port=free_port(),
                liveview_port=free_port(),
                browsers=config.browsers,
                contexts_per_browser=config.contexts_per_browser,
                log_format="json",
            )
    finally:
        await asyncio.to_thread(delete_queues, config.base.amqp_url, prefix)
        shutil.rmtree(key_dir, ignore_errors=True)


async def settled_memory(worker: WorkerTree, settle: timedelta) -> Memory:
    """The tree's memory once closed contexts have gone (a short pause, then a sample)."""
    await asyncio.sleep(_seconds(settle))
    return worker.memory()


@contextlib.asynccontextmanager
async def memory_samples(
    worker: WorkerTree, interval: timedelta = timedelta(seconds=2)
) -> AsyncIterator[list[Memory]]:
    """The worker tree's memory, sampled every ``interval`` while the block runs."""
    samples: list[Memory] = []
    async with every(interval, lambda: samples.append(worker.memory())):
        yield samples


# ----- the benchmark ---------------------------------------------------------------------

PATHS = ("plain", "launch", "system")
Job = Callable[[int], Awaitable[Sample]]


@dataclass
class _SystemRun:
    paths: dict[str, PathResult]
    memory: dict[str, Memory]
    peak: Memory | None
    settings: Settings
    trend: list[tuple[int, Memory]]  # (system jobs since the start sample, settled memory)
    chromium_features: dict[str, Any]  # see feature_check


async def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Run the three paths (interleaved in rounds) and the memory run; returns the report."""
    if min(config.jobs, config.concurrency, config.rounds, config.memory_checkpoints) < 1:
        raise BenchError("jobs, concurrency, rounds and memory checkpoints must be at least 1")
    if config.memory_jobs < 0:
        raise BenchError("memory jobs must not be negative")
    chromium = find_chromium(config.base.chromium_path)
    password = secrets.token_urlsafe(12)
    load_before = os.getloadavg()
    async with FixtureSite.start() as site, async_playwright() as playwright:
        site.add_user(USER, password)
        url = site.url(PAGE)
        tuned = config.tuned_baselines
        browser = await launch(playwright, chromium, tuned=tuned)
        try:
            state = await log_in(browser, site, password)

            async def plain(_i: int) -> Sample:
                started = time.monotonic()
                text = await visit_page(browser, state, url)
                return Sample(time.monotonic() - started, check_text(text, "plain"))

            async def per_launch(_i: int) -> Sample:
                started = time.monotonic()
                own = await launch(playwright, chromium, tuned=tuned)
                try:
                    text = await visit_page(own, state, url)
                finally:
                    await asyncio.wait_for(own.close(), _seconds(CALL_TIMEOUT))
                return Sample(time.monotonic() - started, check_text(text, "launch"))

            with OrphanKeeper() as keeper:
                system = await _run_all(
                    config, site, state, url, {"plain": plain, "launch": per_launch}, keeper
                )
        finally:
            await asyncio.wait_for(browser.close(), _seconds(CALL_TIMEOUT))
    return report(config, system, load=(load_before[0], os.getloadavg()[0]))


async def import_bench_session(
    client: SessionsClient, site: FixtureSite, state: dict[str, Any]
) -> str:
    """The bench user's logged-in ``state`` as a session on ``site``'s page; its id."""
    created = await client.import_session(
        owner_id=USER,
        label="bench fixture",
        start_url=site.url(PAGE),
        state=json.dumps(state).encode(),
        logged_in_selector=LOGGED_IN_SELECTOR,
        login_url_pattern=site.url("/login") + "**",
    )
    return str(created["session_id"])


def _split(jobs: int, rounds: int) -> list[int]:
    """``jobs`` spread over ``rounds`` as evenly as possible (no empty round)."""
    rounds = min(rounds, jobs)
    return [jobs // rounds + (1 if r < jobs % rounds else 0) for r in range(rounds)]


async def _run_all(
    config: BenchConfig,
    site: FixtureSite,
    state: dict[str, Any],
    url: str,
    local_jobs: dict[str, Job],
    keeper: OrphanKeeper,
) -> _SystemRun:
    """Start the system, then run every path in rounds so outside load hits them alike."""
    with contextlib.ExitStack() as cleanup:
        if config.worker_log is not None:
            log_path = config.worker_log
        else:
            log_dir = tempfile.mkdtemp(prefix="bs-bench-log-")
            cleanup.callback(shutil.rmtree, log_dir, ignore_errors=True)
            log_path = Path(log_dir) / "worker.log"
        async with (
            system_settings(config, site) as settings,
            bench_worker(settings, log_path, threads=config.worker_threads) as worker,
            SessionsClient.open(settings) as client,
        ):
            keeper.keep(worker.worker.process.pid)
            session_id = await import_bench_session(client, site, state)
            bench_task = (await client.add_task(f"bench-{secrets.token_hex(6)}", owner_id=USER))[
                "task_id"
            ]

            async def system(_i: int) -> Sample:
                started = time.monotonic()
                job_id = await client.enqueue_browse(
                    task_id=bench_task,
                    owner_id=USER,
                    session_id=session_id,
                    url=url,
                )
                enqueued = time.monotonic()
                result = await client.wait_result(job_id, owner_id=USER, timeout=config.job_timeout)
                done = time.monotonic()
                if not result.ok:
                    raise BenchError(f"system job failed: {result.error_code}")
                return Sample(
                    done - started,
                    check_text(result.text or "", "system"),
                    enqueue_s=enqueued - started,
                    worker_s=(result.duration_ms or 0) / 1000,
                )

            async def cpu_probe() -> float:
                """This tree plus the Postgres backends of the bench database."""
                pids = await client.db.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                )
                return tree_cpu_s(os.getpid()) + sum(_pid_cpu_s(r["pid"]) for r in pids)

            def run(name: str, count: int, job: Job) -> Awaitable[PathResult]:
                return run_path(name, count, config.concurrency, job, cpu_probe=cpu_probe)

            features = feature_check(worker)
            jobs: dict[str, Job] = {**local_jobs, "system": system}
            for name in PATHS:
                await run("warm-up", config.warmup, jobs[name])
            memory = {"start": await settled_memory(worker, config.memory_settle)}
            rounds: dict[str, list[PathResult]] = {name: [] for name in PATHS}
            for count in _split(config.jobs, config.rounds):
                for name in PATHS:
                    rounds[name].append(await run(name, count, jobs[name]))
                    keeper.reap()
            paths = {name: merge(name, results) for name, results in rounds.items()}
            peak: Memory | None = None
            trend: list[tuple[int, Memory]] = []
            if config.memory_jobs:
                memory["timed"] = await settled_memory(worker, config.memory_settle)
                done, chunks = 0, []
                async with memory_samples(worker) as samples:
                    for count in _split(config.memory_jobs, config.memory_checkpoints):
                        chunks.append(await run("memory", count, system))
                        done += count
                        keeper.reap()
                        trend.append(
                            (config.jobs + done, await settled_memory(worker, config.memory_settle))
                        )
                paths["memory"] = merge("memory", chunks)
                peak = max(samples, key=lambda m: m.rss_kb, default=None)
            memory["end"] = (
                trend[-1][1] if trend else await settled_memory(worker, config.memory_settle)
            )
    return _SystemRun(
        paths=paths,
        memory=memory,
        peak=peak,
        settings=settings,
        trend=trend,
        chromium_features=features,
    )


def merge(name: str, results: Sequence[PathResult]) -> PathResult:
    """One path's rounds as one result: summed wall time, pooled samples."""
    return PathResult(
        name,
        sum(r.wall_s for r in results),
        [s for r in results for s in r.samples],
        sum(r.cpu_s for r in results),
    )


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _mb_by_kind(memory: Memory) -> dict[str, float | None]:
    return {k: _r(v / 1024) for k, v in sorted(memory.pss_kb_by_kind.items())}


def _change_pct(start: float, end: float) -> float:
    return round((end - start) / start * 100, 1) if start else 0.0


def report(config: BenchConfig, system: _SystemRun, *, load: tuple[float, float]) -> dict[str, Any]:
    """The JSON report: throughput, latency, ratios, memory, targets."""
    paths = system.paths
    plain, launch_, sys_ = paths["plain"], paths["launch"], paths["system"]
    texts = set().union(*(p.texts for p in paths.values()))
    start, end = system.memory["start"], system.memory["end"]
    trend = [(0, start)]
    if "timed" in system.memory:
        trend.append((config.jobs, system.memory["timed"]))
    trend += system.trend
    out: dict[str, Any] = {
        "bench": "browse",
        "jobs": config.jobs,
        "concurrency": config.concurrency,
        "rounds": min(config.rounds, config.jobs),
        "warmup_jobs": config.warmup,
        "memory_jobs": config.memory_jobs,
        "worker": {
            "browsers": config.browsers,
            "contexts_per_browser": config.contexts_per_browser,
            "threads": config.worker_threads,
            "browser_max_contexts": system.settings.browser_max_contexts,
            "pool_chromium_args": list(LEAN_CONTEXT_ARGS),
            **system.chromium_features,
        },
        "baselines_tuned": config.tuned_baselines,
        "system_jobs_per_s": _r(sys_.jobs_per_s, 3),
        "plain_jobs_per_s": _r(plain.jobs_per_s, 3),
        "launch_jobs_per_s": _r(launch_.jobs_per_s, 3),
        "ratio_vs_plain": _r(sys_.jobs_per_s / plain.jobs_per_s, 3),
        "ratio_vs_launch": _r(sys_.jobs_per_s / launch_.jobs_per_s, 3),
        "system_p50_ms": _r(sys_.latency_ms(50)),
        "system_p95_ms": _r(sys_.latency_ms(95)),
        "plain_p50_ms": _r(plain.latency_ms(50)),
        "plain_p95_ms": _r(plain.latency_ms(95)),
        "launch_p50_ms": _r(launch_.latency_ms(50)),
        "launch_p95_ms": _r(launch_.latency_ms(95)),
        "cores": os.cpu_count(),
        "plain_cpu_ms_per_job": _r(plain.cpu_ms_per_job),
        "launch_cpu_ms_per_job": _r(launch_.cpu_ms_per_job),
        "system_cpu_ms_per_job": _r(sys_.cpu_ms_per_job),
        "ratio_vs_plain_by_cpu": _r(plain.cpu_ms_per_job / sys_.cpu_ms_per_job, 3),
        "ratio_vs_launch_by_cpu": _r(launch_.cpu_ms_per_job / sys_.cpu_ms_per_job, 3),
        "system_enqueue_p50_ms": _r(sys_.phase_ms("enqueue_s", 50)),
        "system_worker_p50_ms": _r(sys_.phase_ms("worker_s", 50)),
        "system_worker_p95_ms": _r(sys_.phase_ms("worker_s", 95)),
        "worker_rss_mb_start": _r(start.rss_mb),
        "worker_rss_mb_end": _r(end.rss_mb),
        "worker_rss_change_pct": _change_pct(start.rss_kb, end.rss_kb),
        "worker_pss_mb_start": _r(start.pss_mb),
        "worker_pss_mb_end": _r(end.pss_mb),
        "worker_pss_change_pct": _change_pct(start.pss_kb, end.pss_kb),
        "worker_rss_mb_peak": _r(system.peak.rss_mb) if system.peak else None,
        "worker_pss_mb_by_kind_start": _mb_by_kind(start),
        "worker_pss_mb_by_kind_end": _mb_by_kind(end),
        "worker_pss_mb_trend": [[jobs, _r(m.pss_mb)] for jobs, m in trend],
        "worker_rss_mb_trend": [[jobs, _r(m.rss_mb)] for jobs, m in trend],
        "worker_processes_start": start.processes,
        "worker_processes_end": end.processes,
        "same_text": len(texts) == 1,
        "distinct_texts": len(texts),
        "text": next(iter(texts)) if len(texts) == 1 else None,
        "load_avg_1m_before": round(load[0], 2),
        "load_avg_1m_after": round(load[1], 2),
    }
    if "memory" in paths:
        out["memory_run_jobs_per_s"] = _r(paths["memory"].jobs_per_s, 3)
        out["memory_run_p50_ms"] = _r(paths["memory"].latency_ms(50))
        out["memory_run_cpu_ms_per_job"] = _r(paths["memory"].cpu_ms_per_job)
        timed = system.memory["timed"]
        out["worker_rss_mb_before_memory_run"] = _r(timed.rss_mb)
        out["worker_rss_change_pct_memory_run"] = _change_pct(timed.rss_kb, end.rss_kb)
        out["worker_pss_change_pct_memory_run"] = _change_pct(timed.pss_kb, end.pss_kb)
        # From the first checkpoint on, past the Playwright driver's heap warm-up.
        first = system.trend[0][1]
        out["worker_rss_change_pct_steady"] = _change_pct(first.rss_kb, end.rss_kb)
        out["worker_pss_change_pct_steady"] = _change_pct(first.pss_kb, end.pss_kb)
    out["targets"] = {
        "throughput_vs_plain_ge_1.3": out["ratio_vs_plain"] >= 1.3,
        "throughput_vs_launch_ge_2.5": out["ratio_vs_launch"] >= 2.5,
        "system_p50_le_plain_p50": out["system_p50_ms"] <= out["plain_p50_ms"],
        "rss_flat_within_10pct": abs(out["worker_rss_change_pct"]) <= 10,
        "pss_flat_within_10pct": abs(out["worker_pss_change_pct"]) <= 10,
    }
    return out


def render_table(rep: dict[str, Any], paths: Sequence[str] = ("plain", "launch", "system")) -> str:
    """A readable summary of a report."""
    lines = [
        f"browse benchmark: {rep['jobs']} jobs per path, {rep['concurrency']} in flight, "
        f"worker {rep['worker']['browsers']} browser(s) x "
        f"{rep['worker']['contexts_per_browser']} contexts, {rep['worker']['threads']} threads",
        "",
        f"{'path':<28} {'jobs/s':>8} {'p50 ms':>9} {'p95 ms':>9} {'CPU ms/job':>11}",
        "-" * 69,
    ]
    labels = {
        "plain": "(a) plain Playwright",
        "launch": "(b) browser per job",
        "system": "(c) system (enqueue→result)",
    }
    for name in paths:
        lines.append(
            f"{labels[name]:<28} {rep[f'{name}_jobs_per_s']:>8.2f} "
            f"{rep[f'{name}_p50_ms']:>9.0f} {rep[f'{name}_p95_ms']:>9.0f} "
            f"{rep[f'{name}_cpu_ms_per_job']:>11.0f}"
        )
    if "memory_run_jobs_per_s" in rep:
        lines.append(
            f"{'    system, memory run':<28} {rep['memory_run_jobs_per_s']:>8.2f} "
            f"{rep['memory_run_p50_ms']:>9.0f} {'':>9}  ({rep['memory_jobs']} jobs)"
        )
    lines += [
        "",
        f"system vs plain: {rep['ratio_vs_plain']:.2f}x   system vs launch: "
        f"{rep['ratio_vs_launch']:.2f}x   same text on every path: {rep['same_text']}",
        f"by CPU per job (bench tree incl. worker and browsers, plus Postgres backends; not "
        f"RabbitMQ): system vs plain {rep['ratio_vs_plain_by_cpu']:.2f}x, vs launch "
        f"{rep['ratio_vs_launch_by_cpu']:.2f}x",
        f"machine load average (1 min) before/after: {rep['load_avg_1m_before']} / "
        f"{rep['load_avg_1m_after']} on {rep['cores']} cores",
        f"worker Chromium: lean flags active {rep['worker']['lean_flags_active']}, Playwright "
        f"features dropped {rep['worker']['playwright_features_dropped'] or 'none'}",
        f"system p50 split: enqueue {rep['system_enqueue_p50_ms']} ms, worker "
        f"{rep['system_worker_p50_ms']} ms, rest = queue wait + result notify",
        f"worker tree RSS: {rep['worker_rss_mb_start']} → {rep['worker_rss_mb_end']} MB "
        f"({rep['worker_rss_change_pct']:+.1f}%), PSS: {rep['worker_pss_mb_start']} → "
        f"{rep['worker_pss_mb_end']} MB ({rep['worker_pss_change_pct']:+.1f}%), "
        f"peak RSS {rep['worker_rss_mb_peak']} MB",
        "worker tree PSS after N system jobs (settled): "
        + ", ".join(f"{jobs}: {mb} MB" for jobs, mb in rep["worker_pss_mb_trend"]),
        f"worker PSS by process, start → end: {rep['worker_pss_mb_by_kind_start']} → "
        f"{rep['worker_pss_mb_by_kind_end']}",
        "targets: "
        + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in rep["targets"].items()),
    ]
    if "worker_pss_change_pct_steady" in rep:
        lines.insert(
            -2,
            f"from the first memory checkpoint to the end: RSS "
            f"{rep['worker_rss_change_pct_steady']:+.1f}%, PSS "
            f"{rep['worker_pss_change_pct_steady']:+.1f}%",
        )
    return "\n".join(lines)


def bench_parser(prog: str, doc: str, options: dict[str, str]) -> argparse.ArgumentParser:
    """A command line with a whole-number ``--option`` for each :class:`BenchConfig` field in
    ``options`` (field -> help), defaulting to the field's default."""
    defaults = {f.name: f.default for f in dataclasses.fields(BenchConfig)}
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    for name, text in options.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=defaults[name], help=text or None)
    return parser


def bench_main(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    run: Callable[[BenchConfig], Coroutine[Any, Any, dict[str, Any]]],
    render: Callable[[dict[str, Any]], str],
) -> int:
    """Parse ``argv`` into a :class:`BenchConfig` (options named after its fields), run the
    benchmark, print ``render``'s table and then the report as one JSON line."""
    args = parser.parse_args(argv)
    from schema.logs import configure_logging

    configure_logging(level="WARNING", fmt="console")
    fields = {f.name for f in dataclasses.fields(BenchConfig)}
    chosen = {name: value for name, value in vars(args).items() if name in fields}
    rep = asyncio.run(run(BenchConfig(base=Settings.from_env(), **chosen)))
    print(render(rep))
    print(json.dumps(rep, separators=(",", ":")))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(
        "python -m workers.dev.bench.browse",
        __doc__,
        {
            "jobs": "timed jobs per path",
            "concurrency": "jobs in flight",
            "memory_jobs": "extra system jobs for the memory figure",
            "warmup": "untimed jobs per path first",
            "rounds": "interleave the paths in this many rounds",
            "browsers": "worker's pooled browsers",
            "contexts_per_browser": "",
            "memory_checkpoints": "settled memory samples during the memory run",
        },
    )
    parser.add_argument("--threads", type=int, default=None, help="default browsers x contexts")
    parser.add_argument(
        "--tuned-baselines",
        action="store_true",
        help="launch (a) and (b) with the pool's Chromium flags too (architecture-only gain)",
    )
    parser.add_argument("--worker-log", type=Path, default=None, help="keep the worker's log")
    return bench_main(parser, argv, run_benchmark, render_table)


if __name__ == "__main__":
    sys.exit(main())
