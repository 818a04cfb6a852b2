"""Turn a saved state into what a fresh context needs, the cheap way.

Cookies go to the context directly; localStorage and sessionStorage are written by an init
script before the page's own scripts run (``new_context(storage_state=...)`` opens a page per
origin to write localStorage, which measured ≈ +450 ms). IndexedDB has no synchronous API,
so a state that carries IndexedDB falls back to Playwright's own restore for it.

The script is installed on the page's own DevTools target (`install_restore_script`), not on
the context: Playwright's context scripts also go to every out-of-process iframe, so every
cross-site frame (an ad, a widget, another site's renderer process) would receive every
origin's storage values. On the page target it runs only in the frames that share the top
frame's renderer (the page's own site), and each of those takes only its own origin's entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from playwright.async_api import CDPSession, Page

_INIT_SCRIPT = """(() => {
  const entry = (%s)[location.origin];
  if (!entry) return;
  const put = (store, items) => {
    try { for (const [k, v] of items) if (store.getItem(k) === null) store.setItem(k, v); }
    catch (e) { /* storage disabled for this origin */ }
  };
  put(window.localStorage, entry.local || []);
  put(window.sessionStorage, entry.session || []);
})();"""


@dataclass(frozen=True)
class RestorePlan:
    """Context options (secrets inside: pass to Playwright only) and an init script."""

    context_options: dict[str, Any]
    init_script: str | None


def _pairs(items: Any) -> list[list[str]]:
    return [
        [str(i["name"]), str(i["value"])]
        for i in items or []
        if isinstance(i, dict) and "name" in i and "value" in i
    ]


def plan_restore(state: dict[str, Any]) -> RestorePlan:
    """Split a saved storage state into context options plus a storage init script."""
    cookies = list(state.get("cookies") or [])
    origins = [o for o in state.get("origins") or [] if isinstance(o, dict) and o.get("origin")]
    by_origin: dict[str, dict[str, list[list[str]]]] = {}
    idb_origins = []
    for origin in origins:
        entry = {
            "local": _pairs(origin.get("localStorage")),
            "session": _pairs(origin.get("sessionStorage")),
        }
        if entry["local"] or entry["session"]:
            by_origin[str(origin["origin"])] = entry
        if origin.get("indexedDB"):
            idb_origins.append(
                {"origin": origin["origin"], "localStorage": [], "indexedDB": origin["indexedDB"]}
            )
    if idb_origins:
        options: dict[str, Any] = {"storage_state": {"cookies": cookies, "origins": idb_origins}}
    else:
        options = {"storage_state": {"cookies": cookies, "origins": []}}
    script = _INIT_SCRIPT % json.dumps(by_origin) if by_origin else None
    return RestorePlan(context_options=options, init_script=script)


async def install_restore_script(page: Page, script: str) -> CDPSession:
    """Run ``script`` before any page script in the frames of ``page``'s own renderer, never in
    a cross-site iframe; keep the returned session open as long as the page."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Page.enable")  # scripts of a session run only while its Page domain is on
    await cdp.send("Page.addScriptToEvaluateOnNewDocument", {"source": script})
    return cdp
