"""The dramatiq actors. Thin: decode the payload, name the job, call a service, map errors.

Each job's summary line and metrics come from :class:`~workers.runtime.middleware.JobSummary`.

Run with ``browser-sessions worker`` (which runs dramatiq on this module).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from schema.enums import CaptureState
from schema.errors import BrowserSessionsError, ServiceUnavailable
from schema.jobs import (
    BROWSE_QUEUE,
    CAPTURE_QUEUE,
    EXPIRY_QUEUE,
    BrowseJob,
    CaptureJob,
    ExpireJob,
    ImportJob,
    ProbeJob,
    RollbackJob,
)
from schema.logs import configure_logging
from schema.outages import describe, is_outage
from schema.results import store_result
from schema.settings import get_settings
from workers.jobs.browse import BrowseService, failure_of
from workers.jobs.capture import CaptureService
from workers.jobs.expiry import ExpiryService
from workers.jobs.imports import ImportService
from workers.jobs.keepalive import WriteBack
from workers.jobs.leases import Leases
from workers.jobs.probes import ProbeScheduler, ProbeService
from workers.jobs.rollback import RollbackService
from workers.runtime import metrics
from workers.runtime.broker import build_broker, never_retry, retry_transient
from workers.runtime.middleware import INTERNAL_ERROR, JobReport, current_job
from workers.runtime.resources import Resources, WorkerResources
from workers.runtime.retries import RequeueLater, will_retry

settings = get_settings()
configure_logging(level=settings.log_level, fmt=settings.log_format)


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
broker = build_broker(settings, resources=resources)


def _begin(**ids: Any) -> tuple[JobReport, Resources]:
    """Name what the job works on (for its summary and its log lines); the worker's resources."""
    report = current_job()
    report.bind(**ids)
    return report, resources.get()


async def _capture_code(db: Any, capture_id: str, state: CaptureState) -> str:
    """The job outcome code of a capture or an import that ended in ``state``."""
    if state in (CaptureState.SAVED, CaptureState.CANCELLED):
        return "ok"
    if state is CaptureState.TIMED_OUT:
        return "CAPTURE_TIMEOUT"
    code = await db.fetchval("SELECT error_code FROM captures WHERE id = $1", capture_id)
    return str(code or "INTERNAL_ERROR")


def _report_delivery(res: Resources) -> None:
    """Enqueue → stored result, from the message's own timestamp (retries included)."""
    message = CurrentMessage.get_current_message()
    if message is not None:
        res.events.result_delivered(message.message_timestamp)


BROWSE_RETRY = retry_transient(settings.browse_retries)
EXPIRE_RETRY = retry_transient(10)
FINAL_WRITE_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # ~8 s of retries for a final result row


async def _enqueue_expiry(job: ExpireJob) -> None:
    message = expire.message(job.to_message())
    await asyncio.to_thread(broker.enqueue, message)


async def _enqueue_probe(job: ProbeJob) -> None:
    message = probe.message(job.to_message())
    await asyncio.to_thread(broker.enqueue, message)


def _keepalive(res: Resources) -> tuple[Leases, WriteBack]:
    leases = Leases(res.db, ttl=settings.lease_ttl, on_wait=res.events.lease_waited)
    return leases, WriteBack(db=res.db, store=res.store, events=res.events)


@dramatiq.actor(
    actor_name="browse",
    queue_name=settings.queue(BROWSE_QUEUE),
    retry_when=BROWSE_RETRY,
    retry_outages=True,
    time_limit=int(settings.navigation_timeout.total_seconds() * 1000 * 4 + 60_000),
)
async def browse(payload: dict[str, Any]) -> None:
    """Run one browse job and store its result (a final failure too, always)."""
    report = current_job()
    job = BrowseJob.from_message(payload)
    report.bind(job_id=job.job_id, task_id=job.task_id, session_id=job.session_id)
    message = CurrentMessage.get_current_message()
    options = message.options if message is not None else {}

    def retry(exc: BaseException) -> bool:
        return will_retry(options, exc, retry_when=BROWSE_RETRY, budget=settings.infra_retry_budget)

    try:
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
        report.code = await service.run(job, attempt=report.attempt, retry=retry)
    except Exception as exc:
        if retry(exc):
            raise
        report.code = await _store_final_failure(job, exc, attempts=report.attempt)
        if report.code == INTERNAL_ERROR:
            raise  # a bug: logged with its traceback and dead-lettered, its result stored
        return
    if report.code != "duplicate":
        _report_delivery(res)


async def _store_final_failure(job: BrowseJob, exc: BaseException, *, attempts: int) -> str:
    """The result row of a job that failed for good; its code. The write is retried for a
    while; if the database stays gone, the message is requeued (never dead-lettered without
    a result)."""
    if isinstance(exc, BrowserSessionsError):
        code, text = exc.code, exc.message
    elif is_outage(exc):
        code, text = ServiceUnavailable.code, describe(exc)
    else:
        code, text = INTERNAL_ERROR, f"internal error: {type(exc).__name__}"
    failure = failure_of(job, code, text, attempts=attempts)
    for delay in FINAL_WRITE_BACKOFF_S:
        try:
            await store_result(resources.get().db, failure)
            return code
        except Exception as write_error:
            if not is_outage(write_error):
                raise
            await asyncio.sleep(delay)
    raise RequeueLater("the final result could not be stored: the database is unavailable")


@dramatiq.actor(
    actor_name="expire",
    queue_name=settings.queue(EXPIRY_QUEUE),
    retry_when=EXPIRE_RETRY,
    retry_outages=True,
)
async def expire(payload: dict[str, Any]) -> None:
    """Mark the session expired, fail the task, post one comment."""
    job = ExpireJob.from_message(payload)
    report, res = _begin(job_id=job.job_id, task_id=job.task_id, session_id=job.session_id)
    report.extra["comment_posted"] = await ExpiryService(
        db=res.db, audit=res.audit, events=res.events
    ).run(job)


@dramatiq.actor(
    actor_name="import_state",
    queue_name=settings.queue(BROWSE_QUEUE),
    retry_when=never_retry,
    retry_outages=True,
)
async def import_state(payload: dict[str, Any]) -> None:
    """Open a sealed storageState, verify it is logged in, store it encrypted."""
    job = ImportJob.from_message(payload)
    report, res = _begin(job_id=job.capture_id, session_id=job.session_id)
    assert res.pool is not None, "this worker does not consume the browse queue"
    state = await ImportService(
        db=res.db, pool=res.pool, store=res.store, provider=res.provider, events=res.events
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
    job = CaptureJob.from_message(payload)
    report, res = _begin(job_id=job.capture_id, session_id=job.session_id)
    assert res.liveview is not None, "this worker does not consume the capture queue"
    final = await CaptureService(
        settings=settings,
        db=res.db,
        store=res.store,
        liveview=res.liveview,
        launch_browser=res.launch_browser,
        events=res.events,
    ).run(job)
    report.code = await _capture_code(res.db, job.capture_id, final)
    report.extra["capture_state"] = final.value


PROBE_RETRY = retry_transient(3)


@dramatiq.actor(
    actor_name="probe",
    queue_name=settings.queue(BROWSE_QUEUE),
    retry_when=PROBE_RETRY,
    retry_outages=True,
    time_limit=int(settings.navigation_timeout.total_seconds() * 1000 * 4 + 60_000),
)
async def probe(payload: dict[str, Any]) -> None:
    """Open a session's start URL: keep it alive (write-back) or find it expired."""
    job = ProbeJob.from_message(payload)
    report, res = _begin(job_id=job.probe_id, session_id=job.session_id)
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
        events=res.events,
        on_expired=res.events.session_expired,
    ).run(job)


ROLLBACK_RETRY = retry_transient(3)


@dramatiq.actor(
    actor_name="rollback",
    queue_name=settings.queue(EXPIRY_QUEUE),
    retry_when=ROLLBACK_RETRY,
    retry_outages=True,
)
async def rollback(payload: dict[str, Any]) -> None:
    """Re-encrypt a kept version of a session as its new current version."""
    job = RollbackJob.from_message(payload)
    report, res = _begin(job_id=job.request_id, session_id=job.session_id)
    report.extra["version"] = await RollbackService(db=res.db, store=res.store).run(job)
