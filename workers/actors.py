"""The dramatiq actors. Thin: decode the payload, name the job, call a service, map errors.

Each job's summary line and metrics come from :class:`~workers.runtime.middleware.JobSummary`.

Run with ``browser-sessions worker`` (which runs dramatiq on this module).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

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


JobRun = Callable[[Any, JobReport], Awaitable[None]]


def _job_actor(
    job_type: Any, queue: str, *, id_field: str = "job_id", **options: Any
) -> Callable[[JobRun], dramatiq.Actor[[dict[str, Any]], None]]:
    """An actor named for ``job_type`` (its ``kind``) on ``queue``, with dramatiq ``options``.
    It decodes the payload, names the job (for its summary and its log lines: its
    ``id_field`` as ``job_id``, its task if it has one, its session), then runs the decorated
    function with the job and the job's report."""

    def decorate(run: JobRun) -> dramatiq.Actor[[dict[str, Any]], None]:
        @functools.wraps(run)
        async def actor(payload: dict[str, Any]) -> None:
            job = job_type.from_message(payload)
            ids = {"job_id": getattr(job, id_field)}
            if hasattr(job, "task_id"):
                ids["task_id"] = job.task_id
            report = current_job()
            report.bind(**ids, session_id=job.session_id)
            await run(job, report)

        name, queue_name = job_type.kind, settings.queue(queue)
        return dramatiq.actor(actor_name=name, queue_name=queue_name, **options)(actor)

    return decorate


Service = TypeVar("Service")


def _service(cls: Callable[..., Service], res: Resources, **own: Any) -> Service:
    """A job service (a dataclass) with each field that names a worker resource (``db``,
    ``pool``, ``store``, ``audit``, ``events`` ...) set to that resource; ``own`` sets the
    others (and may override one)."""
    names = (f.name for f in dataclasses.fields(cast(Any, cls)))
    return cls(**{name: getattr(res, name) for name in names if hasattr(res, name)} | own)


def _browse_resources() -> Resources:
    res = resources.get()
    assert res.pool is not None, "this worker does not consume the browse queue"
    return res


async def _report_capture(report: JobReport, db: Any, capture_id: str, state: CaptureState) -> None:
    """The job outcome code of a capture or an import that ended in ``state``, and the state."""
    if state in (CaptureState.SAVED, CaptureState.CANCELLED):
        report.code = "ok"
    elif state is CaptureState.TIMED_OUT:
        report.code = "CAPTURE_TIMEOUT"
    else:
        code = await db.fetchval("SELECT error_code FROM captures WHERE id = $1", capture_id)
        report.code = str(code or "INTERNAL_ERROR")
    report.extra["capture_state"] = state.value


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


def _keeping(
    cls: Callable[..., Service], res: Resources, *, write_back: bool, **own: Any
) -> Service:
    """A :func:`_service` that holds sessions' leases and writes back (unless not
    ``write_back``)."""
    leases = Leases(res.db, on_wait=res.events.lease_waited)
    keeper = _service(WriteBack, res) if write_back else None
    return _service(cls, res, leases=leases, write_back=keeper, **own)


BROWSE_TIME_LIMIT_MS = int(settings.navigation_timeout.total_seconds() * 1000 * 4 + 60_000)
# A browse ends itself this long before dramatiq's time limit would kill it, so that even
# its last attempt stores a result (the final write's own retries take up to ~8 s).
BROWSE_BUDGET = timedelta(milliseconds=BROWSE_TIME_LIMIT_MS) - timedelta(seconds=30)


@_job_actor(
    BrowseJob,
    BROWSE_QUEUE,
    retry_when=BROWSE_RETRY,
    retry_outages=True,
    time_limit=BROWSE_TIME_LIMIT_MS,
)
async def browse(job: BrowseJob, report: JobReport) -> None:
    """Run one browse job and store its result (a final failure too, always)."""
    message = CurrentMessage.get_current_message()
    options = message.options if message is not None else {}

    def retry(exc: BaseException) -> bool:
        return will_retry(options, exc, retry_when=BROWSE_RETRY, budget=settings.infra_retry_budget)

    try:
        res = _browse_resources()
        service = _keeping(
            BrowseService,
            res,
            write_back=settings.write_back,
            on_expired=_enqueue_expiry,
            lease_wait=settings.lease_ttl,
            budget=BROWSE_BUDGET,
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


@_job_actor(ExpireJob, EXPIRY_QUEUE, retry_when=EXPIRE_RETRY, retry_outages=True)
async def expire(job: ExpireJob, report: JobReport) -> None:
    """Mark the session expired, fail the task, post one comment."""
    report.extra["comment_posted"] = await _service(ExpiryService, resources.get()).run(job)


@_job_actor(
    ImportJob, BROWSE_QUEUE, id_field="capture_id", retry_when=never_retry, retry_outages=True
)
async def import_state(job: ImportJob, report: JobReport) -> None:
    """Open a sealed storageState, verify it is logged in, store it encrypted."""
    res = _browse_resources()
    state = await _service(ImportService, res).run(job)
    await _report_capture(report, res.db, job.capture_id, state)


@_job_actor(
    CaptureJob,
    CAPTURE_QUEUE,
    id_field="capture_id",
    retry_when=never_retry,
    retry_outages=True,  # waits out an outage before its window opens; after, ends interrupted
    # Its own limit: the capture timeout plus room to save, never dramatiq's 10-minute default.
    time_limit=int(settings.capture_timeout.total_seconds() * 1000 + 120_000),
    notify_shutdown=True,
)
async def capture(job: CaptureJob, report: JobReport) -> None:
    """Hold a live-view browser for a login until save, cancel or timeout."""
    res = resources.get()
    assert res.liveview is not None, "this worker does not consume the capture queue"
    final = await _service(CaptureService, res).run(job)
    await _report_capture(report, res.db, job.capture_id, final)


PROBE_RETRY = retry_transient(3)


@_job_actor(
    ProbeJob,
    BROWSE_QUEUE,
    id_field="probe_id",
    retry_when=PROBE_RETRY,
    retry_outages=True,
    time_limit=BROWSE_TIME_LIMIT_MS,
)
async def probe(job: ProbeJob, report: JobReport) -> None:
    """Open a session's start URL: keep it alive (write-back) or find it expired."""
    res = _browse_resources()
    service = _keeping(
        ProbeService,
        res,
        write_back=True,
        interval=settings.probe_interval,
        on_expired=res.events.session_expired,
    )
    report.extra["verdict"] = await service.run(job)


ROLLBACK_RETRY = retry_transient(3)


@_job_actor(
    RollbackJob, EXPIRY_QUEUE, id_field="request_id", retry_when=ROLLBACK_RETRY, retry_outages=True
)
async def rollback(job: RollbackJob, report: JobReport) -> None:
    """Re-encrypt a kept version of a session as its new current version."""
    report.extra["version"] = await _service(RollbackService, resources.get()).run(job)
