"""The fixture site's test users: their password and the login-state fixture's type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from workers.dev.processes import free_port

PASSWORD = "correct horse"

#: ``await login_state("alice", indexed_db=True)``: a logged-in Playwright storage state.
LoginState = Callable[..., Awaitable[dict[str, Any]]]

#: A loopback address the workers' guard lets through where nothing listens: an
#: unreachable site (``worker_settings`` allows it).
UNREACHABLE = f"127.0.0.1:{free_port()}"
