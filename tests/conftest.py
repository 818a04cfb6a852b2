"""Shared fixtures: a fresh Postgres database per run, an isolated RabbitMQ queue prefix,
a Chromium. A missing service skips its tests locally and fails the run when ``CI=true``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from schema.errors import ConfigError
from schema.settings import Settings
from tests.support.services import (
    ADMIN_DB_URL,
    AMQP_URL,
    RUN_ID,
    missing,
    new_database,
    reachable,
)
from workers.dev.scratch import ScratchSystem, scratch_queues


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A fresh, migrated database for this test run, dropped afterwards."""
    if not reachable(ADMIN_DB_URL, 5432):
        missing("PostgreSQL")
    async with new_database(f"bs_test_{RUN_ID}") as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def queue_prefix() -> Iterator[str]:
    """An isolated RabbitMQ namespace: every queue of this run starts with this prefix."""
    if not reachable(AMQP_URL, 5672):
        missing("RabbitMQ")
    with scratch_queues(AMQP_URL, f"bs-test-{RUN_ID}.") as prefix:
        yield prefix


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
    system = ScratchSystem(database_url, AMQP_URL, queue_prefix, key_dir)
    return system.settings(
        audit_checkpoint_file=tmp_path_factory.mktemp("audit") / "checkpoints.jsonl"
    )
