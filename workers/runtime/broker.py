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
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from schema.errors import BrowserSessionsError
from schema.settings import Settings

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


def build_broker(settings: Settings, *, extra: list[Any] | None = None) -> RabbitmqBroker:
    from workers.runtime.metrics import prometheus_middleware

    middleware: list[Any] = [
        *prometheus_middleware(),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(min_backoff=250, max_backoff=5_000, retry_when=never_retry),
        CurrentMessage(),
        AsyncIO(),
        *(extra or []),
    ]
    broker = RabbitmqBroker(url=settings.amqp_url, middleware=middleware)
    dramatiq.set_broker(broker)
    return broker
