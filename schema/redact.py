"""Remove secrets from anything that is about to be logged.

Three layers: keys that name secrets (cookies, storage, state files, authorization) are
replaced wherever they appear in an event; string patterns that carry them are scrubbed;
and exact secret values registered by a job (its decrypted cookie and storage values) are
replaced anywhere in the final line, tracebacks included.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(?i)^(cookies?|set[-_]cookie|authorization|proxy[-_]authorization|password|passwd|"
    r"secret|.*token|storage[-_]?state|state[-_]?file|state|local[-_]?storage|"
    r"session[-_]?storage|indexed[-_]?db|origins|plaintext|sealed[-_]?state|api[-_]?key|"
    r"totp.*|key|private[-_]?key)$"
)
_PATTERNS = (
    (
        # Up to the end of the line, a quote or a backslash (an escaped newline in JSON).
        re.compile(r"(?im)\b((?:set-)?cookie|(?:proxy-)?authorization)(\s*[:=]\s*)[^\n\"\\]*"),
        rf"\1\2{REDACTED}",
    ),
    (
        re.compile(
            r"""(?i)(["']?(?:value|token|password|secret|localStorage|sessionStorage|"""
            r"""cookies?|authorization)["']?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
        ),
        rf'\1"{REDACTED}"',
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {REDACTED}"),
)

_lock = threading.Lock()
_secrets: Counter[str] = Counter()
_MIN_SECRET_LEN = 4


@contextlib.contextmanager
def secret_values(values: Iterable[str]) -> Iterator[None]:
    """Register exact values (e.g. decrypted cookie values) to be scrubbed while inside."""
    kept = [v for v in {str(v) for v in values} if len(v) >= _MIN_SECRET_LEN]
    with _lock:
        _secrets.update(kept)
    try:
        yield
    finally:
        with _lock:
            _secrets.subtract(kept)
            for value in kept:
                if _secrets[value] <= 0:
                    del _secrets[value]


def state_secret_values(state: Any) -> list[str]:
    """Every secret value in a storage state: cookies, local/session storage, IndexedDB."""
    found: list[str] = []
    if not isinstance(state, dict):
        return found
    for cookie in _dicts(state, "cookies"):
        if "value" in cookie:
            found.append(str(cookie["value"]))
    for origin in _dicts(state, "origins"):
        for key in ("localStorage", "sessionStorage"):
            for item in _dicts(origin, key):
                if "value" in item:
                    found.append(str(item["value"]))
        for database in _dicts(origin, "indexedDB"):
            for store in _dicts(database, "stores"):
                for record in _dicts(store, "records"):
                    found.extend(_strings(record.get("value")))
                    found.extend(_strings(record.get("valueEncoded")))
    return found


def _dicts(parent: Any, key: str) -> Iterator[dict[str, Any]]:
    items = parent.get(key) if isinstance(parent, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            yield item


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > 16:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)


def scrub_text(text: str) -> str:
    """Scrub secret patterns and registered secret values out of a string."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    with _lock:
        values = sorted(_secrets, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def scrub(value: Any, *, _depth: int = 0) -> Any:
    """Scrub a log value: secret-named keys replaced, strings cleaned, containers walked."""
    if _depth > 8:
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and _SECRET_KEY.match(k)
                else scrub(v, _depth=_depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v, _depth=_depth + 1) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub_text(repr(value))


def redact_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: scrub every field of the event."""
    return {
        key: (
            REDACTED
            if key not in ("event", "exception") and _SECRET_KEY.match(key)
            else scrub(value)
        )
        for key, value in event_dict.items()
    }
