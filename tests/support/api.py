"""The HTTP API's service token and admin in tests, and the headers a backend sends."""

from __future__ import annotations

API_TOKEN = "test-service-token-0123456789"
API_ADMIN = "root-admin"


def service_headers(actor: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    if actor is not None:
        headers["X-Acting-User"] = actor
    return headers
