"""Which exceptions mean "a service is down" (Postgres, RabbitMQ, the network), as opposed
to a bug or bad input. Producers turn them into ``SERVICE_UNAVAILABLE``; workers retry them
on the infrastructure budget instead of the page retry limit."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import asyncpg
import pika.exceptions
from dramatiq.errors import BrokerError

from schema.errors import BrowserSessionsError, ServiceUnavailable

_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, ConnectionResetError, socket errors
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08: connection lost or refused
    asyncpg.OperatorInterventionError,  # class 57: shutting down, starting up
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,  # pool closing, connection closed mid-call
    pika.exceptions.AMQPError,
    BrokerError,
)


# OSErrors about files are local problems, not outages.
_LOCAL: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_outage(exc: BaseException) -> bool:
    """True for a database or broker error that a later attempt may not meet, also when a
    coded error was raised from one (an audit write that failed because Postgres is down)."""
    current: BaseException | None = exc
    for _ in range(5):  # the explicit cause chain, bounded
        if current is None:
            return False
        if isinstance(current, ServiceUnavailable):
            return True
        if not isinstance(current, BrowserSessionsError) and isinstance(current, _OUTAGES):
            return not isinstance(current, _LOCAL)
        current = current.__cause__
    return False


def describe(exc: BaseException) -> str:
    """A short description that names the exception type, never its arguments' secrets."""
    return f"a service is unavailable: {type(exc).__name__}"


@contextlib.contextmanager
def unavailable_as_service_error() -> Iterator[None]:
    """Re-raise a database or broker outage as ``ServiceUnavailable``."""
    try:
        yield
    except BrowserSessionsError:
        raise
    except Exception as exc:
        if is_outage(exc):
            raise ServiceUnavailable(describe(exc)) from exc
        raise


C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _mapped(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        with unavailable_as_service_error():
            return await fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def service_errors(cls: C) -> C:
    """Class decorator: every public coroutine method maps outages to ``ServiceUnavailable``."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _mapped(member))
    return cls
