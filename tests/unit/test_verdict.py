import time

import pytest

from producers.validation import optional_login_glob
from schema.errors import InvalidInput
from tests.support.cases import yes_no_cases
from workers.browser.verdict import MAX_MATCH_URL_CHARS, Verdict, decide, url_matches

GLOBS = {  # pattern -> (URLs it matches, URLs it does not)
    "https://twitter.com/i/flow/login**": (
        ["https://twitter.com/i/flow/login", "https://twitter.com/i/flow/login?next=%2Fhome"],
        ["https://twitter.com/home"],
    ),
    "https://*.example/login": (["https://a.example/login"], ["https://a.b.example/x/login"]),
    "http://127.0.0.1:8080/login**": (["http://127.0.0.1:8080/login?next=/app"], []),
    "https://x.test/login?a=1": (["https://x.test/login?a=1"], ["https://x.test/loginXa=1"]),
    "https://**/y": (["https://a.example/x/y"], []),
    "https://*/y": (["https://a.example/y"], ["https://a.example/x/y"]),
    "https://a.example/*": (["https://a.example/"], ["https://a.example/a/b"]),
    "https://a.example/***": (["https://a.example/a/b"], []),
    "**login": (["https://a.example/login"], ["https://a.example/login/x"]),
    "https://a.example/*b": (["https://a.example/aXbXb"], []),
    "": ([""], ["x"]),
    "**": ([""], []),
}


@pytest.mark.parametrize(("url", "pattern", "expected"), yes_no_cases(GLOBS))
def test_glob(url: str, pattern: str, expected: bool) -> None:
    assert url_matches(url, pattern) is expected


@pytest.mark.parametrize(
    ("final_url", "login_url_pattern", "logged_in_selector", "present", "expected", "reason"),
    [
        pytest.param(
            "https://s.test/login?next=/app",
            "https://s.test/login**",
            "#me",
            True,
            Verdict.LOGGED_OUT,
            "login page",
            id="login-pattern-wins",
        ),
        pytest.param(
            "https://s.test/app", None, "#me", False, Verdict.LOGGED_OUT, "", id="missing-selector"
        ),
        pytest.param(
            "https://s.test/app",
            "https://s.test/login**",
            "#me",
            True,
            Verdict.LOGGED_IN,
            "",
            id="logged-in",
        ),
        pytest.param("https://s.test/", None, None, None, Verdict.LOGGED_IN, "", id="no-checks"),
    ],
)
def test_decide(
    final_url: str,
    login_url_pattern: str | None,
    logged_in_selector: str | None,
    present: bool | None,
    expected: Verdict,
    reason: str,
) -> None:
    verdict, why = decide(
        final_url=final_url,
        login_url_pattern=login_url_pattern,
        logged_in_selector=logged_in_selector,
        selector_present=present,
    )
    assert verdict is expected
    assert reason in why


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
