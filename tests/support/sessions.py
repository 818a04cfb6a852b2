"""Sessions imported from a login on the fixture site, as an orchestrator would add them."""

from __future__ import annotations

import json
from typing import Any

from producers.api import SessionsClient
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
