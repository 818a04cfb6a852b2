"""The login verdict and the login-URL glob: pure rules, no browser."""

from __future__ import annotations

import functools
import re
from enum import StrEnum


class Verdict(StrEnum):
    LOGGED_IN = "logged_in"
    LOGGED_OUT = "logged_out"


@functools.lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A URL glob: ``**`` matches anything, ``*`` anything but ``/``; the rest is literal."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def url_matches(url: str, pattern: str) -> bool:
    return glob_to_regex(pattern).match(url) is not None


def decide(
    *,
    final_url: str,
    login_url_pattern: str | None,
    logged_in_selector: str | None,
    selector_present: bool | None,
) -> tuple[Verdict, str]:
    """Logged out when the final URL matches the login pattern or the logged-in selector is
    absent; otherwise logged in. Returns the verdict and a short reason (no secrets)."""
    if login_url_pattern and url_matches(final_url, login_url_pattern):
        return Verdict.LOGGED_OUT, "the page redirected to the site's login page"
    if logged_in_selector and not selector_present:
        return Verdict.LOGGED_OUT, "the logged-in element was not found on the page"
    return Verdict.LOGGED_IN, "logged in"
