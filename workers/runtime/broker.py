"""The dramatiq broker and its middleware, built once from the settings."""

from __future__ import annotations

from collections.abc import Callable
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
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from schema.errors import BrowserSessionsError
from schema.settings import Settings
from workers.runtime.middleware import install_worker_middleware

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


def standard_middleware() -> list[Any]:
    """dramatiq's middleware for a worker, in dramatiq's order (before ours is added)."""
    from workers.runtime.metrics import prometheus_middleware

    return [
        *prometheus_middleware(),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(min_backoff=250, max_backoff=5_000, retry_when=never_retry),
        CurrentMessage(),
        AsyncIO(),
    ]


def build_broker(settings: Settings, *, resources: Middleware | None = None) -> RabbitmqBroker:
    """The RabbitMQ broker, set as dramatiq's global one. With ``resources`` (a worker), also
    the job summary and the resources middleware, each in its place
    (:func:`~workers.runtime.middleware.install_worker_middleware`)."""
    broker = RabbitmqBroker(url=settings.amqp_url, middleware=standard_middleware())
    if resources is not None:
        install_worker_middleware(broker, resources=resources)
    dramatiq.set_broker(broker)
    return broker
