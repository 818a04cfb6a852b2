"""Who is calling the HTTP API.

- The platform's backend: ``Authorization: Bearer <service token>`` (compared in constant
  time) and ``X-Acting-User: <user id>``; the actor is an admin when listed in
  ``BROWSER_SESSIONS_ADMINS``.
- The settings page: a short-lived signed link (``POST /v1/ui-links``) sets an HttpOnly,
  ``SameSite=Strict`` cookie valid for that user only; every state-changing call from the
  page also carries ``X-CSRF-Token``. Page users are never admins.

Links, cookies and CSRF tokens are HMAC-SHA256 signed with a key derived (HKDF) from the
service token, so every API replica with the same token accepts them and rotating the
token ends them all. The workers' keys are never involved.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from producers.validation import require_id
from schema.errors import ConfigError, CsrfRejected, Unauthenticated
from schema.settings import Settings

COOKIE_NAME = "bs_ui"
CSRF_HEADER = "X-CSRF-Token"
ACTOR_HEADER = "X-Acting-User"
MIN_TOKEN_CHARS = 16
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, kw_only=True)
class Caller:
    """The acting user of one request and how they authenticated."""

    user_id: str
    admin: bool
    via: str  # "token" (the platform's backend) or "cookie" (the settings page)


def load_service_token(settings: Settings) -> str:
    """The service token from ``API_TOKEN`` or the file ``API_TOKEN_FILE``; ``CONFIG_ERROR``
    when neither gives one of at least 16 characters."""
    token = settings.api_token
    if not token and settings.api_token_file:
        try:
            token = Path(settings.api_token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"BROWSER_SESSIONS_API_TOKEN_FILE: cannot read it ({exc.strerror})"
            ) from None
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            "BROWSER_SESSIONS_API_TOKEN (or _TOKEN_FILE) must hold a service token of at least "
            f"{MIN_TOKEN_CHARS} characters"
        )
    return token


class Signer:
    """Signed, expiring, purpose-bound tokens: ``base64url(json).base64url(hmac)``."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, purpose: str, data: dict[str, object], ttl: timedelta) -> str:
        body = dict(data, exp=int(time.time() + ttl.total_seconds()))
        payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{self._mac(purpose, payload)}"

    def open(self, purpose: str, token: str) -> dict[str, object] | None:
        """The signed data, or None when forged, for another purpose, or expired."""
        payload, _, mac = token.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(purpose, payload).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            return None
        return data if data["exp"] > time.time() else None

    def mac(self, purpose: str, value: str) -> str:
        return self._mac(purpose, value)

    def _mac(self, purpose: str, payload: str) -> str:
        digest = hmac.new(self._key, f"{purpose}.{payload}".encode(), hashlib.sha256).digest()
        return _b64(digest)


class Auth:
    """Resolves each request to a :class:`Caller`, or raises ``UNAUTHENTICATED`` /
    ``CSRF_REJECTED``."""

    def __init__(
        self,
        *,
        token: str,
        admins: frozenset[str],
        link_ttl: timedelta = timedelta(minutes=2),
        cookie_ttl: timedelta = timedelta(hours=8),
    ) -> None:
        self._token = token.encode()
        self._admins = admins
        self.link_ttl = link_ttl
        self.cookie_ttl = cookie_ttl
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"browser-sessions ui v1"
        ).derive(self._token)
        self.signer = Signer(key)

    def is_service(self, request: web.Request) -> bool:
        """True when the request carries the service token."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    def caller(self, request: web.Request) -> Caller:
        if "Authorization" in request.headers:
            if not self.is_service(request):
                raise Unauthenticated("the service token is missing or wrong")
            actor = require_id(ACTOR_HEADER, request.headers.get(ACTOR_HEADER, ""))
            return Caller(user_id=actor, admin=actor in self._admins, via="token")
        cookie = request.cookies.get(COOKIE_NAME)
        data = self.signer.open("cookie", cookie) if cookie else None
        if data is None or not isinstance(data.get("u"), str):
            raise Unauthenticated(
                "send Authorization: Bearer <token> and X-Acting-User, or open a UI link"
            )
        if request.method not in SAFE_METHODS:
            given = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode(), self.csrf_token(cookie or "").encode()):
                raise CsrfRejected("the page's CSRF token is missing or wrong")
        return Caller(user_id=str(data["u"]), admin=False, via="cookie")

    def service_only(self, request: web.Request) -> None:
        if not self.is_service(request):
            raise Unauthenticated("this call needs the service token")

    def link_token(self, user_id: str) -> str:
        return self.signer.sign("link", {"u": user_id}, self.link_ttl)

    def open_link(self, token: str) -> str | None:
        data = self.signer.open("link", token)
        user = data.get("u") if data else None
        return user if isinstance(user, str) else None

    def cookie_for(self, user_id: str) -> str:
        return self.signer.sign(
            "cookie", {"u": user_id, "n": secrets.token_hex(8)}, self.cookie_ttl
        )

    def user_of_cookie(self, cookie: str | None) -> str | None:
        data = self.signer.open("cookie", cookie) if cookie else None
        user = data.get("u") if data else None
        return user if isinstance(user, str) else None

    def csrf_token(self, cookie: str) -> str:
        """The CSRF token that goes with one cookie (the page gets it in its HTML)."""
        return self.signer.mac("csrf", cookie)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
