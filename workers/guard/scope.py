"""What a saved or imported state may hold: the session's site and its declared extra origins.

A login window can wander (ads, trackers, a link to another site) and an imported
storageState file can hold a whole browser profile. Only cookies the browser would send to
the session's site (its registrable domain) or to one of its extra origins, and storage of
origins within that site or exactly one of the extra origins, are kept; everything else is
dropped before the state is encrypted. The site rule is the guard's own
(:meth:`UrlGuard.check_site`), so the browse check and the stored state agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schema.errors import InvalidInput, UrlNotAllowed
from schema.logs import get_logger
from schema.queries import SessionInfo
from workers.guard.policy import NAVIGATION_SCHEMES, UrlGuard, is_public_suffix, split_url

log = get_logger(__name__)
_GUARD = UrlGuard()


@dataclass(frozen=True)
class Scoped:
    state: dict[str, Any]
    cookies_dropped: int
    origins_dropped: int


def _within(url: str, start_url: str, extra_origins: Iterable[str]) -> bool:
    try:
        _GUARD.check_site(url, start_url=start_url, extra_origins=extra_origins)
    except (UrlNotAllowed, InvalidInput):
        return False
    return True


def _extra_hosts(extra_origins: Iterable[str]) -> set[str]:
    hosts = set()
    for origin in extra_origins:
        try:
            hosts.add(split_url(origin, schemes=NAVIGATION_SCHEMES)[1].lower())
        except (UrlNotAllowed, InvalidInput):
            continue
    return hosts


def _cookie_in_scope(
    cookie: Any, start_url: str, extra_origins: list[str], extra_hosts: set[str]
) -> bool:
    if not isinstance(cookie, dict) or not isinstance(cookie.get("domain"), str):
        return False
    domain = cookie["domain"].strip().lower()
    host = domain.removeprefix(".")
    if not host or "/" in host or ":" in host:
        return False
    if _within(f"https://{host}/", start_url, ()):
        return True
    if host in extra_hosts:
        return True
    # A domain cookie of a parent of an extra origin is sent to that origin (SSO).
    return (
        domain.startswith(".")
        and not is_public_suffix(host)
        and any(h.endswith("." + host) for h in extra_hosts)
    )


def keep_session_site(
    state: dict[str, Any], *, start_url: str, extra_origins: Iterable[str] = ()
) -> Scoped:
    """``state`` with only the cookies and origins of the session's site and extra origins."""
    extra = list(extra_origins)
    hosts = _extra_hosts(extra)
    cookies = state.get("cookies") or []
    origins = state.get("origins") or []
    kept_cookies = [c for c in cookies if _cookie_in_scope(c, start_url, extra, hosts)]
    kept_origins = [
        o
        for o in origins
        if isinstance(o, dict)
        and isinstance(o.get("origin"), str)
        and _within(o["origin"], start_url, extra)
    ]
    scoped = {**state, "cookies": kept_cookies, "origins": kept_origins}
    return Scoped(
        state=scoped,
        cookies_dropped=len(cookies) - len(kept_cookies),
        origins_dropped=len(origins) - len(kept_origins),
    )


def scope_to_session(state: dict[str, Any], session: SessionInfo) -> dict[str, Any]:
    """:func:`keep_session_site` for a session row; logs what was dropped (counts only)."""
    scoped = keep_session_site(
        state, start_url=session.start_url, extra_origins=session.extra_origins
    )
    if scoped.cookies_dropped or scoped.origins_dropped:
        log.info(
            "state_out_of_site_dropped",
            cookies_dropped=scoped.cookies_dropped,
            origins_dropped=scoped.origins_dropped,
        )
    return scoped.state
