"""What a database role must not do."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg
import pytest


async def assert_refused(conn: Any, statements: Iterable[str], *args: Any) -> None:
    """Each statement (with ``args``) fails on ``conn`` for want of privilege."""
    for statement in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement, *args)
