"""Saved and imported states keep only the session's site and its declared extra origins."""

from __future__ import annotations

from typing import Any

from workers.guard.scope import keep_session_site

START = "https://app.example.com/home"
EXTRA = ["https://accounts.idp.example.net"]


def cookie(domain: str, name: str = "c") -> dict[str, Any]:
    return {"name": name, "value": "v", "domain": domain, "path": "/"}


def origin(url: str) -> dict[str, Any]:
    return {"origin": url, "localStorage": [{"name": "k", "value": "v"}]}


def test_only_the_site_and_extra_origins_are_kept() -> None:
    state = {
        "cookies": [
            cookie("app.example.com"),
            cookie(".example.com"),
            cookie("api.example.com"),
            cookie("accounts.idp.example.net"),
            cookie(".idp.example.net"),  # a parent domain cookie sent to the extra origin
            cookie("tracker.example.org"),
            cookie(".example.net"),  # sent to accounts.idp..., kept
            cookie("other.idp.example.net"),  # host-only, never sent to the extra origin
            cookie(".net"),
            cookie(".com"),
            {"name": "no-domain", "value": "v"},
        ],
        "origins": [
            origin("https://app.example.com"),
            origin("https://static.example.com"),
            origin("https://accounts.idp.example.net"),
            origin("https://other.idp.example.net"),
            origin("https://evil.example.org"),
            origin("http://accounts.idp.example.net"),  # not the declared origin
            {"localStorage": []},
        ],
    }
    scoped = keep_session_site(state, start_url=START, extra_origins=EXTRA)
    assert [c.get("domain") for c in scoped.state["cookies"]] == [
        "app.example.com",
        ".example.com",
        "api.example.com",
        "accounts.idp.example.net",
        ".idp.example.net",
        ".example.net",
    ]
    assert [o["origin"] for o in scoped.state["origins"]] == [
        "https://app.example.com",
        "https://static.example.com",
        "https://accounts.idp.example.net",
    ]
    assert (scoped.cookies_dropped, scoped.origins_dropped) == (5, 4)


def test_ip_sites_and_missing_lists() -> None:
    state = {"cookies": [cookie("127.0.0.1"), cookie("127.0.0.2")]}
    scoped = keep_session_site(state, start_url="http://127.0.0.1:8080/app")
    assert [c["domain"] for c in scoped.state["cookies"]] == ["127.0.0.1"]
    assert scoped.state["origins"] == []
    assert keep_session_site({}, start_url=START).state == {"cookies": [], "origins": []}
