"""A size cap on incoming messages: an oversized message is dead-lettered, never run.

Job messages carry ids, a URL and options (a few hundred bytes); only an import carries a
sealed state, so its cap follows ``max_state_bytes`` instead. A message over its cap is
failed before any actor sees it: dramatiq nacks it, RabbitMQ moves it to ``<queue>.XQ``,
one ``message_refused`` log line names it and ``browser_sessions_messages_refused_total``
counts it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dramatiq.middleware import Middleware, SkipMessage

from schema.logs import get_logger
from schema.settings import Settings

log = get_logger(__name__)

#: Base64 grows a sealed state by 4/3; the rest of the message fits in the general cap.
SEALED_ACTORS = frozenset({"import_state"})


def message_cap(settings: Settings, actor_name: str) -> int:
    """The largest encoded message accepted for ``actor_name``, in bytes."""
    if actor_name in SEALED_ACTORS:
        return settings.max_state_bytes * 4 // 3 + settings.max_message_bytes
    return settings.max_message_bytes


class MessageSizeLimit(Middleware):
    """Dead-letters a message larger than its actor's cap (see :func:`message_cap`)."""

    def __init__(
        self, settings: Settings, *, on_refused: Callable[[str, str], None] = lambda a, r: None
    ) -> None:
        self._settings = settings
        self._on_refused = on_refused

    def before_process_message(self, broker: Any, message: Any) -> None:
        """Fail (so nack, so dead-letter) a message over its cap before it runs."""
        size = len(message.encode())
        cap = message_cap(self._settings, message.actor_name)
        if size <= cap:
            return
        log.error(
            "message_refused",
            reason="too_large",
            actor=message.actor_name,
            message_id=message.message_id,
            size_bytes=size,
            cap_bytes=cap,
        )
        self._on_refused(message.actor_name, "too_large")
        message.fail()
        raise SkipMessage(f"message of {size} bytes is over the {cap}-byte cap")
