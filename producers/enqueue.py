"""Send job messages to RabbitMQ without importing the workers (no Playwright here).

pika's ``send`` blocks, so the async API runs it in a thread, never on the event loop.
Every publish waits for the broker's confirm; a failed one is retried (dramatiq opens a
fresh connection), with a jittered backoff, for up to ``settings.enqueue_retry`` (a RabbitMQ
restart), then refused with ``SERVICE_UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from schema.errors import ServiceUnavailable
from schema.jobs import ACTOR_QUEUES
from schema.logs import get_logger
from schema.settings import Settings

log = get_logger(__name__)

FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0


class Enqueuer:
    """Builds dramatiq messages by actor name and sends them on the right queue."""

    def __init__(self, *, settings: Settings, broker: RabbitmqBroker | None = None) -> None:
        self._settings = settings
        self._broker = broker
        self._lock = threading.Lock()

    def _get_broker(self) -> RabbitmqBroker:
        with self._lock:
            if self._broker is None:
                self._broker = RabbitmqBroker(
                    url=self._settings.amqp_url, middleware=[], confirm_delivery=True
                )
            return self._broker

    def send(self, actor_name: str, payload: dict[str, Any], **options: Any) -> str:
        """Blocking send, confirmed by the broker; returns the message id.

        A redelivered publish (the confirm was lost, the retry sent it again) carries the
        same message id and job id, which every actor deduplicates.
        """
        message: Message[Any] = Message(
            queue_name=self._settings.queue(ACTOR_QUEUES[actor_name]),
            actor_name=actor_name,
            args=(payload,),
            kwargs={},
            options=options,
        )
        deadline = time.monotonic() + self._settings.enqueue_retry.total_seconds()
        backoff = FIRST_BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            try:
                self._get_broker().enqueue(message)
                if attempt > 1:
                    log.info("enqueue_recovered", actor=actor_name, attempts=attempt)
                return message.message_id
            except Exception as exc:  # dramatiq drops this thread's connection itself
                wait = random.uniform(backoff / 2, backoff)
                if time.monotonic() + wait > deadline:
                    raise ServiceUnavailable(
                        f"cannot enqueue on RabbitMQ after {attempt} attempts: {type(exc).__name__}"
                    ) from None
                log.warning("enqueue_retry", actor=actor_name, error=type(exc).__name__)
                time.sleep(wait)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def send_async(self, actor_name: str, payload: dict[str, Any], **options: Any) -> str:
        return await asyncio.to_thread(self.send, actor_name, payload, **options)

    def close(self) -> None:
        with self._lock:
            if self._broker is not None:
                self._broker.close()
                self._broker = None
