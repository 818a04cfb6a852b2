"""The dramatiq actors. Thin: decode the payload, bind log context, call a service, map errors.

Run with ``browser-sessions worker`` (which runs dramatiq on this module).
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from schema.errors import BrowserSessionsError
from schema.jobs import BrowseJob, CaptureJob, ExpireJob, ImportJob
from schema.logs import configure_logging, get_logger
from schema.results import BrowseResult, store_result
from schema.settings import get_settings
from workers.broker import BROWSE_QUEUE, CAPTURE_QUEUE, EXPIRY_QUEUE, build_broker
from workers.browse import BrowseService
from workers.capture import CaptureService
from workers.expiry import ExpiryService
from workers.imports import ImportService
from workers.resources import WorkerResources

settings = get_settings()
configure_logging(level=settings.log_level, fmt=settings.log_format)
log = get_logger("browser_sessions.jobs")
resources = WorkerResources(settings)
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


async def _enqueue_expiry(job: ExpireJob) -> None:
    import asyncio

    message = expire.message(job.to_message())
    await asyncio.to_thread(broker.enqueue, message)


@dramatiq.actor(
    actor_name="browse",
    queue_name=settings.queue(BROWSE_QUEUE),
    max_retries=settings.browse_retries,
    time_limit=int(settings.navigation_timeout.total_seconds() * 1000 * 4 + 60_000),
)
async def browse(payload: dict[str, Any]) -> None:
    """Run one browse job and store its result."""
    started = time.monotonic()
    job = BrowseJob.from_message(payload)
    _bind("browse", job_id=job.job_id, task_id=job.task_id, session_id=job.session_id)
    retries = _retries()
    res = resources.get()
    assert res.pool is not None, "this worker does not consume the browse queue"
    service = BrowseService(
        db=res.db,
        pool=res.pool,
        store=res.store,
        audit=res.audit,
        guard=res.guard,
        on_expired=_enqueue_expiry,
    )
    outcome = "error"
    try:
        outcome = await service.run(
            job, attempt=retries + 1, final_attempt=retries >= settings.browse_retries
        )
    except BrowserSessionsError as err:
        outcome = err.code
        log.warning("job_retrying", error_code=err.code, attempt=retries + 1)
        raise
    except Exception as exc:
        outcome = "INTERNAL_ERROR"
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
    finally:
        log.info(
            "job_finished",
            outcome="ok" if outcome == "ok" else "error",
            error_code=None if outcome == "ok" else outcome,
            duration_ms=int((time.monotonic() - started) * 1000),
        )


@dramatiq.actor(actor_name="expire", queue_name=settings.queue(EXPIRY_QUEUE), max_retries=10)
async def expire(payload: dict[str, Any]) -> None:
    """Mark the session expired, fail the task, post one comment."""
    started = time.monotonic()
    job = ExpireJob.from_message(payload)
    _bind("expire", job_id=job.job_id, task_id=job.task_id, session_id=job.session_id)
    res = resources.get()
    posted = await ExpiryService(db=res.db, audit=res.audit).run(job)
    log.info(
        "job_finished",
        outcome="ok",
        comment_posted=posted,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


@dramatiq.actor(actor_name="import_state", queue_name=settings.queue(BROWSE_QUEUE), max_retries=0)
async def import_state(payload: dict[str, Any]) -> None:
    """Open a sealed storageState, verify it is logged in, store it encrypted."""
    started = time.monotonic()
    job = ImportJob.from_message(payload)
    _bind("import_state", job_id=job.capture_id, session_id=job.session_id)
    res = resources.get()
    assert res.pool is not None, "this worker does not consume the browse queue"
    state = await ImportService(
        db=res.db, pool=res.pool, store=res.store, provider=res.provider
    ).run(job)
    log.info(
        "job_finished",
        outcome="ok" if state.value == "saved" else "error",
        capture_state=state.value,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


@dramatiq.actor(
    actor_name="capture",
    queue_name=settings.queue(CAPTURE_QUEUE),
    max_retries=0,
    # Its own limit: the capture timeout plus room to save, never dramatiq's 10-minute default.
    time_limit=int(settings.capture_timeout.total_seconds() * 1000 + 120_000),
    notify_shutdown=True,
)
async def capture(payload: dict[str, Any]) -> None:
    """Hold a live-view browser for a login until save, cancel or timeout."""
    started = time.monotonic()
    job = CaptureJob.from_message(payload)
    _bind("capture", job_id=job.capture_id, session_id=job.session_id)
    res = resources.get()
    assert res.liveview is not None, "this worker does not consume the capture queue"
    final = await CaptureService(
        settings=settings,
        db=res.db,
        store=res.store,
        liveview=res.liveview,
        launch_browser=res.launch_browser,
    ).run(job)
    log.info(
        "job_finished",
        outcome="ok" if final.value == "saved" else "error",
        capture_state=final.value,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
