"""Input checks on the producer side: bad input gets INVALID_INPUT before anything is stored."""

from __future__ import annotations

from urllib.parse import urlsplit

from schema.errors import InvalidInput, UrlNotAllowed
from schema.limits import LOGIN_GLOB_MAX_CHARS, LOGIN_GLOB_MAX_WILDCARDS

MAX_ID = 200
MAX_LABEL = 200
MAX_URL = 4096


def require_id(name: str, value: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > MAX_ID or any(c.isspace() or ord(c) < 32 for c in value):
        raise InvalidInput(f"{name} must be 1-{MAX_ID} characters without spaces")
    return value


def require_text(name: str, value: str) -> str:
    """Text that Postgres can store: no NUL character, no unpaired surrogate."""
    if "\x00" in value:
        raise InvalidInput(f"{name} must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} is not valid Unicode text") from None
    return value


def require_label(value: str) -> str:
    value = require_text("label", (value or "").strip())
    if not value or len(value) > MAX_LABEL:
        raise InvalidInput(f"label must be 1-{MAX_LABEL} characters")
    return value


def require_http_url(name: str, value: str) -> str:
    value = require_text(name, (value or "").strip())
    if len(value) > MAX_URL:
        raise InvalidInput(f"{name} is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise InvalidInput(f"{name} is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise UrlNotAllowed(f"{name} must be an http or https URL")
    if not parts.hostname:
        raise InvalidInput(f"{name} must be an http(s) URL with a host")
    return value


def site_of(url: str) -> str:
    """The site shown to users: the start URL's host (and port when not the default)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


def optional_text(name: str, value: str | None, limit: int = 1000) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > limit:
        raise InvalidInput(f"{name} is longer than {limit} characters")
    return require_text(name, value.strip())


def optional_login_glob(value: str | None) -> str | None:
    """A login-URL glob within the size and wildcard limits, or ``None``."""
    pattern = optional_text("login_url_pattern", value, LOGIN_GLOB_MAX_CHARS)
    if pattern is not None and pattern.count("*") > LOGIN_GLOB_MAX_WILDCARDS:
        raise InvalidInput(
            f"login_url_pattern has more than {LOGIN_GLOB_MAX_WILDCARDS} '*' characters"
        )
    return pattern
