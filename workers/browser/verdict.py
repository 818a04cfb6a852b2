"""The login verdict and the login-URL glob: pure rules, no browser."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from schema.limits import LOGIN_GLOB_MAX_CHARS, LOGIN_GLOB_MAX_WILDCARDS

MAX_MATCH_URL_CHARS: Final = 16_384
"""A longer URL never matches a login pattern (login pages have short URLs; the cap bounds
the work a hostile site can cause with a huge URL)."""


class Verdict(StrEnum):
    LOGGED_IN = "logged_in"
    LOGGED_OUT = "logged_out"


@dataclass(frozen=True)
class Glob:
    """A URL glob compiled to a bit-parallel automaton: ``**`` matches anything, ``*`` anything
    but ``/``; the rest is literal.

    Bit ``i`` of a state set means "the first ``i`` pattern tokens are matched". Each URL
    character costs a few integer operations on ``len(pattern) + 1`` bits, whatever the
    pattern: no backtracking, so time is linear in the URL's length.
    """

    literals: dict[str, int]  # char -> bits of the positions whose next token is that char
    any_stars: int  # positions whose next token is ``**``
    slash_stars: int  # positions whose next token is ``*``
    accept: int

    def _skip_stars(self, states: int) -> int:
        """Add the positions reachable by letting a star match nothing."""
        stars = self.any_stars | self.slash_stars
        while True:
            grown = states | ((states & stars) << 1)
            if grown == states:
                return states
            states = grown

    def matches(self, url: str) -> bool:
        if len(url) > MAX_MATCH_URL_CHARS:
            return False
        states = self._skip_stars(1)
        for char in url:
            stay = self.any_stars if char == "/" else self.any_stars | self.slash_stars
            states = ((states & self.literals.get(char, 0)) << 1) | (states & stay)
            if not states:
                return False
            states = self._skip_stars(states)
        return bool(states & self.accept)


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> Glob:
    """Compile a login-URL glob (see `Glob`). A glob over the limits (the producer refuses
    those; only a direct database write gets one in) matches nothing."""
    if len(pattern) > LOGIN_GLOB_MAX_CHARS or pattern.count("*") > LOGIN_GLOB_MAX_WILDCARDS:
        return Glob(literals={}, any_stars=0, slash_stars=0, accept=0)
    literals: dict[str, int] = {}
    any_stars = slash_stars = 0
    position = 0
    i = 0
    while i < len(pattern):
        bit = 1 << position
        if pattern.startswith("**", i):
            any_stars |= bit
            i += 2
        elif pattern[i] == "*":
            slash_stars |= bit
            i += 1
        else:
            literals[pattern[i]] = literals.get(pattern[i], 0) | bit
            i += 1
        position += 1
    return Glob(
        literals=literals, any_stars=any_stars, slash_stars=slash_stars, accept=1 << position
    )


def url_matches(url: str, pattern: str) -> bool:
    return compile_glob(pattern).matches(url)


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
