"""The dramatiq broker and its middleware, built once from the settings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)

from schema.errors import BrowserSessionsError
from schema.settings import Settings
from workers.runtime.limits import MessageSizeLimit
from workers.runtime.middleware import install_worker_middleware
from workers.runtime.retries import JobRetries

RetryWhen = Callable[[int, BaseException], bool]


def retry_transient(limit: int) -> RetryWhen:
    """A ``retry_when`` for an actor: transient failures (retryable codes, or unexpected
    errors such as a dropped connection) retry up to ``limit`` times; authorization,
    expiry and bad input never do. Set per actor: dramatiq's ``retry_when`` takes
    precedence over ``max_retries``."""

    def retry_when(retries: int, exc: BaseException) -> bool:
        transient = exc.retryable if isinstance(exc, BrowserSessionsError) else True
        return transient and retries < limit

    return retry_when


def never_retry(_retries: int, _exc: BaseException) -> bool:
    """For captures and imports: a person is waiting on them; a retry would not help."""
    return False


def standard_middleware(*, outage_budget: timedelta = timedelta(seconds=120)) -> list[Any]:
    """dramatiq's middleware for a worker, in dramatiq's order (before ours is added), with
    Retries extended by the outage budget (:class:`~workers.runtime.retries.JobRetries`)."""
    from workers.runtime.metrics import prometheus_middleware

    return [
        *prometheus_middleware(),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        JobRetries(
            outage_budget=outage_budget,
            min_backoff=250,
            max_backoff=5_000,
            retry_when=never_retry,
        ),
        CurrentMessage(),
        AsyncIO(),
    ]


def build_broker(settings: Settings, *, resources: Middleware | None = None) -> RabbitmqBroker:
    """The RabbitMQ broker, set as dramatiq's global one. With ``resources`` (a worker), also
    the job summary and the resources middleware, each in its place
    (:func:`~workers.runtime.middleware.install_worker_middleware`), and the message size
    cap right after ``AgeLimit`` (both drop a message before it runs)."""
    broker = RabbitmqBroker(
        url=settings.amqp_url,
        middleware=standard_middleware(outage_budget=settings.infra_retry_budget),
    )
    if resources is not None:
        from workers.runtime.metrics import record_message_refused

        install_worker_middleware(broker, resources=resources)
        broker.add_middleware(
            MessageSizeLimit(settings, on_refused=record_message_refused), after=AgeLimit
        )
    dramatiq.set_broker(broker)
    return broker
