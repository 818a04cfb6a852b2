"""Sessions imported from a login on the fixture site, as an orchestrator would add them, and
waiting for a session's status."""

from __future__ import annotations

import json
from typing import Any

from producers.api import SessionsClient
from tests.support.waiting import wait_for
from workers.dev.fixture_site import FixtureSite


async def import_on_site(
    client: SessionsClient,
    site: FixtureSite,
    owner: str,
    state: dict[str, Any],
    *,
    label: str | None = None,
    selector: str | None = "#whoami",
    login_pattern: bool = True,
) -> dict[str, Any]:
    """Import ``state`` as ``owner``'s session starting at the site's ``/app`` (label
    "<owner>'s fixture" by default; with ``login_pattern``, the site's login page marks a
    logged-out browse); returns :meth:`SessionsClient.import_session`'s answer."""
    return await client.import_session(
        owner_id=owner,
        label=label if label is not None else f"{owner}'s fixture",
        start_url=site.url("/app"),
        state=json.dumps(state).encode(),
        logged_in_selector=selector,
        login_url_pattern=site.url("/login") + "**" if login_pattern else None,
    )


async def wait_for_status(db: Any, session_id: str, status: str) -> None:
    """Wait until the session's row has ``status`` (an expiry lands after the browse's result)."""

    async def reached() -> bool:
        found = await db.fetchval("SELECT status FROM browser_sessions WHERE id = $1", session_id)
        return bool(found == status)

    await wait_for(reached, what=f"session {status}")
