import time

import pytest

from producers.validation import optional_login_glob
from schema.errors import InvalidInput
from workers.browser.verdict import MAX_MATCH_URL_CHARS, Verdict, decide, url_matches


@pytest.mark.parametrize(
    ("url", "pattern", "expected"),
    [
        ("https://twitter.com/i/flow/login", "https://twitter.com/i/flow/login**", True),
        (
            "https://twitter.com/i/flow/login?next=%2Fhome",
            "https://twitter.com/i/flow/login**",
            True,
        ),
        ("https://twitter.com/home", "https://twitter.com/i/flow/login**", False),
        ("https://a.example/login", "https://*.example/login", True),
        ("https://a.b.example/x/login", "https://*.example/login", False),
        ("http://127.0.0.1:8080/login?next=/app", "http://127.0.0.1:8080/login**", True),
        ("https://x.test/login?a=1", "https://x.test/login?a=1", True),
        ("https://x.test/loginXa=1", "https://x.test/login?a=1", False),
        ("https://a.example/x/y", "https://**/y", True),
        ("https://a.example/x/y", "https://*/y", False),
        ("https://a.example/y", "https://*/y", True),
        ("https://a.example/", "https://a.example/*", True),
        ("https://a.example/a/b", "https://a.example/*", False),
        ("https://a.example/a/b", "https://a.example/***", True),
        ("https://a.example/login", "**login", True),
        ("https://a.example/login/x", "**login", False),
        ("https://a.example/aXbXb", "https://a.example/*b", True),
        ("", "", True),
        ("x", "", False),
        ("", "**", True),
    ],
)
def test_glob(url: str, pattern: str, expected: bool) -> None:
    assert url_matches(url, pattern) is expected


def test_login_pattern_wins() -> None:
    verdict, reason = decide(
        final_url="https://s.test/login?next=/app",
        login_url_pattern="https://s.test/login**",
        logged_in_selector="#me",
        selector_present=True,
    )
    assert verdict is Verdict.LOGGED_OUT
    assert "login page" in reason


def test_missing_selector_is_logged_out() -> None:
    verdict, _ = decide(
        final_url="https://s.test/app",
        login_url_pattern=None,
        logged_in_selector="#me",
        selector_present=False,
    )
    assert verdict is Verdict.LOGGED_OUT


def test_logged_in() -> None:
    verdict, _ = decide(
        final_url="https://s.test/app",
        login_url_pattern="https://s.test/login**",
        logged_in_selector="#me",
        selector_present=True,
    )
    assert verdict is Verdict.LOGGED_IN
    assert (
        decide(
            final_url="https://s.test/",
            login_url_pattern=None,
            logged_in_selector=None,
            selector_present=None,
        )[0]
        is Verdict.LOGGED_IN
    )


def test_glob_agrees_with_the_backtracking_regex() -> None:
    """The automaton gives the same answers as the regex it replaced, on every small case."""
    import itertools
    import re

    def regex(pattern: str) -> re.Pattern[str]:
        out = re.sub(r"\\\*\\\*", ".*", re.escape(pattern)).replace(r"\*", "[^/]*")
        return re.compile(out + r"\Z")

    patterns = ["".join(p) for n in range(5) for p in itertools.product("a/*", repeat=n)]
    urls = ["".join(u) for n in range(5) for u in itertools.product("a/b", repeat=n)]
    for pattern in patterns:
        compiled = regex(pattern)
        for url in urls:
            assert url_matches(url, pattern) is (compiled.match(url) is not None), (url, pattern)


def test_hostile_glob_finishes_in_milliseconds() -> None:
    """The pattern that froze a worker for 40 s against a 58-character URL (issue 10)."""
    pattern = "https://***a*a*a*a*a*a*a*a*a*a!"
    for url in ("https://" + "a" * 50, "https://" + "a" * 16_000, "https://" + "a/" * 8_000):
        started = time.perf_counter()
        assert url_matches(url, pattern) is False
        assert time.perf_counter() - started < 0.2


def test_glob_over_the_limits_matches_nothing() -> None:
    assert url_matches("https://x.test/" + "a" * 20, "https://x.test/" + "*" * 17) is False
    assert url_matches("https://x.test/" + "a" * 20, "https://x.test/" + "*" * 16) is True
    long_url = "https://x.test/" + "a" * MAX_MATCH_URL_CHARS
    assert url_matches(long_url, "https://x.test/**") is False


@pytest.mark.parametrize(
    "pattern",
    ["https://" + "*a" * 17, "https://x.test/" + "a" * 1000],
)
def test_producer_refuses_oversized_globs(pattern: str) -> None:
    with pytest.raises(InvalidInput):
        optional_login_glob(pattern)


def test_producer_accepts_a_normal_glob() -> None:
    assert optional_login_glob(" https://x.test/login** ") == "https://x.test/login**"
    assert optional_login_glob("") is None
