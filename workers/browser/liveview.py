"""The live view: a web page that shows a capture's remote browser and forwards input to it.

An aiohttp HTTP + WebSocket server that runs on the capture worker's event loop, next to
Playwright. A capture registers its browser context and gets a random token; the user opens
``url_for(capture_id, token)``. Each viewer gets its own CDP session on the current page:
screencast frames out (binary WS messages: 4-byte header length, JSON header, JPEG bytes),
mouse / keyboard / text in (JSON messages). At most one frame per viewer waits to be sent
and every frame is acknowledged once, so a slow viewer only lowers its own frame rate.
New pages of the context (popups, OAuth windows) are followed; when one closes, the view
goes back to the page below it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NotRequired, TypedDict, Unpack
from urllib.parse import quote, urlsplit

import aiohttp
import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from playwright.async_api import BrowserContext, CDPSession, Page
from playwright.async_api import Error as PlaywrightError

from schema.errors import InvalidInput

log = structlog.get_logger(__name__)

PAGE_FILE = Path(__file__).with_name("static") / "liveview.html"
MIN_WIDTH, MAX_WIDTH = 320, 1920
MIN_HEIGHT, MAX_HEIGHT = 240, 1440
MAX_COORDINATE = 100_000.0
MAX_TEXT_CHARS = 10_000
MAX_KEY_CHARS = 32
CLOSE_ACCESS_ENDED = 4403  # the viewer's token no longer opens this capture
_FORBIDDEN_BODY = "Forbidden"
_FORWARDED_HEADERS = frozenset(
    {
        "Content-Type",
        "Content-Security-Policy",
        "Cache-Control",
        "Referrer-Policy",
        "X-Content-Type-Options",
    }
)
DEFAULT_FRAME_ANCESTORS = "'self'"  # Settings.frame_ancestors (the orchestrator's origin) widens it
_DUMMY_HASH = hashlib.sha256(secrets.token_bytes(32)).digest()
_MOUSE_TYPES = {"move": "mouseMoved", "down": "mousePressed", "up": "mouseReleased"}
_BUTTONS = {0: "left", 1: "middle", 2: "right", 3: "back", 4: "forward"}
_KEY_TYPES = {"down", "up"}


@dataclass(frozen=True, kw_only=True)
class _Frame:
    cdp: CDPSession
    generation: int
    params: dict[str, Any]


class Registration(TypedDict):
    """A capture to make viewable (:meth:`LiveViewServer.register`): its browser context, the
    page to show first, what state the capture is in, and when its view stops (if ever)."""

    capture_id: str
    owner_id: str
    context: BrowserContext
    page: Page
    state_getter: Callable[[], str]
    expires_at: NotRequired[datetime | None]


class _Target:
    """One registered capture: its context, a stack of pages (top = shown) and its viewers."""

    def __init__(self, *, token: str, **registration: Unpack[Registration]) -> None:
        self.capture_id = registration["capture_id"]
        self.owner_id = registration["owner_id"]
        self.token_hash = _digest(token)
        self.context = registration["context"]
        self.pages: list[Page] = []
        self.state_getter = registration["state_getter"]
        self.expires_at = registration.get("expires_at")
        self.viewers: set[_Viewer] = set()
        self.viewport: dict[str, int] | None = None
        self.closed = False
        self.context.on("page", self._page_opened)
        self._page_opened(registration["page"])

    @property
    def current(self) -> Page | None:
        return self.pages[-1] if self.pages else None

    def admits(self, token: str) -> bool:
        """True when ``token`` is the token `LiveViewServer.register` returned and the capture
        is still open."""
        return hmac.compare_digest(_digest(token), self.token_hash) and self.open()

    def open(self) -> bool:
        return not self.closed and not self.expired()

    def expired(self) -> bool:
        return self.expires_at is not None and datetime.now(UTC) >= self.expires_at

    def state(self) -> str:
        try:
            return str(self.state_getter())
        except Exception:
            log.exception("liveview_state_getter_failed", capture_id=self.capture_id)
            return "unknown"

    def close(self) -> None:
        self.closed = True
        self.context.remove_listener("page", self._page_opened)
        for page in self.pages:
            page.remove_listener("close", self._page_closed)
        self.pages.clear()

    def _page_opened(self, page: Page) -> None:
        if self.closed or page in self.pages or page.is_closed():
            return
        self.pages.append(page)
        page.on("close", self._page_closed)
        self._notify()

    def _page_closed(self, page: Page) -> None:
        if page in self.pages:
            self.pages.remove(page)
            self._notify()

    def _notify(self) -> None:
        for viewer in self.viewers:
            viewer.page_changed()


class _Viewer:
    """One connected WebSocket: a CDP session on the shown page, frames out, input in."""

    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        target: _Target,
        call_timeout: timedelta,
        send_timeout: timedelta,
        status_interval: timedelta,
        jpeg_quality: int,
    ) -> None:
        self.ws = ws
        self.target = target
        self.frames_sent = 0
        self.frames_dropped = 0
        self._call_timeout = call_timeout.total_seconds()
        self._send_timeout = send_timeout.total_seconds()
        self._status_interval = status_interval.total_seconds()
        self._jpeg_quality = jpeg_quality
        self._cdp: CDPSession | None = None
        self._page: Page | None = None
        self._generation = 0
        self._pending: _Frame | None = None
        self._frame_ready = asyncio.Event()
        self._page_changed = asyncio.Event()
        self._status_due = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._attach_failures = 0

    def page_changed(self) -> None:
        self._page_changed.set()

    async def run(self) -> None:
        """Serve until the socket closes, the capture ends, or a loop fails."""
        self._page_changed.set()
        loops = [
            self._spawn(self._follow_pages()),
            self._spawn(self._send_frames()),
            self._spawn(self._send_status()),
        ]
        try:
            await self._read_input()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._detach()
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"") -> None:
        with suppress(Exception):
            async with asyncio.timeout(self._call_timeout):
                await self.ws.close(code=code, message=message)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if task.cancelled() or task.exception() is None or self.ws.closed:
            return
        log.warning(
            "liveview_viewer_failed",
            capture_id=self.target.capture_id,
            error=type(task.exception()).__name__,
        )
        self._spawn(self.close(WSCloseCode.INTERNAL_ERROR))

    # -- pages and screencast ------------------------------------------------------------

    async def _follow_pages(self) -> None:
        while True:
            await self._page_changed.wait()
            self._page_changed.clear()
            page = self.target.current
            if page is self._page and self._cdp is not None:
                continue
            await self._detach()
            if page is not None:
                await self._attach(page)
            self._status_due.set()

    async def _attach(self, page: Page) -> None:
        self._generation += 1
        generation = self._generation
        try:
            async with asyncio.timeout(self._call_timeout):
                cdp = await self.target.context.new_cdp_session(page)
                self._cdp, self._page = cdp, page
                cdp.on(
                    "Page.screencastFrame", lambda params: self._on_frame(cdp, generation, params)
                )
                if self.target.viewport is not None and page.viewport_size != self.target.viewport:
                    await page.set_viewport_size(self.target.viewport)  # type: ignore[arg-type]
                await page.bring_to_front()
                await cdp.send(
                    "Page.startScreencast",
                    {
                        "format": "jpeg",
                        "quality": self._jpeg_quality,
                        "maxWidth": MAX_WIDTH,
                        "maxHeight": MAX_HEIGHT,
                        "everyNthFrame": 1,
                    },
                )
            self._attach_failures = 0
        except (PlaywrightError, TimeoutError) as exc:
            self._attach_failures += 1
            log.info(
                "liveview_attach_failed",
                capture_id=self.target.capture_id,
                error=type(exc).__name__,
                failures=self._attach_failures,
            )
            await self._detach()
            self._page_changed.set()  # try again: or the page closed and another is on top
            await asyncio.sleep(min(5.0, 0.05 * 2**self._attach_failures))

    async def _detach(self) -> None:
        cdp, self._cdp, self._page, self._pending = self._cdp, None, None, None
        self._generation += 1
        if cdp is None:
            return
        with suppress(PlaywrightError, TimeoutError):
            async with asyncio.timeout(self._call_timeout):
                await cdp.send("Page.stopScreencast")
        with suppress(PlaywrightError, TimeoutError):
            async with asyncio.timeout(self._call_timeout):
                await cdp.detach()

    def _on_frame(self, cdp: CDPSession, generation: int, params: dict[str, Any]) -> None:
        if generation != self._generation:
            return  # a frame of a session being detached: nobody waits for its ack
        dropped, self._pending = (
            self._pending,
            _Frame(cdp=cdp, generation=generation, params=params),
        )
        if dropped is not None:
            self.frames_dropped += 1
            self._spawn(self._ack(dropped))
        self._frame_ready.set()

    async def _ack(self, frame: _Frame) -> None:
        if frame.generation != self._generation:
            return
        with suppress(PlaywrightError, TimeoutError):
            async with asyncio.timeout(self._call_timeout):
                await frame.cdp.send(
                    "Page.screencastFrameAck", {"sessionId": frame.params["sessionId"]}
                )

    async def _send_frames(self) -> None:
        while True:
            await self._frame_ready.wait()
            self._frame_ready.clear()
            frame, self._pending = self._pending, None
            if frame is None or frame.generation != self._generation:
                continue
            meta = frame.params.get("metadata", {})
            header = json.dumps(
                {
                    "seq": self.frames_sent + 1,
                    "w": meta.get("deviceWidth"),
                    "h": meta.get("deviceHeight"),
                    "top": meta.get("offsetTop", 0),
                    "ts": meta.get("timestamp"),
                },
                separators=(",", ":"),
            ).encode()
            jpeg = base64.b64decode(frame.params["data"])
            async with asyncio.timeout(self._send_timeout):
                await self.ws.send_bytes(struct.pack(">I", len(header)) + header + jpeg)
            self.frames_sent += 1
            await self._ack(frame)

    async def _send_status(self) -> None:
        last: dict[str, Any] | None = None
        sent_at = 0.0
        while True:
            if not self.target.open():
                await self.close(CLOSE_ACCESS_ENDED, b"access ended")
                return
            page = self._page
            status = {
                "t": "status",
                "state": self.target.state(),
                "url": page.url if page is not None else "",
                "viewport": page.viewport_size if page is not None else None,
                "pages": len(self.target.pages),
            }
            if status != last or time.monotonic() - sent_at >= 5 * self._status_interval:
                async with asyncio.timeout(self._send_timeout):
                    await self.ws.send_json(status)
                last, sent_at = status, time.monotonic()
            with suppress(TimeoutError):
                async with asyncio.timeout(self._status_interval):
                    await self._status_due.wait()
            self._status_due.clear()

    # -- input ---------------------------------------------------------------------------

    async def _read_input(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict):
                await self._handle(data)

    async def _handle(self, data: dict[str, Any]) -> None:
        kind = data.get("t")
        if kind == "mouse":
            await self._mouse(data)
        elif kind == "wheel":
            await self._wheel(data)
        elif kind == "key":
            await self._key(data)
        elif kind == "text":
            text = _text(data.get("text"), MAX_TEXT_CHARS)
            if text:
                await self._call("Input.insertText", {"text": text})
        elif kind == "resize":
            await self._resize(data)
        elif kind == "back":
            await self._back()
        elif kind == "reload":
            await self._call("Page.reload", {})

    async def _mouse(self, data: dict[str, Any]) -> None:
        kind = _MOUSE_TYPES.get(str(data.get("type")))
        if kind is None:
            return
        button = (
            _BUTTONS.get(_int(data.get("button"), 0, 4), "none") if kind != "mouseMoved" else "none"
        )
        await self._call(
            "Input.dispatchMouseEvent",
            {
                "type": kind,
                "x": _number(data.get("x")),
                "y": _number(data.get("y")),
                "button": button,
                "buttons": _int(data.get("buttons"), 0, 31),
                "clickCount": _int(data.get("clicks"), 0, 3) if kind != "mouseMoved" else 0,
                "modifiers": _int(data.get("mods"), 0, 15),
            },
        )

    async def _wheel(self, data: dict[str, Any]) -> None:
        await self._call(
            "Input.dispatchMouseEvent",
            {
                "type": "mouseWheel",
                "x": _number(data.get("x")),
                "y": _number(data.get("y")),
                "deltaX": _number(data.get("dx"), signed=True),
                "deltaY": _number(data.get("dy"), signed=True),
                "modifiers": _int(data.get("mods"), 0, 15),
            },
        )

    async def _key(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind not in _KEY_TYPES:
            return
        text = _text(data.get("text"), 4)
        params: dict[str, Any] = {
            "type": "keyUp" if kind == "up" else ("keyDown" if text else "rawKeyDown"),
            "key": _text(data.get("key"), MAX_KEY_CHARS),
            "code": _text(data.get("code"), MAX_KEY_CHARS),
            "windowsVirtualKeyCode": _int(data.get("keyCode"), 0, 255),
            "nativeVirtualKeyCode": _int(data.get("keyCode"), 0, 255),
            "location": _int(data.get("location"), 0, 3),
            "autoRepeat": data.get("repeat") is True,
            "modifiers": _int(data.get("mods"), 0, 15),
        }
        if text and kind == "down":
            params["text"] = params["unmodifiedText"] = text
        await self._call("Input.dispatchKeyEvent", params)

    async def _resize(self, data: dict[str, Any]) -> None:
        size = {
            "width": _int(data.get("width"), MIN_WIDTH, MAX_WIDTH),
            "height": _int(data.get("height"), MIN_HEIGHT, MAX_HEIGHT),
        }
        self.target.viewport = size
        page = self._page
        if page is None or page.viewport_size == size:
            return
        with suppress(PlaywrightError, TimeoutError):
            async with asyncio.timeout(self._call_timeout):
                await page.set_viewport_size(size)  # type: ignore[arg-type]
        self._status_due.set()

    async def _back(self) -> None:
        history = await self._call("Page.getNavigationHistory", {})
        if not history:
            return
        index = history.get("currentIndex", 0)
        entries = history.get("entries", [])
        if isinstance(index, int) and 0 < index < len(entries):
            await self._call("Page.navigateToHistoryEntry", {"entryId": entries[index - 1]["id"]})

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Send one CDP command on the shown page; input for a page being switched is dropped."""
        cdp = self._cdp
        if cdp is None:
            return None
        try:
            async with asyncio.timeout(self._call_timeout):
                result: dict[str, Any] = await cdp.send(method, params)
                return result
        except (PlaywrightError, TimeoutError) as exc:
            log.debug(
                "liveview_cdp_failed",
                capture_id=self.target.capture_id,
                method=method,
                error=type(exc).__name__,
            )
            return None


def _number(value: Any, *, signed: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    low = -MAX_COORDINATE if signed else 0.0
    return float(min(max(value, low), MAX_COORDINATE))


def _int(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return low
    return int(min(max(int(value), low), high))


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Forwarder = Callable[[web.Request, str], Awaitable[web.StreamResponse]]
TicketCheck = Callable[[str, str], Awaitable[bool]]
"""``(capture_id, token) -> bool``: whether a token minted for the capture's owner is live."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}{port}"


def _csp_for(page: str, frame_ancestors: str) -> str:
    """A CSP that allows exactly the page's own inline script and style, nothing external."""

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digests = (base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in bodies)
        return " ".join(f"'sha256-{d}'" for d in digests)

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "img-src blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        f"frame-ancestors {frame_ancestors or DEFAULT_FRAME_ANCESTORS}"
    )


class ServerOptions(TypedDict, total=False):
    """What :meth:`LiveViewServer.start` passes on to the server (defaults: its ``__init__``)."""

    public_base_url: str | None
    ticket_check: TicketCheck | None
    frame_ancestors: str
    peers: str
    max_viewers_per_capture: int
    call_timeout: timedelta
    status_interval: timedelta
    jpeg_quality: int


class LiveViewServer:
    """Serves ``/live/{capture_id}?token=...`` (the page) and ``.../ws`` (its WebSocket).

    A token opens a capture when `register` returned it, or when ``ticket_check`` (the
    database's owner tickets) accepts it. The WebSocket refuses an ``Origin`` other than the
    public base URL's (the bound address's when none is set), so another site cannot drive
    the view with a viewer's token; ``frame_ancestors`` says who may embed the page.

    Behind one public host for several capture pods, each pod's public base URL ends in
    ``/p/<its pod IP>``, and ``peers`` names the DNS name that resolves to every pod (the
    headless Service): a request for ``/p/<address>/live/...`` that reaches another pod is
    forwarded (page and WebSocket, ``Origin`` included) to ``<address>`` if, and only if, that
    address is one of the peers; the holding pod makes every check.
    """

    def __init__(
        self,
        *,
        public_base_url: str | None = None,
        ticket_check: TicketCheck | None = None,
        frame_ancestors: str = "",
        peers: str = "",
        peer_port: int = 9193,
        max_viewers_per_capture: int = 3,
        max_message_bytes: int = 64 * 1024,
        call_timeout: timedelta = timedelta(seconds=10),
        send_timeout: timedelta = timedelta(seconds=30),
        status_interval: timedelta = timedelta(seconds=1),
        jpeg_quality: int = 70,
    ) -> None:
        self._public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._ticket_check = ticket_check
        self._own_address = _pod_address(self._public_base_url or "")
        self._peers = _Peers(peers, call_timeout) if peers else None
        self._peer_port = peer_port
        self._client: aiohttp.ClientSession | None = None
        self._max_viewers = max_viewers_per_capture
        self._max_message_bytes = max_message_bytes
        self._call_timeout = call_timeout
        self._send_timeout = send_timeout
        self._status_interval = status_interval
        self._jpeg_quality = jpeg_quality
        self._targets: dict[str, _Target] = {}
        self._page_html = PAGE_FILE.read_text(encoding="utf-8")
        self._headers = {
            "Content-Security-Policy": _csp_for(self._page_html, frame_ancestors),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        }
        self._bound_url = ""
        self._frames_sent_ended = 0
        self._frames_dropped_ended = 0

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Unpack[ServerOptions],
    ) -> AsyncIterator[LiveViewServer]:
        """Listen on ``host:port`` (0 = any free port; peers are reached on the same port)
        until the block exits."""
        server = cls(peer_port=port, **options)
        app = web.Application(client_max_size=server._max_message_bytes)
        app.router.add_get("/live/{capture_id}", server._page)
        app.router.add_get("/live/{capture_id}/ws", server._socket)
        app.router.add_get(
            "/p/{address}/live/{capture_id}", server._routed(server._page, server._forward_page)
        )
        app.router.add_get(
            "/p/{address}/live/{capture_id}/ws",
            server._routed(server._socket, server._forward_socket),
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)  # URLs hold tokens
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            bound_host, bound_port = runner.addresses[0][:2]
            server._bound_url = f"http://{_url_host(bound_host)}:{bound_port}"
            log.info("liveview_started", base_url=server.base_url)
            yield server
        finally:
            for capture_id in list(server._targets):
                await server.unregister(capture_id)
            await runner.cleanup()
            if server._client is not None:
                await server._client.close()

    @property
    def base_url(self) -> str:
        """Where users reach this server: the public base URL, or the bound address."""
        return self._public_base_url or self._bound_url

    @property
    def viewers(self) -> int:
        """Connected viewers across all captures (a gauge for Prometheus)."""
        return sum(len(target.viewers) for target in self._targets.values())

    @property
    def frames_sent(self) -> int:
        """Frames sent to viewers since start (a counter)."""
        live = sum(v.frames_sent for t in self._targets.values() for v in t.viewers)
        return self._frames_sent_ended + live

    @property
    def frames_dropped(self) -> int:
        """Frames replaced before a slow viewer could take them (a counter)."""
        live = sum(v.frames_dropped for t in self._targets.values() for v in t.viewers)
        return self._frames_dropped_ended + live

    def register(self, **registration: Unpack[Registration]) -> str:
        """Make a capture viewable; returns its access token (never log it)."""
        capture_id, owner_id = registration["capture_id"], registration["owner_id"]
        expires_at = registration.get("expires_at")
        if not capture_id or not owner_id:
            raise InvalidInput("capture_id and owner_id are required")
        if capture_id in self._targets:
            raise InvalidInput("this capture already has a live view", capture_id=capture_id)
        if registration["page"].context is not registration["context"]:
            raise InvalidInput("page must belong to context")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expires_at must be timezone-aware")
        token = secrets.token_urlsafe(32)
        self._targets[capture_id] = _Target(token=token, **registration)
        log.info("liveview_registered", capture_id=capture_id, owner_id=owner_id)
        return token

    async def unregister(self, capture_id: str) -> None:
        """End the capture's live view: its token stops working and its viewers disconnect."""
        target = self._targets.pop(capture_id, None)
        if target is None:
            return
        target.close()
        viewers = list(target.viewers)
        await asyncio.gather(*(v.close(CLOSE_ACCESS_ENDED, b"access ended") for v in viewers))
        log.info("liveview_unregistered", capture_id=capture_id, viewers=len(viewers))

    def url_for(self, capture_id: str, token: str) -> str:
        """The URL a user opens to see and drive this capture."""
        return f"{self.base_url}/live/{quote(capture_id, safe='')}?token={quote(token, safe='')}"

    async def _authorize(self, request: web.Request) -> _Target | None:
        target = self._targets.get(request.match_info["capture_id"])
        token = request.query.get("token", "")
        if target is None:
            hmac.compare_digest(_digest(token), _DUMMY_HASH)  # same work whether or not it exists
            return None
        if target.admits(token):
            return target
        if not token or self._ticket_check is None or not target.open():
            return None
        try:
            admitted = await self._ticket_check(target.capture_id, token)
        except Exception as exc:
            log.warning("liveview_ticket_check_failed", error=type(exc).__name__)
            return None
        return target if admitted and target.open() else None

    def _origin_allowed(self, request: web.Request) -> bool:
        """A browser always sends ``Origin`` on a WebSocket; it must be this server's own."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: no ambient credentials to abuse
        expected = (
            _origin_of(self._public_base_url)
            if self._public_base_url
            else _origin_of(f"{request.scheme}://{request.host}")
        )
        return _origin_of(origin) == expected

    async def _page(self, request: web.Request) -> web.StreamResponse:
        if await self._authorize(request) is None:
            return _forbidden()
        return web.Response(
            text=self._page_html, content_type="text/html", charset="utf-8", headers=self._headers
        )

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if not self._origin_allowed(request):
            log.info("liveview_origin_refused", capture_id=request.match_info["capture_id"])
            return _forbidden()
        target = await self._authorize(request)
        if target is None:
            return _forbidden()
        if len(target.viewers) >= self._max_viewers:
            return web.Response(status=429, text="Too many viewers")
        ws = web.WebSocketResponse(
            max_msg_size=self._max_message_bytes, heartbeat=30.0, compress=False
        )
        viewer = _Viewer(
            ws=ws,
            target=target,
            call_timeout=self._call_timeout,
            send_timeout=self._send_timeout,
            status_interval=self._status_interval,
            jpeg_quality=self._jpeg_quality,
        )
        target.viewers.add(viewer)  # before any await: the viewer limit holds under races
        try:
            await ws.prepare(request)
            log.info("liveview_viewer_connected", capture_id=target.capture_id)
            await viewer.run()
        finally:
            target.viewers.discard(viewer)
            self._frames_sent_ended += viewer.frames_sent
            self._frames_dropped_ended += viewer.frames_dropped
            await viewer.close()
            log.info(
                "liveview_viewer_disconnected",
                capture_id=target.capture_id,
                frames_sent=viewer.frames_sent,
                frames_dropped=viewer.frames_dropped,
            )
        return ws

    # -- forwarding to the pod that holds the capture ------------------------------------

    def _routed(self, local: _Handler, forward: _Forwarder) -> _Handler:
        """Serve ``/p/<address>/...`` here when it names this pod, else forward it to a peer."""

        async def handler(request: web.Request) -> web.StreamResponse:
            if request.match_info["address"] == self._own_address:
                return await local(request)
            upstream = await self._upstream(request)
            if upstream is None:
                return _forbidden()
            return await forward(request, upstream)

        return handler

    async def _forward_page(self, request: web.Request, upstream: str) -> web.StreamResponse:
        client = self._http()
        try:
            async with client.get(upstream, allow_redirects=False) as response:
                body = await response.read()
                kept = {k: v for k, v in response.headers.items() if k in _FORWARDED_HEADERS}
                return web.Response(status=response.status, body=body, headers=kept)
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=502, text="Bad Gateway")

    async def _forward_socket(self, request: web.Request, upstream_url: str) -> web.StreamResponse:
        headers = {"Origin": request.headers["Origin"]} if "Origin" in request.headers else {}
        try:
            upstream = await self._http().ws_connect(
                upstream_url, headers=headers, max_msg_size=0, heartbeat=30.0
            )
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(status=exc.status, text=_FORBIDDEN_BODY)
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=502, text="Bad Gateway")
        ws = web.WebSocketResponse(
            max_msg_size=self._max_message_bytes, heartbeat=30.0, compress=False
        )
        try:
            await ws.prepare(request)
            pumps = [
                asyncio.ensure_future(_pump(upstream, ws)),
                asyncio.ensure_future(_pump(ws, upstream)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            code = upstream.close_code or WSCloseCode.GOING_AWAY
            await upstream.close()
            await ws.close(code=code)
        return ws

    async def _upstream(self, request: web.Request) -> str | None:
        """The holding pod's URL for this request, if its address is one of the peers."""
        address = request.match_info["address"]
        if self._peers is None or not await self._peers.has(address):
            return None
        return f"http://{_url_host(address)}:{self._peer_port}{request.rel_url}"

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._call_timeout.total_seconds()
                )
            )
        return self._client


def _pod_address(public_base_url: str) -> str | None:
    """``10.1.2.3`` from a public base URL ending in ``/p/10.1.2.3`` (see `LiveViewServer`)."""
    match = re.search(r"/p/([^/]+)$", urlsplit(public_base_url).path)
    return match[1] if match else None


class _Peers:
    """The live-view servers of the other capture pods: every address ``name`` resolves to
    (the headless Service), re-resolved at most every few seconds."""

    def __init__(self, name: str, timeout: timedelta) -> None:
        self._name = name
        self._timeout = timeout.total_seconds()
        self._addresses: frozenset[str] = frozenset()
        self._resolved_at = -math.inf

    async def has(self, address: str) -> bool:
        try:
            wanted = str(ipaddress.ip_address(address))
        except ValueError:
            return False
        if wanted not in self._addresses or time.monotonic() - self._resolved_at > 5:
            try:
                async with asyncio.timeout(self._timeout):
                    infos = await asyncio.get_running_loop().getaddrinfo(
                        self._name, None, type=socket.SOCK_STREAM
                    )
            except (OSError, TimeoutError):
                return False
            self._addresses = frozenset(str(ipaddress.ip_address(i[4][0])) for i in infos)
            self._resolved_at = time.monotonic()
        return wanted in self._addresses


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        else:
            return


def _forbidden() -> web.Response:
    return web.Response(
        status=403, text=_FORBIDDEN_BODY, headers={"X-Content-Type-Options": "nosniff"}
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
