"""The fixture site's test users: their password and the login-state fixture's type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

PASSWORD = "correct horse"

#: ``await login_state("alice", indexed_db=True)``: a logged-in Playwright storage state.
LoginState = Callable[..., Awaitable[dict[str, Any]]]
