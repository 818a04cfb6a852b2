"""Throw-away databases and queues on the real services, for the tests, the demo and the
benchmarks: one way to make them and one way to clean them up."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schema.db import connect, other_database
from schema.jobs import QUEUES
from schema.migrate import migrate
from schema.settings import Settings

#: dramatiq's RabbitMQ broker declares each queue with a delay (.DQ) and a dead-letter (.XQ) queue.
DRAMATIQ_QUEUE_SUFFIXES = ("", ".DQ", ".XQ")


@dataclass(frozen=True)
class ScratchSystem:
    """Where a throw-away system lives: its database, broker, queue prefix, key directory."""

    database_url: str
    amqp_url: str
    queue_prefix: str
    key_dir: Path

    def settings(self, **changes: Any) -> Settings:
        """Settings on this system, logging JSON (which the harnesses read), plus ``changes``."""
        return Settings(**dataclasses.asdict(self), log_format="json", **changes)


def admin_url(database_url: str) -> str:
    """The server's ``postgres`` database, from which databases are created and dropped."""
    return other_database(database_url, "postgres")


async def create_database(
    admin: str, name: str, *, migrated: bool = True, replace: bool = False
) -> str:
    """Create database ``name`` through the admin URL (migrated unless asked not to;
    dropped first if ``replace``); returns its URL."""
    conn = await connect(admin)
    try:
        if replace:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = other_database(admin, name)
    if migrated:
        await migrate(url)
    return url


async def drop_database(admin: str, name: str) -> None:
    conn = await connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(
    admin: str, name: str | None = None, *, migrated: bool = True
) -> AsyncIterator[str]:
    """A new database (``bs_scratch_<random>`` unless named), migrated unless asked not to,
    dropped on exit; yields its URL."""
    name = name or f"bs_scratch_{secrets.token_hex(4)}"
    url = await create_database(admin, name, migrated=False)
    try:
        if migrated:
            await migrate(url)
        yield url
    finally:
        await drop_database(admin, name)


@contextlib.contextmanager
def scratch_queues(amqp_url: str, prefix: str) -> Iterator[str]:
    """Yields ``prefix``; on exit removes the queues under it (:func:`delete_queues`)."""
    try:
        yield prefix
    finally:
        delete_queues(amqp_url, prefix)


def delete_queues(amqp_url: str, prefix: str) -> None:
    """Remove the queues of one queue prefix (every logical queue, with dramatiq's delay and
    dead-letter queues) from RabbitMQ. Best effort: an unreachable broker is left alone."""
    with contextlib.suppress(Exception), _channel(amqp_url) as channel:
        for queue in QUEUES:
            for suffix in DRAMATIQ_QUEUE_SUFFIXES:
                channel.queue_delete(f"{prefix}{queue}{suffix}")


def purge_queue(amqp_url: str, name: str) -> None:
    """Drop the messages waiting on queue ``name`` (a test's worker starts on a clean
    queue, not on jobs that earlier tests left for a worker they never started). Best
    effort, like :func:`delete_queues`."""
    with contextlib.suppress(Exception), _channel(amqp_url) as channel:
        channel.queue_purge(name)


@contextlib.contextmanager
def _channel(amqp_url: str) -> Iterator[Any]:
    """A channel on a connection of its own, closed on exit."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        yield conn.channel()
    finally:
        conn.close()
