import pytest

from workers.browser.verdict import Verdict, decide, url_matches


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
