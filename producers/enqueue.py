"""Send job messages to RabbitMQ without importing the workers (no Playwright here).

pika's ``send`` blocks, so the async API runs it in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from schema.errors import ServiceUnavailable
from schema.jobs import ACTOR_QUEUES
from schema.settings import Settings


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
        """Blocking send; returns the message id."""
        message: Message[Any] = Message(
            queue_name=self._settings.queue(ACTOR_QUEUES[actor_name]),
            actor_name=actor_name,
            args=(payload,),
            kwargs={},
            options=options,
        )
        try:
            self._get_broker().enqueue(message)
        except Exception as exc:
            raise ServiceUnavailable(f"cannot enqueue on RabbitMQ: {type(exc).__name__}") from None
        return message.message_id

    async def send_async(self, actor_name: str, payload: dict[str, Any], **options: Any) -> str:
        return await asyncio.to_thread(self.send, actor_name, payload, **options)

    def close(self) -> None:
        with self._lock:
            if self._broker is not None:
                self._broker.close()
                self._broker = None
