"""The live view against real Chromium: one browser is the capture's remote browser, showing a
tiny login form served here; a second browser is the user, looking at the live view page."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from workers.browser.chromium import browser_launch_options
from workers.browser.liveview import LiveViewServer

pytestmark = pytest.mark.integration

SCREENSHOT = "/tmp/liveview.png"
_ids = itertools.count(1)

LOGIN_PAGE = """<!doctype html><html><head><title>Fixture login</title><style>
body { font: 18px sans-serif; margin: 40px; background: #f4f7fb; }
h1 { color: #1d4f91; } input, button { font-size: 18px; margin: 6px 0; padding: 6px; }
</style></head><body>
<h1>Sign in to Fixture</h1>
<form method="post" action="/login">
  <div><input id="user" name="user" placeholder="user name" autocomplete="off"></div>
  <div><input id="password" name="password" type="password" placeholder="password"></div>
  <div><button id="submit" type="submit">Sign in</button></div>
</form>
<p><button id="oauth" type="button"
  onclick="window.open('/popup', 'oauth', 'width=500,height=400')">Sign in with OAuth</button></p>
<div id="scroller" style="height: 3000px"></div>
</body></html>"""

POPUP_PAGE = """<!doctype html><html><head><title>OAuth</title></head>
<body style="background: #ffe08a; font: 20px sans-serif">
<h2>OAuth provider</h2><button id="close" onclick="window.close()">Done</button>
</body></html>"""


LOGIN_RGB = (0xF4, 0xF7, 0xFB)
POPUP_RGB = (0xFF, 0xE0, 0x8A)


async def _welcome(request: web.Request) -> web.Response:
    form = await request.post()
    user = str(form.get("user", ""))
    password = str(form.get("password", ""))
    body = f"<h1 id='welcome'>Welcome {user}</h1><p id='pwlen'>{len(password)}</p>"
    return web.Response(text=body, content_type="text/html")


def _html(body: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/html")

    return handler


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", _html(LOGIN_PAGE))
    app.router.add_get("/popup", _html(POPUP_PAGE))
    app.router.add_post("/login", _welcome)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture(scope="module")
async def pw() -> AsyncIterator[Playwright]:
    async with async_playwright() as playwright:
        yield playwright


async def _launch(pw: Playwright, chromium_path: str) -> Browser:
    return await pw.chromium.launch(
        headless=True, timeout=30_000, **browser_launch_options(chromium_path)
    )


@pytest.fixture(scope="module")
async def remote_browser(pw: Playwright, chromium_path: str) -> AsyncIterator[Browser]:
    browser = await _launch(pw, chromium_path)
    yield browser
    await browser.close()


@pytest.fixture(scope="module")
async def user_browser(pw: Playwright, chromium_path: str) -> AsyncIterator[Browser]:
    browser = await _launch(pw, chromium_path)
    yield browser
    await browser.close()


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[LiveViewServer]:
    async with LiveViewServer.start(
        host="127.0.0.1", port=0, status_interval=timedelta(milliseconds=200)
    ) as live:
        yield live


@dataclass
class Capture:
    capture_id: str
    token: str
    url: str
    context: BrowserContext
    page: Page
    state: list[str]


@pytest.fixture
async def capture(
    server: LiveViewServer, remote_browser: Browser, site: str
) -> AsyncIterator[Capture]:
    context = await remote_browser.new_context()
    context.set_default_timeout(10_000)
    page = await context.new_page()
    await page.goto(site + "/")
    capture_id = f"cap-{next(_ids)}"
    state = ["open"]
    token = server.register(
        capture_id=capture_id,
        owner_id="alice",
        context=context,
        page=page,
        state_getter=lambda: state[0],
    )
    yield Capture(capture_id, token, server.url_for(capture_id, token), context, page, state)
    await server.unregister(capture_id)
    await context.close()


@pytest.fixture
async def user(user_browser: Browser) -> AsyncIterator[Page]:
    context = await user_browser.new_context(viewport={"width": 1000, "height": 760})
    context.set_default_timeout(10_000)
    page = await context.new_page()
    yield page
    await context.close()


async def _open_view(user: Page, capture: Capture) -> None:
    """Open the live view and wait until it shows the remote page at the viewer's size."""
    response = await user.goto(capture.url)
    assert response is not None and response.status == 200
    await user.wait_for_function(
        """() => {
            const lv = window.liveview, st = document.getElementById('stage');
            return lv.frames > 0 && lv.status && lv.status.viewport &&
                lv.status.viewport.width === st.clientWidth && lv.lastFrame.w === st.clientWidth;
        }"""
    )


async def _click_remote(user: Page, remote: Page, selector: str) -> None:
    """Click, through the live view, on the centre of ``selector`` in the remote page."""
    box = await remote.locator(selector).bounding_box()
    assert box is not None
    rect: dict[str, float] = await user.evaluate(
        """() => { const lv = window.liveview, f = lv.lastFrame;
            const r = lv.canvas.getBoundingClientRect();
            return {left: r.left, top: r.top, sx: r.width / f.w, sy: r.height / f.h}; }"""
    )
    x = rect["left"] + (box["x"] + box["width"] / 2) * rect["sx"]
    y = rect["top"] + (box["y"] + box["height"] / 2) * rect["sy"]
    await user.mouse.click(x, y)


async def _eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)


async def _status(client: aiohttp.ClientSession, url: str) -> int:
    async with client.get(url) as response:
        await response.read()
        return response.status


def _ws_url(url: str) -> str:
    path, _, query = url.partition("?")
    return f"{path}/ws?{query}"


async def test_viewer_draws_frames_and_state(user: Page, capture: Capture, site: str) -> None:
    await _open_view(user, capture)
    drawn = await user.evaluate(
        """() => { const c = window.liveview.canvas, d = c.getContext('2d')
              .getImageData(0, 0, c.width, c.height).data;
            const seen = new Set();
            for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] >> 4 << 8 | d[i + 1] >> 4);
            return {w: c.width, h: c.height, colours: seen.size}; }"""
    )
    assert drawn["w"] > 300 and drawn["h"] > 200
    assert drawn["colours"] > 3, "the canvas should show the page, not a blank fill"
    assert await user.locator("#url").text_content() == site + "/"
    assert await user.locator("#state").text_content() == "open"
    capture.state[0] = "saving"
    await user.wait_for_function("() => document.getElementById('state').textContent === 'saving'")


async def test_typing_and_enter_submit_the_form(user: Page, capture: Capture) -> None:
    await _open_view(user, capture)
    await _click_remote(user, capture.page, "#user")
    await user.keyboard.type("alice")
    await _eventually(lambda: _value_is(capture.page, "#user", "alice"))
    await user.keyboard.press("Backspace")
    await user.keyboard.type("e!")
    await _eventually(lambda: _value_is(capture.page, "#user", "alice!"))
    await user.keyboard.press("Tab")
    await user.keyboard.type("s3cret")
    await _eventually(lambda: _value_is(capture.page, "#password", "s3cret"))
    assert await capture.page.input_value("#user") == "alice!"
    await user.screenshot(path=SCREENSHOT)
    await user.keyboard.press("Enter")
    await capture.page.wait_for_selector("#welcome")
    assert await capture.page.text_content("#welcome") == "Welcome alice!"
    assert await capture.page.text_content("#pwlen") == "6"
    await user.wait_for_function(
        "() => document.getElementById('url').textContent.endsWith('/login')"
    )


async def _evaluate_or_none(page: Page, script: str) -> Any:
    """Evaluate, or None while the page is between two documents."""
    try:
        return await page.evaluate(script)
    except PlaywrightError:
        return None


async def _value_is(page: Page, selector: str, value: str) -> bool:
    return await page.input_value(selector) == value


async def test_paste_and_shortcuts(user: Page, capture: Capture) -> None:
    await _open_view(user, capture)
    await _click_remote(user, capture.page, "#user")
    await user.evaluate(
        """() => { const dt = new DataTransfer(); dt.setData('text/plain', 'pasted ünïcode');
            const paste = new ClipboardEvent(
                'paste', {clipboardData: dt, bubbles: true, cancelable: true});
            document.getElementById('kbd').dispatchEvent(paste); }"""
    )
    await _eventually(lambda: _value_is(capture.page, "#user", "pasted ünïcode"))
    await user.keyboard.press("Control+A")  # a shortcut: select all, then typing replaces it
    await user.keyboard.type("zed")
    await _eventually(lambda: _value_is(capture.page, "#user", "zed"))


async def test_wheel_scrolls_remote(user: Page, capture: Capture) -> None:
    await _open_view(user, capture)
    await user.mouse.move(300, 300)
    await user.mouse.wheel(0, 600)
    await _eventually(lambda: capture.page.evaluate("() => window.scrollY > 100"))


async def test_popup_is_followed_and_left(user: Page, capture: Capture, site: str) -> None:
    await _open_view(user, capture)
    async with capture.context.expect_page() as opened:
        await _click_remote(user, capture.page, "#oauth")
    popup = await opened.value
    await user.wait_for_function(
        "(u) => window.liveview.status.url === u && window.liveview.status.pages === 2",
        arg=site + "/popup",
    )
    await _eventually(lambda: _shows_colour(user, POPUP_RGB))
    await user.wait_for_function(
        "() => { const v = window.liveview.status.viewport, s = document.getElementById('stage');"
        " return v && v.width === s.clientWidth; }"
    )
    await _click_remote(user, popup, "#close")
    await popup.wait_for_event("close")
    await user.wait_for_function(
        "(u) => window.liveview.status.url === u && window.liveview.status.pages === 1",
        arg=site + "/",
    )
    await _eventually(lambda: _shows_colour(user, LOGIN_RGB))
    # Still driving the opener afterwards.
    await _click_remote(user, capture.page, "#user")
    await user.keyboard.type("bob")
    await _eventually(lambda: _value_is(capture.page, "#user", "bob"))


async def _shows_colour(user: Page, want: tuple[int, int, int]) -> bool:
    """True when the viewer's canvas shows ``want`` near its bottom-right corner."""
    rgb: list[int] = await user.evaluate(
        """() => { const c = window.liveview.canvas;
            return Array.from(c.getContext('2d').getImageData(c.width - 5, c.height - 5, 1, 1)
                .data.slice(0, 3)); }"""
    )
    return sum(abs(a - b) for a, b in zip(rgb, want, strict=True)) < 30


async def test_resize_changes_remote_viewport(user: Page, capture: Capture) -> None:
    await _open_view(user, capture)
    stage = await user.evaluate("() => document.getElementById('stage').clientWidth")
    assert await capture.page.evaluate("() => window.innerWidth") == stage
    await user.set_viewport_size({"width": 700, "height": 600})
    await _eventually(lambda: capture.page.evaluate("() => window.innerWidth === 700"))
    height = await user.evaluate("() => document.getElementById('stage').clientHeight")
    assert await capture.page.evaluate("() => window.innerHeight") == height
    await user.set_viewport_size({"width": 200, "height": 150})  # bounded below
    await _eventually(lambda: capture.page.evaluate("() => window.innerWidth === 320"))
    assert await capture.page.evaluate("() => window.innerHeight") == 240


async def test_wrong_and_foreign_tokens_get_403(
    server: LiveViewServer, capture: Capture, remote_browser: Browser, site: str
) -> None:
    other_context = await remote_browser.new_context()
    other_page = await other_context.new_page()
    other_token = _register_open(server, "other", other_context, other_page, owner="bob")
    base = f"{server.base_url}/live/{capture.capture_id}"
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(capture.url) as page:
                assert page.status == 200
                assert "script-src 'sha256-" in page.headers["Content-Security-Policy"]
                assert page.headers["Referrer-Policy"] == "no-referrer"
                assert capture.token not in await page.text()
            for url in (
                f"{base}?token=wrong",
                f"{base}?token={capture.token[:-1]}",
                f"{base}",
                f"{base}?token={other_token}",
                f"{server.base_url}/live/missing?token={capture.token}",
            ):
                assert await _status(client, url) == 403, url
                assert await _status(client, _ws_url(url)) == 403, url
            async with client.get(f"{base}?token=wrong") as response:
                assert await response.text() == "Forbidden"
    finally:
        await server.unregister("other")
        await other_context.close()


async def test_unregister_and_expiry_end_access(
    server: LiveViewServer,
    capture: Capture,
    user: Page,
    remote_browser: Browser,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _open_view(user, capture)
    assert server.viewers >= 1
    await server.unregister(capture.capture_id)
    await user.wait_for_function("() => window.liveview.closeCode === 4403")
    assert await user.locator("#msg").text_content() == "This live view has ended."
    async with aiohttp.ClientSession() as client:
        assert await _status(client, capture.url) == 403
        assert await _status(client, _ws_url(capture.url)) == 403

        context = await remote_browser.new_context()
        page = await context.new_page()
        expires_at = datetime.now(UTC) + timedelta(seconds=1.5)
        token = _register_open(server, "expiring", context, page, expires_at=expires_at)
        url = server.url_for("expiring", token)
        try:
            assert await _status(client, url) == 200
            async with client.ws_connect(_ws_url(url)) as ws:
                closed = await _eventually(lambda: _closed_code(ws), timeout=5)
                assert closed == 4403
            assert await _status(client, url) == 403
        finally:
            await server.unregister("expiring")
            await context.close()
    logged = capsys.readouterr()
    assert "liveview_viewer_connected" in logged.out
    assert capture.token not in logged.out + logged.err
    assert token not in logged.out + logged.err


async def _closed_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    msg = await ws.receive(timeout=5)
    return (
        ws.close_code if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) else None
    )


async def test_viewer_limit(server: LiveViewServer, capture: Capture) -> None:
    async with aiohttp.ClientSession() as client:
        sockets = [await client.ws_connect(_ws_url(capture.url)) for _ in range(3)]
        try:
            assert await _status(client, _ws_url(capture.url)) == 429
        finally:
            for ws in sockets:
                await ws.close()
        await _eventually(lambda: _no_viewers(server))
        async with client.ws_connect(_ws_url(capture.url)) as ws:
            msg = await ws.receive_json(timeout=5)
            assert msg["t"] == "status"


async def _no_viewers(server: LiveViewServer) -> bool:
    return server.viewers == 0


async def test_slow_viewer_does_not_pile_up(server: LiveViewServer, capture: Capture) -> None:
    """A viewer that stops reading gets frames dropped, not queued; another viewer keeps up."""
    await capture.page.evaluate(NOISE_ANIMATION)  # large JPEG frames fill socket buffers fast
    stalled = await _stalled_socket(_ws_url(capture.url))
    try:
        async with aiohttp.ClientSession() as client, client.ws_connect(_ws_url(capture.url)) as ws:
            await _receive_frames(ws, 30)  # meanwhile the stalled viewer's buffers fill up
            sent = server.frames_sent
            received = await _receive_frames(ws, 30)
            assert received == 30
            # Only the reading viewer was sent frames: the stalled one holds at most one frame in
            # a blocked send and one pending, and its screencast waits for their acks.
            assert server.frames_sent - sent <= received + 3
    finally:
        stalled.close()


NOISE_ANIMATION = """() => {
    const c = document.createElement('canvas'); c.width = 640; c.height = 360;
    c.style = 'position:fixed;inset:0;width:100vw;height:100vh;image-rendering:pixelated';
    document.body.append(c);
    const g = c.getContext('2d'), img = g.createImageData(640, 360);
    const px = new Uint32Array(img.data.buffer);
    const tick = () => {
        for (let i = 0; i < px.length; i++) px[i] = (Math.random() * 0xffffffff) | 0xff000000;
        g.putImageData(img, 0, 0); requestAnimationFrame(tick);
    };
    tick();
}"""


async def _receive_frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> int:
    frames = 0
    async with asyncio.timeout(60):
        while frames < count:
            msg = await ws.receive(timeout=10)
            frames += msg.type == aiohttp.WSMsgType.BINARY
    return frames


async def _stalled_socket(url: str) -> socket.socket:
    """A WebSocket client with a tiny receive buffer that never reads after the handshake."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    request = (
        f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = await loop.sock_recv(sock, 1024)
    assert head.startswith(b"HTTP/1.1 101"), head[:40]
    return sock


async def test_back_and_reload_buttons(user: Page, capture: Capture, site: str) -> None:
    await _open_view(user, capture)
    await capture.page.goto(site + "/popup")
    await user.wait_for_function("(u) => window.liveview.status.url === u", arg=site + "/popup")
    await capture.page.evaluate("() => { window.marker = 1; }")
    await user.click("#reload")
    await _eventually(lambda: _evaluate_or_none(capture.page, "() => window.marker === undefined"))
    await user.click("#back")
    await user.wait_for_function("(u) => window.liveview.status.url === u", arg=site + "/")
    assert capture.page.url == site + "/"


async def test_cross_site_navigation_keeps_streaming(
    user: Page, capture: Capture, site: str
) -> None:
    """OAuth flows change site (and renderer process); the screencast must survive that."""
    await _open_view(user, capture)
    other_site = site.replace("127.0.0.1", "localhost") + "/popup"
    await capture.page.goto(other_site)
    await user.wait_for_function("(u) => window.liveview.status.url === u", arg=other_site)
    await _eventually(lambda: _shows_colour(user, POPUP_RGB))


async def test_another_pod_forwards_to_the_pod_holding_the_capture(
    remote_browser: Browser, site: str
) -> None:
    """One public host, two capture pods: the pod that gets the request forwards it to the
    pod named in the path if it is one of the peers; the holder still makes every check."""
    port = _free_port()
    public = f"http://127.0.0.1:{port}"  # the "Ingress": here, the forwarding pod itself
    async with (
        LiveViewServer.start(
            host="127.0.0.2", port=port, public_base_url=f"{public}/p/127.0.0.2"
        ) as holder,
        LiveViewServer.start(
            host="127.0.0.1", port=port, public_base_url=f"{public}/p/127.0.0.1", peers="127.0.0.2"
        ),
    ):
        context = await remote_browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(site + "/")
            token = _register_open(holder, "held", context, page)
            url = holder.url_for("held", token)
            assert url.startswith(f"{public}/p/127.0.0.2/live/held?token=")
            async with aiohttp.ClientSession() as client:
                async with client.get(url) as response:
                    assert response.status == 200
                    assert "frame-ancestors" in response.headers["Content-Security-Policy"]
                async with client.ws_connect(_ws_url(url), origin=public) as ws:
                    status = await ws.receive_json(timeout=10)
                    assert status["t"] == "status" and status["state"] == "open"
                    async with asyncio.timeout(10):  # a screencast frame comes through
                        while (await ws.receive()).type != aiohttp.WSMsgType.BINARY:
                            pass
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await client.ws_connect(_ws_url(url), origin="https://evil.example")
                assert refused.value.status == 403
                assert await _status(client, url.replace("token=", "token=x")) == 403
                # Only peers: no forwarding to any other address.
                not_peer = url.replace("/p/127.0.0.2/", "/p/127.0.0.3/")
                assert await _status(client, not_peer) == 403
        finally:
            await holder.unregister("held")
            await context.close()


def _register_open(
    server: LiveViewServer,
    capture_id: str,
    context: BrowserContext,
    page: Page,
    owner: str = "alice",
    expires_at: datetime | None = None,
) -> str:
    return server.register(
        capture_id=capture_id,
        owner_id=owner,
        context=context,
        page=page,
        state_getter=lambda: "open",
        expires_at=expires_at,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
