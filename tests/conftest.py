"""Shared fixtures: a fresh Postgres database per run, an isolated RabbitMQ queue prefix,
a Chromium. A missing service skips its tests locally and fails the run when ``CI=true``."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from schema.errors import ConfigError
from schema.migrate import migrate
from schema.settings import Settings

ADMIN_DB_URL = os.environ.get(
    "BROWSER_SESSIONS_TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("BROWSER_SESSIONS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RUN_ID = secrets.token_hex(4)


def missing(what: str) -> None:
    """Skip locally, fail in CI: a missing service must never pass silently there."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is not available and CI=true", pytrace=False)
    pytest.skip(f"{what} is not available")


def _reachable(url: str, default_port: int = 5432) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def scratch_database(name: str, *, migrated: bool = True) -> AsyncIterator[str]:
    """A new database on the test server (migrated unless asked not to), dropped on exit."""
    admin = await asyncpg.connect(ADMIN_DB_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_db(ADMIN_DB_URL, name)
    try:
        if migrated:
            await migrate(url)
        yield url
    finally:
        admin = await asyncpg.connect(ADMIN_DB_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A fresh, migrated database for this test run, dropped afterwards."""
    if not _reachable(ADMIN_DB_URL):
        missing("PostgreSQL")
    async with scratch_database(f"bs_test_{RUN_ID}") as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def queue_prefix() -> Iterator[str]:
    """An isolated RabbitMQ namespace: every queue of this run starts with this prefix."""
    if not _reachable(AMQP_URL, 5672):
        missing("RabbitMQ")
    prefix = f"bs-test-{RUN_ID}."
    yield prefix
    _delete_queues(prefix)


def _delete_queues(prefix: str) -> None:
    import pika

    try:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception:
        return
    try:
        channel = conn.channel()
        for base in ("browse", "capture", "expiry", "imports"):
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(f"{prefix}{base}{suffix}")
    finally:
        conn.close()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    from workers.browser.chromium import find_chromium

    try:
        return find_chromium(os.environ.get("BROWSER_SESSIONS_CHROMIUM_PATH", ""))
    except ConfigError:
        missing("Chromium")
        raise


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    path.chmod(0o700)
    return path


@pytest.fixture(scope="session")
def base_settings(
    database_url: str, queue_prefix: str, key_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings for this run; tests add ``allow_private_hosts`` for their local servers."""
    return Settings(
        database_url=database_url,
        amqp_url=AMQP_URL,
        queue_prefix=queue_prefix,
        key_dir=key_dir,
        log_format="json",
        audit_checkpoint_file=tmp_path_factory.mktemp("audit") / "checkpoints.jsonl",
    )
