"""The job summary middleware: one ``job_finished`` line per attempt, metrics once per job,
from dramatiq's own retry decision (a stub broker and a real dramatiq worker)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

from schema.errors import NavigationFailed
from schema.logs import configure_logging
from workers.runtime import metrics
from workers.runtime.broker import retry_transient, standard_middleware
from workers.runtime.middleware import current_job, install_worker_middleware


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream, force=True)
    yield stream
    configure_logging(fmt="json", force=True)


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = StubBroker(middleware=standard_middleware())
    install_worker_middleware(stub, resources=Middleware())
    stub.emit_after("process_boot")
    dramatiq.set_broker(stub)
    yield stub
    stub.close()


def _run(broker: StubBroker, actor: Any, payload: dict[str, Any]) -> None:
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        actor.send(payload)
        broker.join(actor.queue_name, fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def _summaries(stream: io.StringIO, actor: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == "job_finished" and e.get("actor") == actor]


def _jobs(actor: str, outcome: str, code: str) -> float:
    return float(metrics.JOBS.labels(actor, outcome, code)._value.get())


def test_a_retried_failure_logs_retry_then_error_and_counts_once(
    broker: StubBroker, log_stream: io.StringIO
) -> None:
    @dramatiq.actor(
        actor_name="t_flaky", broker=broker, retry_when=retry_transient(1), min_backoff=10
    )
    async def flaky(payload: dict[str, Any]) -> None:
        current_job().bind(job_id=payload["job_id"], task_id="task-1")
        raise NavigationFailed("the site did not answer")

    _run(broker, flaky, {"job_id": "job_1"})

    lines = _summaries(log_stream, "t_flaky")
    assert [(e["outcome"], e["attempt"]) for e in lines] == [("retry", 1), ("error", 2)]
    assert {e["error_code"] for e in lines} == {"NAVIGATION_FAILED"}
    assert {e["job_id"] for e in lines} == {"job_1"} and lines[0]["task_id"] == "task-1"
    assert lines[0]["message_id"] == lines[1]["message_id"]
    assert _jobs("t_flaky", "error", "NAVIGATION_FAILED") == 1


def test_a_reported_outcome_and_extra_fields_reach_the_summary(
    broker: StubBroker, log_stream: io.StringIO
) -> None:
    @dramatiq.actor(actor_name="t_reported", broker=broker)
    async def reported(payload: dict[str, Any]) -> None:
        report = current_job()
        report.bind(job_id=payload["job_id"], session_id="ses_1")
        report.code = payload["code"]
        report.extra["capture_state"] = "timed_out"

    _run(broker, reported, {"job_id": "job_ok", "code": "duplicate"})
    _run(broker, reported, {"job_id": "job_to", "code": "CAPTURE_TIMEOUT"})

    ok, timed_out = _summaries(log_stream, "t_reported")
    assert ok["outcome"] == "ok" and ok["error_code"] is None and ok["job_id"] == "job_ok"
    assert ok["session_id"] == "ses_1" and ok["capture_state"] == "timed_out"
    assert timed_out["outcome"] == "error" and timed_out["error_code"] == "CAPTURE_TIMEOUT"
    assert _jobs("t_reported", "ok", "") == 1
    assert _jobs("t_reported", "error", "CAPTURE_TIMEOUT") == 1


def test_an_unexpected_exception_is_an_internal_error(
    broker: StubBroker, log_stream: io.StringIO
) -> None:
    @dramatiq.actor(actor_name="t_broken", broker=broker, max_retries=0)
    async def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    _run(broker, broken, {})

    (line,) = _summaries(log_stream, "t_broken")
    assert line["outcome"] == "error" and line["error_code"] == "INTERNAL_ERROR"
    assert _jobs("t_broken", "error", "INTERNAL_ERROR") == 1
