"""Read back what a context holds at the end of a job, for the write-back.

Cheap on purpose (it runs on every logged-in job): cookies from the context, and the
localStorage and sessionStorage of each open page's origin from the page itself.
IndexedDB goes through Playwright's ``storage_state`` (slower), only when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from playwright.async_api import BrowserContext

STORAGE_JS = (
    "() => [location.origin, Object.entries(window.localStorage), "
    "Object.entries(window.sessionStorage)]"
)
CALL_TIMEOUT_S = 5.0


def _pairs(entries: Any) -> list[dict[str, str]]:
    return [{"name": str(k), "value": str(v)} for k, v in entries or []]


async def observe_state(context: BrowserContext, *, indexed_db: bool = False) -> dict[str, Any]:
    """``{"cookies": [...], "origins": [...]}`` with one entry per origin a page shows; an
    origin is listed only when its storage could be read (others count as not observed)."""
    cookies = await asyncio.wait_for(context.cookies(), CALL_TIMEOUT_S)
    origins: dict[str, dict[str, Any]] = {}
    for page in context.pages:
        if page.is_closed():
            continue
        with contextlib.suppress(Exception):
            origin, local, session = await asyncio.wait_for(
                page.evaluate(STORAGE_JS), CALL_TIMEOUT_S
            )
            if origin and origin != "null":
                origins[origin] = {
                    "origin": origin,
                    "localStorage": _pairs(local),
                    "sessionStorage": _pairs(session),
                }
    if indexed_db and origins:
        state = await asyncio.wait_for(context.storage_state(indexed_db=True), CALL_TIMEOUT_S)
        for entry in state.get("origins", []):
            if entry.get("origin") in origins:
                origins[entry["origin"]]["indexedDB"] = entry.get("indexedDB") or []
    return {"cookies": [dict(c) for c in cookies], "origins": list(origins.values())}
