"""The dramatiq actors. Thin: decode the payload, bind log context, call a service, map errors.

Run with ``browser-sessions worker`` (which runs dramatiq on this module).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from schema.enums import CaptureState
from schema.errors import BrowserSessionsError
from schema.jobs import (
    BROWSE_QUEUE,
    CAPTURE_QUEUE,
    EXPIRY_QUEUE,
    BrowseJob,
    CaptureJob,
    ExpireJob,
    ImportJob,
    ProbeJob,
)
from schema.logs import configure_logging, get_logger
from schema.results import BrowseResult, store_result
from schema.settings import get_settings
from workers.jobs.browse import BrowseService
from workers.jobs.capture import CaptureService
from workers.jobs.expiry import ExpiryService
from workers.jobs.imports import ImportService
from workers.jobs.keepalive import WriteBack
from workers.jobs.leases import Leases
from workers.jobs.probes import ProbeScheduler, ProbeService
from workers.runtime import metrics
from workers.runtime.broker import (
    RetryWhen,
    build_broker,
    never_retry,
    retry_transient,
)
from workers.runtime.resources import Resources, WorkerResources

settings = get_settings()
configure_logging(level=settings.log_level, fmt=settings.log_format)
log = get_logger("browser_sessions.jobs")
ALIVE_EVENTS = metrics.AliveMetrics()


def _probe_scheduler(res: Resources) -> contextlib.AbstractAsyncContextManager[Any]:
    """The probe scheduler, inside every browse worker process (``PROBE_SCHEDULER``)."""
    if not settings.probe_scheduler:
        return contextlib.nullcontext()
    return ProbeScheduler(
        db=res.db,
        enqueue=_enqueue_probe,
        tick=settings.probe_tick,
        expiring_soon=settings.expiring_soon,
        on_counts=metrics.set_sessions_by_status,
    ).running()


resources = WorkerResources(settings, background=_probe_scheduler)
broker = build_broker(settings, extra=[resources])

# Move our resources ahead of AsyncIO so they close while its loop still runs.
broker.middleware.remove(resources)
broker.middleware.insert(
    next(i for i, m in enumerate(broker.middleware) if type(m).__name__ == "AsyncIO"), resources
)


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _bind(actor: str, **ids: Any) -> None:
    message = CurrentMessage.get_current_message()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        actor=actor, message_id=message.message_id if message else None, **ids
    )


@dataclass
class _Job:
    """What an actor reports about its job: its outcome code and extra summary fields."""

    code: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _job(actor: str, retry_when: RetryWhen) -> Iterator[_Job]:
    """Binds the log context; at the end writes the job's one summary line and its metrics.

    Counted once, when the job ends for good: an attempt that will be retried logs
    ``outcome=retry`` and is not counted (dramatiq_message_retries_total counts those).
    """
    started = time.monotonic()
    _bind(actor, job_id=None, task_id=None, session_id=None)
    job = _Job()
    final = True
    try:
        yield job
    except BaseException as exc:
        job.code = exc.code if isinstance(exc, BrowserSessionsError) else "INTERNAL_ERROR"
        final = isinstance(exc, Exception) and not retry_when(_retries(), exc)
        raise
    finally:
        seconds = time.monotonic() - started
        ok = job.code in ("ok", "duplicate")
        if final:
            metrics.record_job(actor, "ok" if ok else "error", None if ok else job.code, seconds)
        log.info(
            "job_finished",
            outcome="ok" if ok else ("error" if final else "retry"),
            error_code=None if ok else job.code,
            attempt=_retries() + 1,
            duration_ms=int(seconds * 1000),
            **job.extra,
        )


async def _capture_code(db: Any, capture_id: str, state: CaptureState) -> str:
    """The job outcome code of a capture or an import that ended in ``state``."""
    if state in (CaptureState.SAVED, CaptureState.CANCELLED):
        return "ok"
    if state is CaptureState.TIMED_OUT:
        return "CAPTURE_TIMEOUT"
    code = await db.fetchval("SELECT error_code FROM captures WHERE id = $1", capture_id)
    return str(code or "INTERNAL_ERROR")


def _record_delivery() -> None:
    """Enqueue → stored result, from the message's own timestamp (retries included)."""
    message = CurrentMessage.get_current_message()
    if message is not None:
        metrics.record_result_delivery(message.message_timestamp)


BROWSE_RETRY = retry_transient(settings.browse_retries)
EXPIRE_RETRY = retry_transient(10)


async def _enqueue_expiry(job: ExpireJob) -> None:
    message = expire.message(job.to_message())
    await asyncio.to_thread(broker.enqueue, message)


async def _enqueue_probe(job: ProbeJob) -> None:
    message = probe.message(job.to_message())
    await asyncio.to_thread(broker.enqueue, message)


def _keepalive(res: Resources) -> tuple[Leases, WriteBack]:
    leases = Leases(res.db, ttl=settings.lease_ttl, on_wait=ALIVE_EVENTS.lease_wait)
    return leases, WriteBack(db=res.db, store=res.store, events=ALIVE_EVENTS)


@dramatiq.actor(
    actor_name="browse",
    queue_name=settings.queue(BROWSE_QUEUE),
    retry_when=BROWSE_RETRY,
    time_limit=int(settings.navigation_timeout.total_seconds() * 1000 * 4 + 60_000),
)
async def browse(payload: dict[str, Any]) -> None:
    """Run one browse job and store its result."""
    with _job("browse", BROWSE_RETRY) as report:
        job = BrowseJob.from_message(payload)
        _bind("browse", job_id=job.job_id, task_id=job.task_id, session_id=job.session_id)
        retries = _retries()
        res = resources.get()
        assert res.pool is not None, "this worker does not consume the browse queue"
        leases, write_back = _keepalive(res)
        service = BrowseService(
            db=res.db,
            pool=res.pool,
            store=res.store,
            audit=res.audit,
            guard=res.guard,
            on_expired=_enqueue_expiry,
            leases=leases,
            write_back=write_back if settings.write_back else None,
            lease_wait=settings.lease_ttl,
        )
        try:
            report.code = await service.run(
                job, attempt=retries + 1, final_attempt=retries >= settings.browse_retries
            )
        except BrowserSessionsError:
            raise
        except Exception as exc:
            if retries >= settings.browse_retries:
                await store_result(
                    res.db,
                    BrowseResult.failure(
                        job_id=job.job_id,
                        task_id=job.task_id,
                        owner_id=job.owner_id,
                        session_id=job.session_id,
                        code="INTERNAL_ERROR",
                        message=f"internal error: {type(exc).__name__}",
                        attempts=retries + 1,
                    ),
                )
            raise
        if report.code != "duplicate":
            _record_delivery()


@dramatiq.actor(
    actor_name="expire", queue_name=settings.queue(EXPIRY_QUEUE), retry_when=EXPIRE_RETRY
)
async def expire(payload: dict[str, Any]) -> None:
    """Mark the session expired, fail the task, post one comment."""
    with _job("expire", EXPIRE_RETRY) as report:
        job = ExpireJob.from_message(payload)
        _bind("expire", job_id=job.job_id, task_id=job.task_id, session_id=job.session_id)
        res = resources.get()
        report.extra["comment_posted"] = await ExpiryService(db=res.db, audit=res.audit).run(job)


@dramatiq.actor(
    actor_name="import_state", queue_name=settings.queue(BROWSE_QUEUE), retry_when=never_retry
)
async def import_state(payload: dict[str, Any]) -> None:
    """Open a sealed storageState, verify it is logged in, store it encrypted."""
    with _job("import_state", never_retry) as report:
        job = ImportJob.from_message(payload)
        _bind("import_state", job_id=job.capture_id, task_id=None, session_id=job.session_id)
        res = resources.get()
        assert res.pool is not None, "this worker does not consume the browse queue"
        state = await ImportService(
            db=res.db, pool=res.pool, store=res.store, provider=res.provider
        ).run(job)
        report.code = await _capture_code(res.db, job.capture_id, state)
        report.extra["capture_state"] = state.value


@dramatiq.actor(
    actor_name="capture",
    queue_name=settings.queue(CAPTURE_QUEUE),
    retry_when=never_retry,
    # Its own limit: the capture timeout plus room to save, never dramatiq's 10-minute default.
    time_limit=int(settings.capture_timeout.total_seconds() * 1000 + 120_000),
    notify_shutdown=True,
)
async def capture(payload: dict[str, Any]) -> None:
    """Hold a live-view browser for a login until save, cancel or timeout."""
    with _job("capture", never_retry) as report:
        job = CaptureJob.from_message(payload)
        _bind("capture", job_id=job.capture_id, task_id=None, session_id=job.session_id)
        res = resources.get()
        assert res.liveview is not None, "this worker does not consume the capture queue"
        final = await CaptureService(
            settings=settings,
            db=res.db,
            store=res.store,
            liveview=res.liveview,
            launch_browser=res.launch_browser,
        ).run(job)
        report.code = await _capture_code(res.db, job.capture_id, final)
        report.extra["capture_state"] = final.value


PROBE_RETRY = retry_transient(3)


@dramatiq.actor(
    actor_name="probe",
    queue_name=settings.queue(BROWSE_QUEUE),
    retry_when=PROBE_RETRY,
    time_limit=int(settings.navigation_timeout.total_seconds() * 1000 * 4 + 60_000),
)
async def probe(payload: dict[str, Any]) -> None:
    """Open a session's start URL: keep it alive (write-back) or find it expired."""
    with _job("probe", PROBE_RETRY) as report:
        job = ProbeJob.from_message(payload)
        _bind("probe", job_id=job.probe_id, task_id=None, session_id=job.session_id)
        res = resources.get()
        assert res.pool is not None, "this worker does not consume the browse queue"
        leases, write_back = _keepalive(res)
        report.extra["verdict"] = await ProbeService(
            db=res.db,
            pool=res.pool,
            store=res.store,
            audit=res.audit,
            leases=leases,
            write_back=write_back,
            interval=settings.probe_interval,
            events=ALIVE_EVENTS,
            on_expired=metrics.record_session_expired,
        ).run(job)
