"""The dramatiq broker and its middleware, built once from the settings."""

from __future__ import annotations

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

BROWSE_QUEUE = "browse"
CAPTURE_QUEUE = "capture"
EXPIRY_QUEUE = "expiry"
QUEUES = (BROWSE_QUEUE, CAPTURE_QUEUE, EXPIRY_QUEUE)


def should_retry(retries: int, exc: BaseException) -> bool:
    """Only transient failures retry; authorization, expiry and bad input never do."""
    if isinstance(exc, BrowserSessionsError):
        return exc.retryable and retries < 3
    return retries < 3


def build_broker(settings: Settings, *, extra: list[Any] | None = None) -> RabbitmqBroker:
    middleware: list[Any] = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(min_backoff=250, max_backoff=5_000, retry_when=should_retry),
        CurrentMessage(),
        AsyncIO(),
        *(extra or []),
    ]
    broker = RabbitmqBroker(url=settings.amqp_url, middleware=middleware)
    dramatiq.set_broker(broker)
    return broker
