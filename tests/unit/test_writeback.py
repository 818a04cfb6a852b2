"""The write-back rules: what a job observed, how it merges, what is never written."""

from __future__ import annotations

from typing import Any

from workers.jobs.writeback import (
    DELETED,
    Scope,
    auth_expiry,
    diff,
    flatten,
    merge,
    plan,
    rebase,
    rebuild,
    rotated,
)

SITE = "https://app.example.com"
SCOPE = Scope.of(SITE + "/home", ["https://accounts.example.net"])


def cookie(name: str, value: str, domain: str = "app.example.com", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "domain": domain,
        "path": "/",
        "expires": -1,
        "httpOnly": False,
        "secure": True,
        "sameSite": "Lax",
        **extra,
    }


def origin(url: str, **local: str) -> dict[str, Any]:
    return {"origin": url, "localStorage": [{"name": k, "value": v} for k, v in local.items()]}


def values(state: dict[str, Any]) -> dict[str, str]:
    """name -> value of cookies and of storage items (origin/name)."""
    out = {c["name"]: c["value"] for c in state["cookies"]}
    for entry in state["origins"]:
        for item in entry.get("localStorage", []):
            out[f"{entry['origin']}/{item['name']}"] = item["value"]
    return out


BASE = {
    "cookies": [cookie("sid", "s1", httpOnly=True), cookie("theme", "dark")],
    "origins": [origin(SITE, token="t1", pref="a")],
}


# -- scope ---------------------------------------------------------------------------------


def test_scope_is_the_registrable_domain_and_declared_origins() -> None:
    assert SCOPE.host_allowed("app.example.com")
    assert SCOPE.host_allowed(".example.com")
    assert SCOPE.host_allowed("other.example.com")
    assert SCOPE.host_allowed("accounts.example.net")
    assert not SCOPE.host_allowed("example.net")
    assert not SCOPE.host_allowed("tracker.example.org")
    assert not SCOPE.host_allowed("evil-example.com")
    assert SCOPE.origin_allowed("https://accounts.example.net")
    assert not SCOPE.origin_allowed("https://cdn.example.net")
    ip = Scope.of("http://127.0.0.1:8080/app")
    assert ip.host_allowed("127.0.0.1") and not ip.host_allowed("127.0.0.2")


def test_cookies_and_storage_outside_the_scope_are_never_written() -> None:
    final = {
        "cookies": [
            *BASE["cookies"],
            cookie("track", "x", domain=".tracker.example.org"),
            cookie("sso", "ok", domain="accounts.example.net"),
        ],
        "origins": [origin(SITE, token="t1", pref="a"), origin("https://ads.example.org", k="v")],
    }
    decided = plan(BASE, final, SCOPE)
    assert decided.state is not None
    saved = values(decided.state)
    assert "track" not in saved and "https://ads.example.org/k" not in saved
    assert saved["sso"] == "ok"


def test_out_of_scope_items_already_saved_are_kept_untouched() -> None:
    base = {**BASE, "cookies": [*BASE["cookies"], cookie("old", "o", domain="x.example.org")]}
    final = {"cookies": [cookie("sid", "s2", httpOnly=True), cookie("theme", "dark")]}
    decided = plan(base, final, SCOPE)
    assert decided.state is not None
    assert values(decided.state)["old"] == "o"


# -- what changed -----------------------------------------------------------------------


def test_nothing_changed_means_nothing_to_save() -> None:
    # Chromium hands back the same cookies with a sub-second expiry difference.
    final = {
        "cookies": [cookie("sid", "s1", httpOnly=True), cookie("theme", "dark")],
        "origins": [origin(SITE, pref="a", token="t1")],
    }
    assert plan(BASE, final, SCOPE).state is None
    long_lived = {**BASE, "cookies": [cookie("sid", "s1", expires=2_000_000_000.25)]}
    same = {"cookies": [cookie("sid", "s1", expires=2_000_000_000.75)], "origins": []}
    assert plan(long_lived, same, SCOPE).state is None


def test_a_rotated_cookie_is_saved_and_marks_rotation() -> None:
    final = {"cookies": [cookie("sid", "s2", httpOnly=True), cookie("theme", "dark")]}
    decided = plan(BASE, final, SCOPE)
    assert decided.state is not None and decided.rotated
    assert values(decided.state)["sid"] == "s2"
    # Origins the job did not show keep their values.
    assert values(decided.state)[f"{SITE}/token"] == "t1"


def test_a_rotated_local_storage_token_is_saved() -> None:
    final = {"cookies": BASE["cookies"], "origins": [origin(SITE, token="t2", pref="a")]}
    decided = plan(BASE, final, SCOPE)
    assert decided.state is not None and decided.rotated
    assert values(decided.state)[f"{SITE}/token"] == "t2"


def test_a_new_item_is_not_a_rotation() -> None:
    final = {"cookies": [*BASE["cookies"], cookie("seen", "1")]}
    decided = plan(BASE, final, SCOPE)
    assert decided.state is not None and not decided.rotated


def test_items_the_site_deleted_are_deleted() -> None:
    final = {"cookies": [cookie("sid", "s1", httpOnly=True)], "origins": [origin(SITE, token="t1")]}
    decided = plan(BASE, final, SCOPE)
    assert decided.state is not None
    saved = values(decided.state)
    assert "theme" not in saved and f"{SITE}/pref" not in saved


# -- merging against a newer version ---------------------------------------------------


def test_merge_my_changes_win_untouched_keep_newer_site_deleted_stay_deleted() -> None:
    base = flatten(
        {
            "cookies": [cookie("sid", "s1"), cookie("a", "1"), cookie("b", "1"), cookie("c", "1")],
            "origins": [origin(SITE, token="t1", x="1")],
        }
    )
    # I (this job) rotated sid, deleted a, added n; left b, c and storage alone.
    mine = flatten(
        {
            "cookies": [cookie("sid", "s2"), cookie("b", "1"), cookie("c", "1"), cookie("n", "1")],
            "origins": [origin(SITE, token="t1", x="1")],
        }
    )
    # They (saved meanwhile) changed b and token, deleted c, and also changed sid.
    theirs = flatten(
        {
            "cookies": [cookie("sid", "s9"), cookie("a", "1"), cookie("b", "2")],
            "origins": [origin(SITE, token="t2", x="1")],
        }
    )
    merged = values(rebuild(merge(base, mine, theirs)))
    assert merged["sid"] == "s2"  # mine changed it: mine wins
    assert "a" not in merged  # I deleted it
    assert merged["n"] == "1"  # I added it
    assert merged["b"] == "2"  # untouched by me: the newer value
    assert "c" not in merged  # deleted in the newer version, untouched by me: stays deleted
    assert merged[f"{SITE}/token"] == "t2"
    assert merged[f"{SITE}/x"] == "1"


def test_rebase_on_states() -> None:
    mine = {"cookies": [cookie("sid", "s2", httpOnly=True), cookie("theme", "dark")]}
    theirs = {"cookies": [cookie("sid", "s1", httpOnly=True), cookie("theme", "light")]}
    merged = values(rebase(BASE, rebuild(flatten({**BASE, **mine})), {**BASE, **theirs}))
    assert (merged["sid"], merged["theme"]) == ("s2", "light")


def test_diff_marks_deletions() -> None:
    changes = diff({("cookie", "a", "d", "/"): 1}, {})
    assert changes == {("cookie", "a", "d", "/"): DELETED}


def test_rotated_ignores_additions_and_deletions() -> None:
    base = flatten(BASE)
    assert not rotated(base, {k: v for k, v in base.items() if k[1] != "theme"})
    assert not rotated(base, {**base, ("local", SITE, "new"): "v"})


def test_round_trip_keeps_session_storage_and_indexeddb() -> None:
    state = {
        "cookies": [cookie("sid", "s1")],
        "origins": [
            {
                "origin": SITE,
                "localStorage": [{"name": "k", "value": "v"}],
                "sessionStorage": [{"name": "s", "value": "w"}],
                "indexedDB": [{"name": "db", "version": 1, "stores": []}],
            }
        ],
    }
    assert flatten(rebuild(flatten(state))) == flatten(state)


# -- expiry of the auth cookies --------------------------------------------------------


def test_auth_expiry_is_the_earliest_auth_cookie_in_scope() -> None:
    state = {
        "cookies": [
            cookie("sid", "s", httpOnly=True, expires=2_000_000_100),
            cookie("refresh_token", "r", expires=2_000_000_050),
            cookie("theme", "dark", expires=1_000),  # not an auth cookie
            cookie("session", "x", domain="other.org", expires=5),  # out of scope
            cookie("auth", "y"),  # a session cookie: no expiry
        ]
    }
    assert auth_expiry(state, SCOPE) == 2_000_000_050
    assert auth_expiry({"cookies": [cookie("theme", "d", expires=9)]}, SCOPE) is None
