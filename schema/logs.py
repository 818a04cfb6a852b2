"""structlog configured once: console on a terminal, JSON otherwise, secrets redacted.

dramatiq's and pika's stdlib logs go through the same pipeline.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from schema.redact import redact_processor, scrub_text

_configured = False


class _ScrubbedRenderer:
    """Wraps the final renderer and scrubs its output (tracebacks included)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, logger: Any, method: str, event_dict: Any) -> str:
        return scrub_text(str(self.inner(logger, method, event_dict)))


def configure_logging(
    *, level: str = "INFO", fmt: str = "auto", stream: Any = None, force: bool = False
) -> None:
    """Configure structlog and the stdlib root logger (idempotent unless ``force``)."""
    global _configured
    if _configured and not force:
        return
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=not force,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_processor,  # type: ignore[list-item]
            _ScrubbedRenderer(renderer),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pika").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("asyncio").setLevel(max(logging.WARNING, root.level))
    _configured = True


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
