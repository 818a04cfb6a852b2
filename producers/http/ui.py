"""The settings page under ``/ui/``: a signed link sets the page's cookie, the page is one
HTML file (labels filled in from the dictionary) plus one script and one stylesheet, no
build step and nothing from another origin."""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from producers.http.auth import COOKIE_NAME
from producers.http.i18n import choose_language, labels
from producers.http.routes import AUTH, SETTINGS

STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
LINK_REFUSED = "link_refused"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui", _to_page)
    app.router.add_get("/ui/", page)
    app.router.add_get("/ui/login", open_link)
    app.router.add_get("/ui/static/{name}", static)


def language(request: web.Request) -> str:
    return choose_language(request.query.get("lang"), request.headers.get("Accept-Language"))


def content_security_policy(frame_ancestors: str, liveview_public_url: str) -> str:
    """Own script and style only; the live view may be framed; the page itself only by the
    configured platform origin(s)."""
    frame_src = "http: https:"
    if liveview_public_url:
        parts = urlsplit(liveview_public_url)
        frame_src = f"{parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'; frame-src {frame_src}; "
        f"frame-ancestors {frame_ancestors.strip() or chr(39) + 'none' + chr(39)}; "
        "base-uri 'none'; form-action 'self'"
    )


def _headers(request: web.Request) -> dict[str, str]:
    settings = request.app[SETTINGS]
    return {
        "Content-Security-Policy": content_security_policy(
            settings.frame_ancestors, settings.liveview_public_url
        ),
        "Cache-Control": "no-store",
    }


async def _to_page(request: web.Request) -> web.StreamResponse:
    query = f"?{request.query_string}" if request.query_string else ""
    return web.Response(status=302, headers={"Location": "/ui/" + query})


async def open_link(request: web.Request) -> web.StreamResponse:
    """``/ui/login?token=...``: a valid link sets the cookie and goes to the page."""
    auth = request.app[AUTH]
    user = auth.open_link(request.query.get("token", ""))
    lang = language(request)
    if user is None:
        return _message(request, lang, LINK_REFUSED, status=403)
    response = web.Response(
        status=303, headers={**_headers(request), "Location": f"/ui/?lang={lang}"}
    )
    response.set_cookie(
        COOKIE_NAME,
        auth.cookie_for(user),
        max_age=int(auth.cookie_ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure or request.app[SETTINGS].api_public_url.startswith("https://"),
    )
    return response


async def page(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    cookie = request.cookies.get(COOKIE_NAME, "")
    user = auth.user_of_cookie(cookie)
    lang = language(request)
    if user is None:
        return _message(request, lang, LINK_REFUSED, status=401)
    config: dict[str, object] = {
        "lang": lang,
        "user": user,
        "csrf": auth.csrf_token(cookie),
        "labels": labels(lang),
    }
    return web.Response(
        text=render((STATIC / "index.html").read_text(encoding="utf-8"), lang, config),
        content_type="text/html",
        charset="utf-8",
        headers=_headers(request),
    )


def render(template: str, lang: str, config: dict[str, object]) -> str:
    """Fill ``{{t:key}}`` with escaped labels, ``{{lang}}`` and ``{{config}}`` (JSON that
    cannot end its script element)."""
    words = labels(lang)
    out = template.replace("{{lang}}", lang)
    for key, value in words.items():
        out = out.replace("{{t:" + key + "}}", html.escape(value))
    data = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    return out.replace("{{config}}", data.replace("&", "\\u0026"))


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(
        body=(STATIC / name).read_bytes(),
        content_type=STATIC_FILES[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def _message(request: web.Request, lang: str, key: str, *, status: int) -> web.Response:
    words = labels(lang)
    body = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{html.escape(words['title'])}</title></head><body><main>"
        f'<h1>{html.escape(words["title"])}</h1><p role="alert">{html.escape(words[key])}</p>'
        "</main></body></html>"
    )
    return web.Response(
        text=body, status=status, content_type="text/html", headers=_headers(request)
    )
