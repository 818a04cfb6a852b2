"""Guarded write-back, the pure part: what changed in a browse, and how it merges.

No I/O. A state is a Playwright storage state (``cookies``, ``origins`` with
``localStorage``, ``sessionStorage``, ``indexedDB``). It is flattened into items keyed by
cookie (name, domain, path) and by storage (kind, origin, key); IndexedDB is one item per
origin. Rules:

- Only what the job *observed* counts: the context's cookies within the session's scope
  (its site and declared origins) and the storage of the origins its pages showed. Cookies
  and origins outside the scope are never written; items of origins the job did not see
  keep their restored value.
- Merging against a version saved meanwhile (``theirs``), from the version the job
  restored (``base``): items the job changed win, items it did not touch keep the newer
  value, items the site deleted stay deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from schema.errors import UrlNotAllowed
from workers.guard.policy import is_public_suffix, normalize_host, registrable_domain

Key = tuple[str, ...]
Items = dict[Key, Any]

COOKIE_FIELDS = ("name", "value", "domain", "path", "expires", "httpOnly", "secure", "sameSite")
STORAGE_KINDS = (("local", "localStorage"), ("session", "sessionStorage"))
AUTH_COOKIE_NAME = re.compile(r"sess|sid|auth|token|login|refresh|jwt|remember", re.IGNORECASE)


class _Deleted:
    def __repr__(self) -> str:
        return "DELETED"


DELETED: Any = _Deleted()


@dataclass(frozen=True)
class Scope:
    """The session's site (registrable domain of its start URL) and its declared origins."""

    site: str
    site_is_name: bool
    extra_hosts: frozenset[str]
    extra_origins: frozenset[str]

    @classmethod
    def of(cls, start_url: str, extra_origins: Iterable[str] = ()) -> Scope:
        host = urlsplit(start_url).hostname or ""
        site = registrable_domain(host)
        origins = frozenset(_origin_key(o) for o in extra_origins)
        return cls(
            site=site,
            site_is_name=isinstance(normalize_host(host), str) and not is_public_suffix(site),
            extra_hosts=frozenset(_host(o.split("://", 1)[-1].rsplit(":", 1)[0]) for o in origins),
            extra_origins=origins,
        )

    def host_allowed(self, host: str) -> bool:
        name = _host(host.lstrip("."))
        if not name:
            return False
        if name == self.site or (self.site_is_name and name.endswith("." + self.site)):
            return True
        return name in self.extra_hosts

    def cookie_allowed(self, cookie: Mapping[str, Any]) -> bool:
        return self.host_allowed(str(cookie.get("domain", "")))

    def origin_allowed(self, origin: str) -> bool:
        if _origin_key(origin) in self.extra_origins:
            return True
        return self.host_allowed(urlsplit(origin).hostname or "")


def _host(host: str) -> str:
    try:
        canonical = normalize_host(host)
    except UrlNotAllowed:
        return ""
    return str(canonical).removesuffix(".") if isinstance(canonical, str) else str(canonical)


def _origin_key(origin: str) -> str:
    parts = urlsplit(origin.rstrip("/"))
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    return f"{scheme}://{_host(parts.hostname or '')}:{port}"


# -- flatten and rebuild -------------------------------------------------------------------


def _cookie(c: Mapping[str, Any]) -> dict[str, Any]:
    """A cookie reduced to the fields that matter; expiry to whole seconds (Chromium's
    round trip changes the fraction)."""
    out = {f: c[f] for f in COOKIE_FIELDS if f in c}
    if isinstance(out.get("expires"), int | float):
        out["expires"] = int(out["expires"]) if out["expires"] >= 0 else -1
    return out


def cookie_key(c: Mapping[str, Any]) -> Key:
    return ("cookie", str(c.get("name", "")), str(c.get("domain", "")), str(c.get("path", "/")))


def flatten(state: Mapping[str, Any]) -> Items:
    """Items of a storage state, keyed by cookie or by (kind, origin, key)."""
    items: Items = {}
    for c in state.get("cookies") or []:
        if isinstance(c, Mapping) and "name" in c:
            items[cookie_key(c)] = _cookie(c)
    for entry in state.get("origins") or []:
        if not isinstance(entry, Mapping) or not entry.get("origin"):
            continue
        origin = str(entry["origin"])
        for kind, field in STORAGE_KINDS:
            for pair in entry.get(field) or []:
                if isinstance(pair, Mapping) and "name" in pair:
                    items[(kind, origin, str(pair["name"]))] = str(pair.get("value", ""))
        if entry.get("indexedDB"):
            items[("idb", origin)] = entry["indexedDB"]
    return items


def rebuild(items: Items) -> dict[str, Any]:
    """The storage state of flattened items (cookies first, then one entry per origin)."""
    cookies = [v for k, v in items.items() if k[0] == "cookie"]
    origins: dict[str, dict[str, Any]] = {}
    for key, value in items.items():
        if key[0] == "cookie":
            continue
        entry = origins.setdefault(key[1], {"origin": key[1], "localStorage": []})
        if key[0] == "idb":
            entry["indexedDB"] = value
        else:
            field = dict(STORAGE_KINDS)[key[0]]
            entry.setdefault(field, []).append({"name": key[2], "value": value})
    return {"cookies": cookies, "origins": list(origins.values())}


# -- what a job observed ---------------------------------------------------------------


def observed(base: Items, final: Mapping[str, Any], scope: Scope) -> Items:
    """``base`` with what the job saw applied: in-scope cookies as the context has them now
    (absent = deleted by the site), and for each origin in ``final["origins"]`` (the pages
    it showed) its storage as the page has it. Everything else keeps its ``base`` value."""
    seen = flatten(final)
    mine = {k: v for k, v in base.items() if not (k[0] == "cookie" and _in_scope(k, scope))}
    for key, value in seen.items():
        if key[0] == "cookie" and _in_scope(key, scope):
            mine[key] = value
    for entry in final.get("origins") or []:
        origin = str(entry.get("origin", ""))
        if not origin or not scope.origin_allowed(origin):
            continue
        kinds = [k for k, field in STORAGE_KINDS if field in entry]
        if "indexedDB" in entry:
            kinds.append("idb")
        for key in [k for k in mine if k[0] in kinds and k[1] == origin]:
            del mine[key]
        for key, value in seen.items():
            if key[0] in kinds and key[1] == origin:
                mine[key] = value
    return mine


def _in_scope(key: Key, scope: Scope) -> bool:
    return scope.host_allowed(key[2])


# -- diff, merge, rotation, expiry -----------------------------------------------------


def diff(base: Items, mine: Items) -> Items:
    """What changed from ``base`` to ``mine``: new or changed values, and ``DELETED``."""
    changes: Items = {k: v for k, v in mine.items() if base.get(k, DELETED) != v}
    changes.update({k: DELETED for k in base if k not in mine})
    return changes


def merge(base: Items, mine: Items, theirs: Items) -> Items:
    """Three-way merge per item: my changes (since ``base``) applied on top of ``theirs``."""
    merged = dict(theirs)
    for key, value in diff(base, mine).items():
        if value is DELETED:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _value(item: Any) -> Any:
    return item.get("value") if isinstance(item, Mapping) else item


def rotated(base: Items, mine: Items) -> bool:
    """Whether the site replaced a restored cookie or storage value by another one."""
    return any(
        key[0] != "idb" and key in mine and _value(mine[key]) != _value(value)
        for key, value in base.items()
    )


def is_auth_cookie(cookie: Mapping[str, Any]) -> bool:
    """Cookies that look like they carry the login: HttpOnly, or named like a session."""
    return bool(cookie.get("httpOnly")) or bool(AUTH_COOKIE_NAME.search(str(cookie.get("name"))))


def auth_expiry(state: Mapping[str, Any], scope: Scope) -> float | None:
    """The earliest expiry (epoch seconds) of the in-scope auth cookies that have one."""
    times = [
        float(c["expires"])
        for c in state.get("cookies") or []
        if isinstance(c, Mapping)
        and scope.cookie_allowed(c)
        and is_auth_cookie(c)
        and isinstance(c.get("expires"), int | float)
        and c["expires"] > 0
    ]
    return min(times) if times else None


@dataclass(frozen=True)
class Plan:
    """What to do with one job's observations: ``state`` to save (None: nothing changed)."""

    state: dict[str, Any] | None
    rotated: bool
    changes: int


def plan(base_state: Mapping[str, Any], final: Mapping[str, Any], scope: Scope) -> Plan:
    """Compare what the job restored with what it observed."""
    base = flatten(base_state)
    mine = observed(base, final, scope)
    changes = diff(base, mine)
    if not changes:
        return Plan(state=None, rotated=False, changes=0)
    return Plan(state=rebuild(mine), rotated=rotated(base, mine), changes=len(changes))


def rebase(
    base_state: Mapping[str, Any], mine_state: Mapping[str, Any], theirs: Mapping[str, Any]
) -> dict[str, Any]:
    """My state merged onto a version saved since I restored ``base_state``."""
    return rebuild(merge(flatten(base_state), flatten(mine_state), flatten(theirs)))
