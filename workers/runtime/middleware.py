"""The workers' own dramatiq middleware, and where it goes in dramatiq's order.

- :class:`JobSummary` writes each job's one ``job_finished`` line and its job metrics from
  ``before/after_process_message``, reading dramatiq's own retry decision (the ``Retries``
  middleware calls ``message.fail()`` when a failure is final).
- The resources middleware (:class:`~workers.runtime.resources.WorkerResources`) goes *after*
  ``AsyncIO``: dramatiq calls ``after_*`` hooks in reverse order, so its shutdown runs while
  the event loop still does.

Actors report what a summary needs through :func:`current_job`.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import AsyncIO, Middleware, Retries

from schema.errors import BrowserSessionsError
from schema.logs import get_logger
from workers.runtime import metrics

log = get_logger("browser_sessions.jobs")

#: Job outcome codes that count as a success.
OK_CODES = frozenset({"ok", "duplicate"})
INTERNAL_ERROR = "INTERNAL_ERROR"


@dataclass
class JobReport:
    """What an actor tells its job summary: the ids it works on, its outcome code (when it
    ends without raising) and extra summary fields."""

    actor: str
    attempt: int = 1
    code: str = "ok"
    ids: dict[str, Any] = field(
        default_factory=lambda: {"job_id": None, "task_id": None, "session_id": None}
    )
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def retries(self) -> int:
        """Earlier attempts of this message."""
        return self.attempt - 1

    def bind(self, **ids: Any) -> None:
        """Name what the job works on, in this summary and in every log line of the job."""
        self.ids.update(ids)
        structlog.contextvars.bind_contextvars(**ids)


_current: contextvars.ContextVar[JobReport | None] = contextvars.ContextVar(
    "browser_sessions_job", default=None
)


def current_job() -> JobReport:
    """The running job's report. The actor's coroutine runs in a copy of the worker thread's
    context, so it sees (and fills in) the same object :class:`JobSummary` reads back.
    Outside a worker (a direct call) a detached report that nobody reads."""
    report = _current.get()
    return report if report is not None else JobReport(actor="")


class JobSummary(Middleware):
    """One ``job_finished`` line per attempt; job metrics once, when the job ends for good.

    An attempt that dramatiq will retry logs ``outcome=retry`` and is not counted
    (``dramatiq_message_retries_total`` counts those). Must sit *before* ``Retries`` in the
    middleware list, so that its ``after_process_message`` runs after Retries has decided.
    """

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        report = JobReport(
            actor=message.actor_name, attempt=int(message.options.get("retries", 0)) + 1
        )
        _current.set(report)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            actor=report.actor, message_id=message.message_id, **report.ids
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        report = self._take(message)
        final = True
        if exception is not None:
            report.code = (
                exception.code if isinstance(exception, BrowserSessionsError) else INTERNAL_ERROR
            )
            final = bool(message.failed)
        self._finish(report, "ok" if report.code in OK_CODES else "error", final)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """A message dropped before its actor ran (e.g. too old): logged, not counted."""
        self._finish(self._take(message), "skipped", False)

    def _take(self, message: Any) -> JobReport:
        report = _current.get()
        _current.set(None)
        if report is None or report.actor != message.actor_name:  # skipped before our hook
            report = JobReport(actor=message.actor_name)
        return report

    @staticmethod
    def _finish(report: JobReport, outcome: str, final: bool) -> None:
        seconds = time.monotonic() - report.started
        ok = outcome == "ok"
        if final:
            metrics.record_job(report.actor, outcome, None if ok else report.code, seconds)
        log.info(
            "job_finished",
            **report.ids,
            outcome=outcome if (ok or final or outcome == "skipped") else "retry",
            error_code=None if ok or outcome == "skipped" else report.code,
            attempt=report.attempt,
            duration_ms=int(seconds * 1000),
            **report.extra,
        )
        structlog.contextvars.clear_contextvars()


def install_worker_middleware(broker: dramatiq.Broker, *, resources: Middleware) -> None:
    """Add the job summary (before ``Retries``) and the resources (after ``AsyncIO``)."""
    broker.add_middleware(JobSummary(), before=Retries)
    broker.add_middleware(resources, after=AsyncIO)
