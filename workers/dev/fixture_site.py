"""A local website with a real login, for tests and the demo.

Logged in means both an HttpOnly session cookie and a localStorage token: the protected
pages ask ``/api/me`` with the token in a header and the API also needs the cookie, so a
restore that forgets localStorage lands on the login page. Switches make pages also need a
sessionStorage value or an IndexedDB record, rotate the session cookie and/or the
localStorage token on every authenticated request (the old one dies), log out a whole token
family when a rotated-away cookie or token is presented again (refresh-token reuse
detection), or end a session left idle for ``idle_timeout_s`` seconds.

Run by hand: ``python -m workers.dev.fixture_site --port 8080 --user alice:pw[:TOTPSECRET]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import html
import json
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from schema.errors import InvalidInput
from workers.dev import totp

COOKIE_NAME = "fixture_sid"
TOKEN_HEADER = "X-Fixture-Token"
SESSION_STORAGE_HEADER = "X-Fixture-Session-Storage"
INDEXEDDB_HEADER = "X-Fixture-IndexedDB"
LOCAL_STORAGE_KEY = "fixture_token"
SESSION_STORAGE_KEY = "fixture_session"
INDEXEDDB_NAME = "fixture"
INDEXEDDB_STORE = "auth"
INDEXEDDB_KEY = "token"
MAX_SLOW = timedelta(seconds=60)
PENDING_TOTP_TTL = timedelta(minutes=5)

_BOOL_SWITCHES = (
    "require_session_storage",
    "require_indexeddb",
    "rotate_cookie",
    "rotate_local_storage",
    "reuse_detection",
    "forget_on_login_page",
)

NEED_SESSION_STORAGE = "session_storage"
NEED_INDEXEDDB = "indexeddb"


@dataclass(frozen=True, kw_only=True)
class Switches:
    """Per-site behaviour, settable at creation and at run time."""

    require_session_storage: bool = False  # /app also needs the sessionStorage value
    require_indexeddb: bool = False  # /app also needs the IndexedDB record
    rotate_cookie: bool = False  # every authenticated request gets a new cookie, old one dies
    rotate_local_storage: bool = False  # /api/me hands out a new localStorage token, old dies
    reuse_detection: bool = False  # a rotated-away cookie or token ends its whole family
    idle_timeout_s: float = 0.0  # > 0: a session unused this long is logged out
    forget_on_login_page: bool = False  # the login page removes the localStorage token


@dataclass(frozen=True)
class _User:
    password: str
    totp_secret: str | None


@dataclass(frozen=True)
class _Session:
    user: str
    token: str  # kept in localStorage
    session_value: str  # kept in sessionStorage
    indexeddb_value: str  # kept in IndexedDB
    family: str = ""  # the login this session descends from (through rotations)


@dataclass(frozen=True)
class _Pending:
    user: str
    expires_at: float


class FixtureSite:
    """The site's state and handlers; serve it with :meth:`start`."""

    def __init__(self, *, switches: Switches | None = None) -> None:
        self._switches = switches or Switches()
        self._users: dict[str, _User] = {}
        self._sessions: dict[str, _Session] = {}  # session id (cookie value) -> session
        self._pending: dict[str, _Pending] = {}  # password ok, waiting for the TOTP code
        self._retired: dict[str, str] = {}  # rotated-away cookie or token -> its family
        self._last_seen: dict[str, float] = {}  # session id -> monotonic time of last use
        self.reuse_detected = 0  # how many times a family was logged out for reuse
        self._host = ""
        self._port = 0
        self.app = self._build_app()

    # ----- Python API -------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        *,
        switches: Switches | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> AsyncIterator[FixtureSite]:
        """Serve a new site (with ``switches``, default all off) on ``host:port`` (0 picks a
        free port) until the block exits."""
        site = cls(switches=switches)
        runner = web.AppRunner(site.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            tcp = web.TCPSite(runner, host, port)
            await tcp.start()
            site._host = host
            site._port = int(runner.addresses[0][1])
            yield site
        finally:
            await runner.cleanup()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """E.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    def url(self, path: str = "/") -> str:
        """An absolute URL on this site."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    @property
    def switches(self) -> Switches:
        return self._switches

    def set_switches(
        self,
        *,
        require_session_storage: bool | None = None,
        require_indexeddb: bool | None = None,
        rotate_cookie: bool | None = None,
        rotate_local_storage: bool | None = None,
        reuse_detection: bool | None = None,
        idle_timeout_s: float | None = None,
        forget_on_login_page: bool | None = None,
    ) -> Switches:
        """Change the given switches (``None`` leaves one as it is); returns the new set."""
        changes: dict[str, Any] = {
            "require_session_storage": require_session_storage,
            "require_indexeddb": require_indexeddb,
            "rotate_cookie": rotate_cookie,
            "rotate_local_storage": rotate_local_storage,
            "reuse_detection": reuse_detection,
            "idle_timeout_s": idle_timeout_s,
            "forget_on_login_page": forget_on_login_page,
        }
        self._switches = replace(
            self._switches, **{k: v for k, v in changes.items() if v is not None}
        )
        return self._switches

    def add_user(self, name: str, password: str, totp_secret: str | None = None) -> None:
        """Create or replace a user; with ``totp_secret`` (base32) login asks for a code."""
        if not name or not password:
            raise InvalidInput("user name and password must not be empty")
        if totp_secret is not None:
            totp.decode_secret(totp_secret)  # fail now, not at login
        self._users[name] = _User(password=password, totp_secret=totp_secret)

    def revoke(self, user: str) -> int:
        """End every server-side session of ``user``; returns how many there were."""
        doomed = [sid for sid, session in self._sessions.items() if session.user == user]
        for sid in doomed:
            del self._sessions[sid]
        return len(doomed)

    def session_count(self, user: str) -> int:
        """How many live server-side sessions ``user`` has."""
        return sum(1 for session in self._sessions.values() if session.user == user)

    # ----- session helpers --------------------------------------------------------------

    def _session_of(self, request: web.Request) -> tuple[str, _Session] | None:
        """The live session of the request's cookie (reuse and idle rules applied)."""
        sid = request.cookies.get(COOKIE_NAME, "")
        session = self._sessions.get(sid)
        if session is None:
            self._check_reuse(sid)
            return None
        idle = self._switches.idle_timeout_s
        now = time.monotonic()
        if idle > 0 and now - self._last_seen.get(sid, now) > idle:
            self._end(sid)
            return None
        self._last_seen[sid] = now
        return sid, session

    def _check_reuse(self, value: str) -> None:
        """A rotated-away cookie or token presented again: with reuse detection on, every
        session of its family ends (as OAuth refresh-token reuse detection does)."""
        family = self._retired.get(value) if value else None
        if family is None or not self._switches.reuse_detection:
            return
        self.reuse_detected += 1
        for sid in [k for k, v in self._sessions.items() if v.family == family]:
            self._end(sid)

    def _end(self, sid: str) -> None:
        self._sessions.pop(sid, None)
        self._last_seen.pop(sid, None)

    def _set_cookie(self, response: web.StreamResponse, sid: str) -> None:
        response.set_cookie(COOKIE_NAME, sid, path="/", httponly=True, samesite="Lax")

    def _maybe_rotate(self, response: web.StreamResponse, sid: str) -> None:
        if not self._switches.rotate_cookie:
            return
        session = self._sessions.pop(sid, None)
        if session is None:
            return
        new_sid = secrets.token_hex(16)
        self._sessions[new_sid] = session
        self._retired[sid] = session.family
        self._last_seen[new_sid] = self._last_seen.pop(sid, time.monotonic())
        self._set_cookie(response, new_sid)

    def _rotate_token(self, sid: str, session: _Session) -> str | None:
        """A new localStorage token for the session (the old one dies), when switched on."""
        if not self._switches.rotate_local_storage:
            return None
        token = secrets.token_hex(16)
        self._retired[session.token] = session.family
        self._sessions[sid] = replace(session, token=token)
        return token

    def _log_in(self, user: str, next_path: str) -> web.Response:
        sid = secrets.token_hex(16)
        session = _Session(
            user=user,
            token=secrets.token_hex(16),
            session_value=secrets.token_hex(16),
            indexeddb_value=secrets.token_hex(16),
            family=secrets.token_hex(8),
        )
        self._sessions[sid] = session
        self._last_seen[sid] = time.monotonic()
        response = _page("Logged in", _logged_in_body(session, next_path))
        self._set_cookie(response, sid)
        return response

    def _needs(self, requested: str) -> set[str]:
        needs = {part for part in requested.split(",") if part}
        if self._switches.require_session_storage:
            needs.add(NEED_SESSION_STORAGE)
        if self._switches.require_indexeddb:
            needs.add(NEED_INDEXEDDB)
        return needs

    # ----- handlers ---------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/", self._index),
                web.get("/login", self._login_form),
                web.post("/login", self._login_submit),
                web.post("/login/totp", self._totp_submit),
                web.post("/logout", self._logout),
                web.get("/app", self._protected(())),
                web.get("/app-session-storage", self._protected((NEED_SESSION_STORAGE,))),
                web.get("/app-indexeddb", self._protected((NEED_INDEXEDDB,))),
                web.get("/api/me", self._api_me),
                web.post("/admin/revoke", self._admin_revoke),
                web.get("/admin/switches", self._admin_switches),
                web.post("/admin/switches", self._admin_switches),
                web.post("/admin/users", self._admin_add_user),
                web.get("/redirect", self._redirect),
                web.get(r"/status/{code:\d{3}}", self._status),
                web.get("/slow", self._slow),
                web.get("/public", self._public),
                web.get("/sw", self._sw_page),
                web.get("/sw.js", self._sw_script),
                web.get("/favicon.ico", self._favicon),
            ]
        )
        return app

    async def _index(self, request: web.Request) -> web.Response:
        links = "".join(
            f'<li><a href="{p}">{p}</a></li>'
            for p in ("/login", "/app", "/app-session-storage", "/app-indexeddb", "/public", "/sw")
        )
        return _page("Fixture site", f"<h1>Fixture site</h1><ul>{links}</ul>")

    async def _login_form(self, request: web.Request) -> web.Response:
        body = _login_body(_safe_next(request.query.get("next", "")))
        if self._switches.forget_on_login_page:  # as many sites do with a dead session's token
            body += _FORGET_TOKENS
        return _page("Log in", body)

    async def _login_submit(self, request: web.Request) -> web.Response:
        form = await request.post()
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        next_path = _safe_next(str(form.get("next", "")))
        user = self._users.get(name)
        if user is None or not secrets.compare_digest(user.password.encode(), password.encode()):
            body = _login_body(next_path, error="Wrong user name or password.")
            return _page("Log in", body, status=401)
        if user.totp_secret is None:
            return self._log_in(name, next_path)
        self._drop_expired_pending()
        pending_id = secrets.token_hex(16)
        loop_now = asyncio.get_running_loop().time()
        self._pending[pending_id] = _Pending(
            user=name, expires_at=loop_now + PENDING_TOTP_TTL.total_seconds()
        )
        return _page("Two-step verification", _totp_body(pending_id, next_path))

    async def _totp_submit(self, request: web.Request) -> web.Response:
        form = await request.post()
        pending_id = str(form.get("pending", ""))
        next_path = _safe_next(str(form.get("next", "")))
        self._drop_expired_pending()
        pending = self._pending.get(pending_id)
        user = self._users.get(pending.user) if pending else None
        if pending is None or user is None or user.totp_secret is None:
            body = _login_body(next_path, error="Your sign-in expired; log in again.")
            return _page("Log in", body, status=401)
        if not totp.verify(user.totp_secret, str(form.get("totp", ""))):
            body = _totp_body(pending_id, next_path, error="Wrong code.")
            return _page("Two-step verification", body, status=401)
        del self._pending[pending_id]
        return self._log_in(pending.user, next_path)

    def _drop_expired_pending(self) -> None:
        now = asyncio.get_running_loop().time()
        for key in [k for k, p in self._pending.items() if p.expires_at < now]:
            del self._pending[key]

    async def _logout(self, request: web.Request) -> web.Response:
        found = self._session_of(request)
        if found is not None:
            del self._sessions[found[0]]
        response = _page("Logged out", _LOGGED_OUT_BODY)
        response.del_cookie(COOKIE_NAME, path="/")
        return response

    def _protected(
        self, page_needs: tuple[str, ...]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            found = self._session_of(request)
            if found is None:
                return _found(_login_url(request.path_qs))
            needs = ",".join(sorted(self._needs(",".join(page_needs))))
            response = _page("App", _app_body(needs))
            self._maybe_rotate(response, found[0])
            return response

        return handler

    async def _api_me(self, request: web.Request) -> web.Response:
        found = self._session_of(request)
        if found is None:
            return web.json_response({"error": "no session"}, status=401)
        sid, session = found
        expected = {TOKEN_HEADER: session.token}
        needs = self._needs(request.query.get("need", ""))
        if NEED_SESSION_STORAGE in needs:
            expected[SESSION_STORAGE_HEADER] = session.session_value
        if NEED_INDEXEDDB in needs:
            expected[INDEXEDDB_HEADER] = session.indexeddb_value
        for header, value in expected.items():
            given = request.headers.get(header, "")
            if not secrets.compare_digest(given.encode(), value.encode()):
                if header == TOKEN_HEADER:
                    self._check_reuse(given)
                return web.json_response({"error": f"missing or wrong {header}"}, status=401)
        token = self._rotate_token(sid, session)
        response = web.json_response({"user": session.user, **({"token": token} if token else {})})
        self._maybe_rotate(response, sid)
        return response

    async def _admin_revoke(self, request: web.Request) -> web.Response:
        user = request.query.get("user", "")
        if not user:
            raise web.HTTPBadRequest(text="user is required")
        return web.json_response({"user": user, "revoked": self.revoke(user)})

    async def _admin_switches(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            params = {**request.query, **(await request.post())}
            try:
                values: dict[str, Any] = {
                    name: _parse_bool(str(params[name]))
                    for name in _BOOL_SWITCHES
                    if name in params
                }
                if "idle_timeout_s" in params:
                    values["idle_timeout_s"] = float(str(params["idle_timeout_s"]))
            except ValueError as exc:
                raise web.HTTPBadRequest(text=str(exc)) from exc
            self.set_switches(**values)
        return web.json_response(dataclasses.asdict(self._switches))

    async def _admin_add_user(self, request: web.Request) -> web.Response:
        params = {**request.query, **(await request.post())}
        name, password = str(params.get("name", "")), str(params.get("password", ""))
        secret = str(params.get("totp_secret", "")) or None
        try:
            self.add_user(name, password, secret)
        except InvalidInput as exc:
            raise web.HTTPBadRequest(text=exc.message) from exc
        return web.json_response({"user": name, "totp": secret is not None})

    async def _redirect(self, request: web.Request) -> web.Response:
        target = request.query.get("to", "")
        if not target:
            raise web.HTTPBadRequest(text="to is required")
        return _found(target)

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        if not 200 <= code <= 599 or code in (204, 304):
            raise web.HTTPBadRequest(text="status must be 200-599 and carry a body")
        return _page(f"Status {code}", f'<h1 id="status">Status {code}</h1>', status=code)

    async def _slow(self, request: web.Request) -> web.Response:
        try:
            ms = int(request.query.get("ms", "1000"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text="ms must be an integer") from exc
        delay = min(max(ms, 0) / 1000, MAX_SLOW.total_seconds())
        await asyncio.sleep(delay)
        return _page("Slow", f'<p id="slow">Answered after {int(delay * 1000)} ms.</p>')

    async def _public(self, request: web.Request) -> web.Response:
        body = '<h1 id="public">Public page</h1><p>Anyone can read this page; no login needed.</p>'
        return _page("Public", body)

    async def _sw_page(self, request: web.Request) -> web.Response:
        return _page("sw: pending", _SW_BODY)

    async def _sw_script(self, request: web.Request) -> web.Response:
        return web.Response(text=_SW_SCRIPT, content_type="application/javascript")

    async def _favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)


# ----- HTML and JavaScript ------------------------------------------------------------


def _safe_next(value: str) -> str:
    """A same-site path to go to after login (never another origin)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/app"


def _found(location: str) -> web.Response:
    """A 302 with ``location`` verbatim (HTTPFound would re-normalise its escapes)."""
    return web.Response(status=302, headers={"Location": location})


def _login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="")


def _js(value: object) -> str:
    """A JSON literal that is safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    text = (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>\n{body}\n</body></html>\n"
    )
    return web.Response(text=text, content_type="text/html", status=status)


def _error_html(error: str) -> str:
    return f'<p id="error" role="alert">{html.escape(error)}</p>' if error else ""


def _login_body(next_path: str, *, error: str = "") -> str:
    return f"""<h1>Log in</h1>{_error_html(error)}
<form id="login" method="post" action="/login">
  <input type="hidden" name="next" value="{html.escape(next_path)}">
  <label>User name <input id="username" name="username" autocomplete="username" autofocus></label>
  <label>Password <input id="password" name="password" type="password"
    autocomplete="current-password"></label>
  <button id="submit" type="submit">Log in</button>
</form>"""


def _totp_body(pending_id: str, next_path: str, *, error: str = "") -> str:
    return f"""<h1>Two-step verification</h1>{_error_html(error)}
<form id="second-step" method="post" action="/login/totp">
  <input type="hidden" name="pending" value="{html.escape(pending_id)}">
  <input type="hidden" name="next" value="{html.escape(next_path)}">
  <label>Code <input id="totp" name="totp" inputmode="numeric" autocomplete="one-time-code"
    maxlength="6" autofocus></label>
  <button id="submit" type="submit">Verify</button>
</form>"""


_IDB_OPEN_JS = f"""
function openAuthDb() {{
  return new Promise((resolve, reject) => {{
    const request = indexedDB.open({_js(INDEXEDDB_NAME)}, 1);
    request.onupgradeneeded = () => request.result.createObjectStore({_js(INDEXEDDB_STORE)});
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  }});
}}"""


def _logged_in_body(session: _Session, next_path: str) -> str:
    """Stores the client-side tokens, then goes on to ``next_path``."""
    return f"""<p id="logged-in">Logged in; one moment…</p>
<script>
{_IDB_OPEN_JS}
async function storeTokens() {{
  localStorage.setItem({_js(LOCAL_STORAGE_KEY)}, {_js(session.token)});
  sessionStorage.setItem({_js(SESSION_STORAGE_KEY)}, {_js(session.session_value)});
  const db = await openAuthDb();
  await new Promise((resolve, reject) => {{
    const tx = db.transaction({_js(INDEXEDDB_STORE)}, "readwrite");
    tx.objectStore({_js(INDEXEDDB_STORE)}).put(
      {_js(session.indexeddb_value)}, {_js(INDEXEDDB_KEY)});
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  }});
  db.close();
}}
storeTokens().finally(() => location.replace({_js(next_path)}));
</script>"""


def _app_body(needs: str) -> str:
    """Asks /api/me with the stored tokens; shows #whoami or goes to the login page."""
    return f"""<h1>App</h1><p id="status">Checking your session…</p>
<script>
{_IDB_OPEN_JS}
async function readIndexedDb() {{
  const db = await openAuthDb();
  try {{
    return await new Promise((resolve, reject) => {{
      const tx = db.transaction({_js(INDEXEDDB_STORE)}, "readonly");
      const request = tx.objectStore({_js(INDEXEDDB_STORE)}).get({_js(INDEXEDDB_KEY)});
      request.onsuccess = () => resolve(request.result || "");
      request.onerror = () => reject(request.error);
    }});
  }} finally {{
    db.close();
  }}
}}
async function checkSession() {{
  const needs = {_js(needs)};
  const headers = {{{_js(TOKEN_HEADER)}: localStorage.getItem({_js(LOCAL_STORAGE_KEY)}) || ""}};
  if (needs.includes({_js(NEED_SESSION_STORAGE)})) {{
    headers[{_js(SESSION_STORAGE_HEADER)}] =
      sessionStorage.getItem({_js(SESSION_STORAGE_KEY)}) || "";
  }}
  if (needs.includes({_js(NEED_INDEXEDDB)})) {{
    headers[{_js(INDEXEDDB_HEADER)}] = await readIndexedDb().catch(() => "");
  }}
  const response = await fetch("/api/me?need=" + encodeURIComponent(needs),
                               {{headers, credentials: "same-origin"}});
  if (response.status === 401) {{
    location.replace("/login?next=" + encodeURIComponent(location.pathname + location.search));
    return;
  }}
  if (!response.ok) throw new Error("api/me answered " + response.status);
  const me = await response.json();
  if (me.token) localStorage.setItem({_js(LOCAL_STORAGE_KEY)}, me.token);
  const whoami = document.createElement("div");
  whoami.id = "whoami";
  whoami.textContent = "logged in as " + me.user;
  document.getElementById("status").replaceWith(whoami);
}}
checkSession().catch((error) => {{
  document.getElementById("status").textContent = "Error: " + error;
}});
</script>
<form method="post" action="/logout"><button id="logout" type="submit">Log out</button></form>"""


_FORGET_TOKENS = f"""<script>localStorage.removeItem({_js(LOCAL_STORAGE_KEY)});</script>"""

_LOGGED_OUT_BODY = f"""<p id="logged-out">Logged out.</p>
<script>
localStorage.removeItem({_js(LOCAL_STORAGE_KEY)});
sessionStorage.removeItem({_js(SESSION_STORAGE_KEY)});
</script>"""

_SW_BODY = """<h1>Service worker</h1><p id="sw-status">pending</p>
<script>
function report(status) {
  document.getElementById("sw-status").textContent = status;
  document.title = "sw: " + status;
}
if (!("serviceWorker" in navigator)) {
  report("unsupported");
} else {
  // A patched register() (Playwright's service_workers="block") resolves to nothing.
  navigator.serviceWorker.register("/sw.js").then(
    (registration) => report(registration ? "registered" : "blocked"),
    (error) => report("failed: " + error.name),
  );
}
</script>"""

_SW_SCRIPT = """self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("fetch", () => {});
"""


# ----- command line -------------------------------------------------------------------


def _parse_user(value: str) -> tuple[str, str, str | None]:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD or NAME:PASSWORD:TOTPSECRET")
    return parts[0], parts[1], (parts[2] if len(parts) == 3 and parts[2] else None)


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    switch_names = {f.name for f in dataclasses.fields(Switches)}
    switches = Switches(**{k: v for k, v in vars(args).items() if k in switch_names})
    async with FixtureSite.start(switches=switches, host=args.host, port=args.port) as site:
        for name, password, secret in args.user:
            site.add_user(name, password, secret)
        print(json.dumps({"base_url": site.base_url, "port": site.port}), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve the fixture site until SIGTERM or SIGINT; prints the base URL as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m workers.dev.fixture_site", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--user",
        action="append",
        type=_parse_user,
        default=[],
        metavar="NAME:PASSWORD[:TOTPSECRET]",
    )
    parser.add_argument("--require-session-storage", action="store_true")
    parser.add_argument("--require-indexeddb", action="store_true")
    parser.add_argument("--rotate-cookie", action="store_true")
    parser.add_argument("--rotate-local-storage", action="store_true")
    parser.add_argument("--reuse-detection", action="store_true")
    parser.add_argument(  # each switch's option stores under the switch's name
        "--idle-timeout",
        dest="idle_timeout_s",
        metavar="IDLE_TIMEOUT",
        type=float,
        default=0.0,
        help="seconds; 0 = never",
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except InvalidInput as exc:
        print(json.dumps({"error": exc.to_dict()}), flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
