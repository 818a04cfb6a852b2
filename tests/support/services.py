"""The real services the tests run against, named by the environment. A missing service
skips its tests locally and fails the run when ``CI=true``."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from workers.dev.scratch import scratch_database

ADMIN_DB_URL = os.environ.get(
    "BROWSER_SESSIONS_TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("BROWSER_SESSIONS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: Names this run's database and queue prefix, so that runs never collide.
RUN_ID = secrets.token_hex(4)


def missing(what: str) -> None:
    """Skip locally, fail in CI: a missing service must never pass silently there."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is not available and CI=true", pytrace=False)
    pytest.skip(f"{what} is not available")


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def new_database(name: str, *, migrated: bool = True) -> AsyncIterator[str]:
    """A new database on the test server (migrated unless asked not to), dropped on exit."""
    async with scratch_database(ADMIN_DB_URL, name, migrated=migrated) as url:
        yield url
