"""The workers' Prometheus metrics (prometheus-client in multiprocess mode).

``browser-sessions worker`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a clean directory before
dramatiq imports anything, so every worker process writes its values to files there and
dramatiq's Prometheus middleware serves them all, aggregated, on ``dramatiq_prom_port``
(``BROWSER_SESSIONS_METRICS_PORT``). Without that variable (tests, the CLI) the same
functions record into the in-process :data:`REGISTRY`.

Labels stay low-cardinality: actor names, outcomes, error codes, capture states. Never a
user, session, task or URL. Every labelled series the alert rules use is created at import
so it is scraped (as zero) from process start.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Protocol

from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schema.enums import FINAL_CAPTURE_STATES, CaptureState
from schema.errors import ALL_ERRORS
from schema.events import Events
from schema.jobs import ACTOR_QUEUES
from workers.runtime.periodic import every

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DRAMATIQ_DB_ENV = "dramatiq_prom_db"  # dramatiq's own (lower-case) variable
if os.environ.get(MULTIPROC_ENV):
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

#: Our metrics' registry. In multiprocess mode values live in files and the exposition
#: server reads them all; this registry only matters in single-process use (tests).
REGISTRY = CollectorRegistry(auto_describe=True)

ACTORS = tuple(ACTOR_QUEUES)
OK = "ok"
ERROR = "error"
OTHER_ERROR = "OTHER"
ERROR_CODES = tuple(sorted({cls.code for cls in ALL_ERRORS}))
CAPTURE_FINAL_STATES = tuple(sorted(s.value for s in FINAL_CAPTURE_STATES))

JOBS = Counter(
    "browser_sessions_jobs",
    "Finished jobs by actor, outcome (ok|error) and error code ('' when ok).",
    ["actor", "outcome", "error_code"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "browser_sessions_job_duration_seconds",
    "Time from a job's start to its end, by actor.",
    ["actor"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800),
    registry=REGISTRY,
)
POOL_BROWSERS = Gauge(
    "browser_sessions_pool_browsers",
    "Live browsers in the browse pools.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_CONTEXTS_IN_USE = Gauge(
    "browser_sessions_pool_contexts_in_use",
    "Browser contexts currently handed out by the browse pools.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_CAPACITY = Gauge(
    "browser_sessions_pool_capacity",
    "Contexts the browse pools can hand out at once.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
BROWSER_LAUNCHES = Counter(
    "browser_sessions_browser_launches", "Browsers launched by the pools.", registry=REGISTRY
)
BROWSER_CRASHES = Counter(
    "browser_sessions_browser_crashes",
    "Pooled browsers that crashed or disconnected unexpectedly.",
    registry=REGISTRY,
)
BROWSER_RETIREMENTS = Counter(
    "browser_sessions_browser_retirements",
    "Pooled browsers retired after their maximum number of contexts.",
    registry=REGISTRY,
)
DECRYPTS = Counter(
    "browser_sessions_decrypts",
    "Decryptions of saved session states, by result (ok|error).",
    ["result"],
    registry=REGISTRY,
)
SESSIONS_EXPIRED = Counter(
    "browser_sessions_sessions_expired",
    "Sessions newly marked expired after a failed login check.",
    registry=REGISTRY,
)
CAPTURES = Counter(
    "browser_sessions_captures",
    "Captures (login windows and imports) that reached a final state, by state.",
    ["state"],
    registry=REGISTRY,
)
LIVEVIEW_VIEWERS = Gauge(
    "browser_sessions_liveview_viewers",
    "Live-view viewers connected.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
AUDIT_WRITE_FAILURES = Counter(
    "browser_sessions_audit_write_failures",
    "Audit rows that could not be written (the guarded action was refused).",
    registry=REGISTRY,
)
RESULT_DELIVERY = Histogram(
    "browser_sessions_result_delivery_seconds",
    "Time from a browse job's enqueue to its stored result (retries included).",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
GUARD_REFUSALS = Counter(
    "browser_sessions_guard_refusals",
    "Navigations and browser requests refused by the URL guard.",
    registry=REGISTRY,
)
MESSAGES_REFUSED = Counter(
    "browser_sessions_messages_refused",
    "Messages dead-lettered before running (reason: too_large), by actor.",
    ["actor", "reason"],
    registry=REGISTRY,
)


def _initialise() -> None:
    """Create every labelled series the rules and the dashboard use, at zero."""
    for actor in ACTORS:
        JOBS.labels(actor, OK, "")
        for code in ERROR_CODES:
            JOBS.labels(actor, ERROR, code)
        JOB_DURATION.labels(actor)
    for result in (OK, ERROR):
        DECRYPTS.labels(result)
    for state in CAPTURE_FINAL_STATES:
        CAPTURES.labels(state)


_initialise()


def prometheus_middleware() -> list[Middleware]:
    """dramatiq's Prometheus middleware when running under ``browser-sessions worker``.

    Imported lazily: its module creates ``dramatiq_prom_db`` at import, and it must only run
    where that directory is this worker's clean multiprocess directory.
    """
    if not os.environ.get(DRAMATIQ_DB_ENV):
        return []
    from dramatiq.middleware.prometheus import Prometheus

    return [Prometheus()]


# -- recording functions: cheap, never raise on known inputs ---------------------------


def record_job(actor: str, outcome: str, error_code: str | None, seconds: float) -> None:
    """One finished job. ``outcome`` is ``ok`` or ``error``; unknown codes count as OTHER."""
    if outcome == OK:
        code = ""
    else:
        outcome = ERROR
        code = error_code if error_code in ERROR_CODES else OTHER_ERROR
    JOBS.labels(actor, outcome, code).inc()
    JOB_DURATION.labels(actor).observe(max(seconds, 0.0))


def record_message_refused(actor: str, reason: str) -> None:
    """A message dead-lettered before it ran (over the size cap)."""
    MESSAGES_REFUSED.labels(actor if actor in ACTORS else OTHER_ERROR, reason).inc()


def set_pool_stats(browsers: int, in_use: int, capacity: int | None = None) -> None:
    POOL_BROWSERS.set(browsers)
    POOL_CONTEXTS_IN_USE.set(in_use)
    if capacity is not None:
        POOL_CAPACITY.set(capacity)


def set_liveview_viewers(count: int) -> None:
    LIVEVIEW_VIEWERS.set(count)


class MetricEvents(Events):
    """The workers' events hook: each event increments its metric."""

    def guard_refused(self) -> None:
        GUARD_REFUSALS.inc()

    def decrypt_succeeded(self) -> None:
        DECRYPTS.labels(OK).inc()

    def decrypt_failed(self) -> None:
        DECRYPTS.labels(ERROR).inc()

    def audit_write_failed(self) -> None:
        AUDIT_WRITE_FAILURES.inc()

    def browser_launched(self) -> None:
        BROWSER_LAUNCHES.inc()

    def browser_crashed(self) -> None:
        BROWSER_CRASHES.inc()

    def browser_retired(self) -> None:
        BROWSER_RETIREMENTS.inc()

    def session_expired(self) -> None:
        SESSIONS_EXPIRED.inc()

    def capture_finished(self, state: CaptureState) -> None:
        """``state`` must be a :class:`CaptureState` (anything else is refused)."""
        CAPTURES.labels(CaptureState(state).value).inc()

    def result_delivered(self, enqueued_at_ms: float, *, now: float | None = None) -> None:
        """Enqueue → result stored, from a dramatiq ``message_timestamp`` (epoch ms)."""
        seconds = (time.time() if now is None else now) - enqueued_at_ms / 1000
        RESULT_DELIVERY.observe(max(seconds, 0.0))

    def write_back(self, result: str) -> None:
        if result in WRITE_BACK_RESULTS:
            WRITE_BACKS.labels(result).inc()

    def lease_waited(self, seconds: float) -> None:
        LEASE_WAIT.observe(max(seconds, 0.0))

    def probe_finished(self, verdict: str) -> None:
        if verdict in PROBE_VERDICTS:
            PROBES.labels(verdict).inc()


class _HasStats(Protocol):
    def stats(self) -> Mapping[str, int]: ...


class _HasViewers(Protocol):
    @property
    def viewers(self) -> int: ...


@contextlib.asynccontextmanager
async def sampling_gauges(
    *,
    pool: _HasStats | None = None,
    liveview: _HasViewers | None = None,
    interval: timedelta = timedelta(seconds=5),
) -> AsyncIterator[None]:
    """Copies gauges from live objects on the worker's loop every ``interval`` while the
    block runs, and zeroes them at its end. Either source may be None (a worker without
    that part). Only genuine gauges are sampled; events are reported (:class:`MetricEvents`).
    """

    def sample() -> None:
        if pool is not None:
            stats = pool.stats()
            set_pool_stats(stats["browsers"], stats["contexts_in_use"], stats.get("capacity"))
        if liveview is not None:
            set_liveview_viewers(liveview.viewers)

    try:
        async with every(interval, sample, failure_event="metrics_sample_failed"):
            yield
    finally:
        if pool is not None:
            set_pool_stats(0, 0, 0)
        if liveview is not None:
            set_liveview_viewers(0)


# -- sessions that stay alive: write-backs, probes, leases, sessions by status ---------

WRITE_BACK_RESULTS = ("saved", "unchanged", "refused_logged_out", "conflict_merged")
PROBE_VERDICTS = ("logged_in", "logged_out", "inconclusive", "busy")
SESSION_STATUSES = ("pending", "active", "expired", "revoked")

WRITE_BACKS = Counter(
    "browser_sessions_write_backs",
    "Write-backs after a job, by result (saved|unchanged|refused_logged_out|conflict_merged).",
    ["result"],
    registry=REGISTRY,
)
PROBES = Counter(
    "browser_sessions_probes",
    "Health probes by verdict (logged_in|logged_out|inconclusive|busy).",
    ["verdict"],
    registry=REGISTRY,
)
LEASE_WAIT = Histogram(
    "browser_sessions_lease_wait_seconds",
    "Time a job waited for the lease of a session whose site rotates tokens.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
SESSIONS = Gauge(
    "browser_sessions_sessions",
    "Saved sessions by status (sampled from Postgres by the probe scheduler).",
    ["status"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
for _result in WRITE_BACK_RESULTS:
    WRITE_BACKS.labels(_result)
for _verdict in PROBE_VERDICTS:
    PROBES.labels(_verdict)
for _status in SESSION_STATUSES:
    SESSIONS.labels(_status)


def set_sessions_by_status(counts: Mapping[str, int]) -> None:
    for status in SESSION_STATUSES:
        SESSIONS.labels(status).set(counts.get(status, 0))
