"""Signed page links and cookies, CSRF tokens, the service token, and the page's labels."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest

from producers.http.auth import Auth, Signer, load_service_token
from producers.http.i18n import LABELS, choose_language
from producers.http.openapi import DOCUMENT
from producers.http.ui import content_security_policy, render
from schema.errors import ConfigError
from schema.settings import Settings

TOKEN = "a-service-token-of-some-length"


def test_a_link_opens_for_its_user_only() -> None:
    auth = Auth(token=TOKEN, admins=frozenset())
    link = auth.link_token("alice")
    assert auth.open_link(link) == "alice"
    payload, mac = link.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["u"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    assert auth.open_link(f"{forged}.{mac}") is None
    assert auth.open_link(link + "x") is None
    assert auth.open_link("") is None
    assert auth.user_of_cookie(link) is None  # a link is not a cookie (purpose-bound)


def test_tokens_expire_and_another_token_does_not_verify() -> None:
    auth = Auth(token=TOKEN, admins=frozenset(), link_ttl=timedelta(seconds=-1))
    assert auth.open_link(auth.link_token("alice")) is None
    other = Auth(token=TOKEN + "-rotated", admins=frozenset())
    assert other.open_link(Auth(token=TOKEN, admins=frozenset()).link_token("alice")) is None


def test_csrf_token_belongs_to_one_cookie() -> None:
    auth = Auth(token=TOKEN, admins=frozenset())
    first, second = auth.cookie_for("alice"), auth.cookie_for("alice")
    assert auth.user_of_cookie(first) == "alice"
    assert auth.csrf_token(first) != auth.csrf_token(second)
    assert auth.csrf_token(first) == auth.csrf_token(first)


def test_signer_refuses_garbage() -> None:
    signer = Signer(b"k" * 32)
    for junk in ("", ".", "a.b", "%%%.%%%", signer.sign("x", {}, timedelta(minutes=1)) + "."):
        assert signer.open("x", junk) is None


def test_service_token_from_variable_or_file(tmp_path: Path) -> None:
    assert load_service_token(Settings(api_token=TOKEN)) == TOKEN
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert load_service_token(Settings(api_token_file=str(path))) == TOKEN
    with pytest.raises(ConfigError, match="at least 16"):
        load_service_token(Settings(api_token="short"))
    with pytest.raises(ConfigError, match="TOKEN_FILE"):
        load_service_token(Settings(api_token_file=str(tmp_path / "missing")))


@pytest.mark.parametrize(
    ("query", "header", "expected"),
    [
        (None, None, "en"),
        (None, "ja-JP,ja;q=0.9,en;q=0.8", "ja"),
        (None, "en-US,en;q=0.9,ja;q=0.8", "en"),
        (None, "fr-FR, ja;q=0.5", "ja"),
        (None, "ja;q=0", "en"),
        ("ja", "en", "ja"),
        ("EN", "ja", "en"),
        ("xx", "ja", "ja"),
    ],
)
def test_language_by_query_then_accept_language(
    query: str | None, header: str | None, expected: str
) -> None:
    assert choose_language(query, header) == expected


def test_both_languages_have_every_label_and_the_contract_words() -> None:
    assert set(LABELS["en"]) == set(LABELS["ja"])
    en = LABELS["en"]
    for key, words in {
        "add_site_session": "Add site session",
        "label": "Label",
        "start_url": "Start URL",
        "logged_in_selector": "Logged-in selector",
        "login_url_pattern": "Login URL pattern",
        "open_login_window": "Open login window",
        "save": "Save",
        "cancel": "Cancel",
        "relogin": "Re-login",
        "revoke": "Revoke",
        "delete": "Delete",
        "status_active": "Active",
        "status_expired": "Expired",
        "status_revoked": "Revoked",
        "status_pending": "Pending",
        "capture_saving": "Checking that you're logged in…",
        "capture_not_logged_in": "Not logged in — keep going and press Save again",
    }.items():
        assert en[key] == words


def test_every_placeholder_of_the_page_is_filled() -> None:
    page = (Path(__file__).parents[2] / "producers/http/static/index.html").read_text()
    for lang in LABELS:
        html = render(page, lang, {"csrf": "</script><script>alert(1)</script>"})
        assert "{{" not in html
        assert "</script><script>alert(1)" not in html  # JSON cannot close its element


def test_the_page_may_be_framed_only_by_the_platform() -> None:
    policy = content_security_policy("https://platform.example", "https://lv.example:9193/x")
    assert "frame-ancestors https://platform.example;" in policy
    assert "frame-src https://lv.example:9193;" in policy
    assert "frame-ancestors 'none'" in content_security_policy("", "")


def test_openapi_document_names_every_route() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    assert {
        "/v1/sessions",
        "/v1/sessions/import",
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/relogin",
        "/v1/sessions/{session_id}/revoke",
        "/v1/captures/{capture_id}",
        "/v1/captures/{capture_id}/save",
        "/v1/captures/{capture_id}/cancel",
        "/v1/tasks",
        "/v1/browse",
        "/v1/browse/{job_id}",
        "/v1/ui-links",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
    } == set(DOCUMENT["paths"])


def test_openapi_document_matches_the_routes_served() -> None:
    from typing import cast

    from producers.api import SessionsClient
    from producers.http.app import build_app

    app = build_app(
        Settings(), cast(SessionsClient, object()), Auth(token=TOKEN, admins=frozenset())
    )
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not route.resource.canonical.startswith("/ui")
    }
    documented = {(path, method) for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert served == documented
