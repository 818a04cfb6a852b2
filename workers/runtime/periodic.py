"""Run a small synchronous call every so often on the running loop, while a block runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from schema.logs import get_logger

log = get_logger(__name__)


@contextlib.asynccontextmanager
async def every(
    interval: timedelta, call: Callable[[], object], *, failure_event: str = "periodic_call_failed"
) -> AsyncIterator[None]:
    """Calls ``call`` at once and then every ``interval`` until the block ends. A failing
    call is logged as ``failure_event`` (the exception's type only) and the next one still
    happens."""
    seconds = interval.total_seconds()

    async def run() -> None:
        while True:
            try:
                call()
            except Exception as exc:
                log.warning(failure_event, error=type(exc).__name__)
            await asyncio.sleep(seconds)

    task = asyncio.get_running_loop().create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
