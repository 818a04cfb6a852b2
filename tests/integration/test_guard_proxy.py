"""The guard proxy against real Chromium and real local servers.

``allowed`` (an aiohttp app on a port in the allow list) links, redirects and connects to
``target`` (another local app whose port is not allowed); ``target`` records every request it
receives, so a refusal is proven by the target never seeing one.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from playwright.async_api import Browser, Error, Page, Playwright, async_playwright

from schema.errors import UrlNotAllowed
from workers.browser.chromium import browser_launch_options
from workers.guard.policy import UrlGuard
from workers.guard.proxy import (
    GUARD_HEADER,
    GuardProxy,
    ProxyLimits,
    chromium_launch_options,
    is_guard_refusal,
)

pytestmark = pytest.mark.integration

TIMEOUT_MS = 10_000
APP_HOST = "app.guard-test.example"  # resolved by the test resolver only


@dataclass
class Server:
    port: int
    seen: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


def _html(body: str) -> web.Response:
    return web.Response(
        text=f"<!doctype html><html><body>{body}</body></html>", content_type="text/html"
    )


async def _echo_ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str(f"echo {message.data}")
    return ws


@pytest.fixture(scope="module")
async def target() -> AsyncIterator[Server]:
    """A private service the browser must never reach."""
    server = Server(port=0)

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        server.seen.append(request.path_qs)
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.router.add_get("/ws", _echo_ws)

    async def secret(request: web.Request) -> web.Response:
        return _html("internal secret")

    app.router.add_route("*", "/{tail:.*}", secret)
    runner, server.port = await _serve(app)
    yield server
    await runner.cleanup()


@pytest.fixture(scope="module")
async def allowed(target: Server) -> AsyncIterator[Server]:
    """The site being browsed (its host:port is allow-listed)."""
    server = Server(port=0)

    async def page(request: web.Request) -> web.Response:
        return _html(f"<h1 id=t>{request.match_info.get('name', 'home')}</h1>")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), headers={GUARD_HEADER: "refused"})

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "text/plain"
        response.enable_chunked_encoding()
        await response.prepare(request)
        for index in range(50):
            await response.write(f"line {index}\n".encode())
        await response.write_eof()
        return response

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{target.url}/admin?token=abc")

    async def subresources(request: web.Request) -> web.Response:
        return _html(f'<img id=i src="{target.url}/pixel.png">')

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/page/{name}", page)
    app.router.add_post("/echo", echo)
    app.router.add_get("/stream", streamed)
    app.router.add_get("/ws", _echo_ws)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/subresources", subresources)
    runner, server.port = await _serve(app)
    yield server
    await runner.cleanup()


async def _resolver(host: str, port: int) -> Sequence[str]:
    """Test DNS: one made-up name for the allowed server; everything else from the system."""
    if host == APP_HOST:
        return ["127.0.0.1"]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    return [str(info[4][0]) for info in infos]


@pytest.fixture(scope="module")
def guard(allowed: Server) -> UrlGuard:
    return UrlGuard(
        allow_private_hosts={f"127.0.0.1:{allowed.port}", f"{APP_HOST}:{allowed.port}"},
        resolver=_resolver,
    )


@pytest.fixture(scope="module")
async def proxy(guard: UrlGuard) -> AsyncIterator[GuardProxy]:
    async with GuardProxy(guard=guard) as running:
        yield running


@pytest.fixture(scope="module")
async def pw() -> AsyncIterator[Playwright]:
    async with async_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
async def browser(pw: Playwright, chromium_path: str, proxy: GuardProxy) -> AsyncIterator[Browser]:
    options = browser_launch_options(chromium_path)
    launched = await pw.chromium.launch(
        headless=True,
        timeout=30_000,
        **{**options, **chromium_launch_options(proxy, args=options["args"])},
    )
    yield launched
    await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(service_workers="block")
    context.set_default_timeout(TIMEOUT_MS)
    yield await context.new_page()
    await context.close()


async def test_allowed_host_port_loads(page: Page, allowed: Server, proxy: GuardProxy) -> None:
    response = await page.goto(f"{allowed.url}/page/hello")
    assert response is not None and response.status == 200
    assert await page.text_content("#t") == "hello"
    assert not is_guard_refusal(response=response)


async def test_name_is_connected_to_the_checked_address(page: Page, allowed: Server) -> None:
    # Chromium cannot resolve this name; only the proxy's checked resolution reaches the server.
    response = await page.goto(f"http://{APP_HOST}:{allowed.port}/page/by-name")
    assert response is not None and response.status == 200
    assert await page.text_content("#t") == "by-name"


async def test_redirect_to_other_loopback_port_is_refused(
    page: Page, allowed: Server, target: Server, proxy: GuardProxy
) -> None:
    before, refused = len(target.seen), proxy.refused_count
    response = await page.goto(f"{allowed.url}/redirect")
    assert response is not None and response.status == 403
    assert response.headers[GUARD_HEADER.lower()] == "refused"
    assert is_guard_refusal(response=response)
    assert "internal secret" not in await page.content()
    assert len(target.seen) == before
    assert proxy.refused_count > refused


async def test_subresources_to_other_port_are_refused(
    page: Page, allowed: Server, target: Server
) -> None:
    before = len(target.seen)
    await page.goto(f"{allowed.url}/subresources")
    assert await page.evaluate("() => document.getElementById('i').naturalWidth") == 0
    fetched = await page.evaluate(
        """(url) => fetch(url, {mode: 'no-cors'}).then(r => 'status ' + r.type,
                                                       e => 'failed ' + e.name)""",
        f"{target.url}/api?q=1",
    )
    assert fetched in ("status opaque", "failed TypeError")
    image = await page.evaluate(
        """(url) => new Promise(r => { const i = new Image(); i.onload = () => r('loaded');
                i.onerror = () => r('error'); i.src = url; })""",
        f"http://127.0.0.1:{target.port}/other.png",
    )
    assert image == "error"
    assert len(target.seen) == before


WS_JS = """(url) => new Promise(r => { const w = new WebSocket(url);
    w.onopen = () => w.send('ping'); w.onmessage = e => { r(e.data); w.close(); };
    w.onerror = () => r('error'); })"""


async def test_websocket_to_allowed_port_works(page: Page, allowed: Server) -> None:
    await page.goto(allowed.url)
    assert await page.evaluate(WS_JS, f"ws://127.0.0.1:{allowed.port}/ws") == "echo ping"


async def test_websocket_to_other_port_is_refused(
    page: Page, allowed: Server, target: Server, proxy: GuardProxy
) -> None:
    await page.goto(allowed.url)
    before, refused = len(target.seen), proxy.refused_count
    assert await page.evaluate(WS_JS, f"ws://127.0.0.1:{target.port}/ws") == "error"
    assert await page.evaluate(WS_JS, f"wss://127.0.0.1:{target.port}/ws") == "error"
    assert len(target.seen) == before
    assert proxy.refused_count >= refused + 2


def _tricky_urls(port: int) -> list[str]:
    return [
        f"http://localhost:{port}/",
        f"http://2130706433:{port}/",
        f"http://0x7f.1:{port}/",
        f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://127.0.0.1:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.1/",
    ]


async def test_tricky_forms_are_refused_by_the_precheck(
    guard: UrlGuard, allowed: Server, target: Server
) -> None:
    urls = [*_tricky_urls(target.port), f"http://localhost:{allowed.port}/"]
    urls += ["file:///etc/passwd", "chrome://version", "about:version", "data:text/html,x"]
    urls += ["javascript:alert(1)", f"ftp://127.0.0.1:{allowed.port}/"]
    for url in urls:
        with pytest.raises(UrlNotAllowed):
            await guard.check_url(url)


async def test_tricky_forms_are_refused_by_the_proxy(
    page: Page, target: Server, proxy: GuardProxy
) -> None:
    """Even a navigation that skipped the pre-check never reaches the target."""
    before = len(target.seen)
    for url in _tricky_urls(target.port):
        refused = proxy.refused_count
        response = await page.goto(url)
        assert response is not None and is_guard_refusal(response=response), url
        assert proxy.refused_count > refused, url
    assert len(target.seen) == before


async def test_refused_tunnel_is_a_guard_refusal(
    page: Page, target: Server, proxy: GuardProxy
) -> None:
    refused = proxy.refused_count
    with pytest.raises(Error) as info:
        await page.goto(f"https://127.0.0.1:{target.port}/")
    assert is_guard_refusal(error=info.value)
    assert proxy.refused_count > refused


async def test_unresolvable_name_is_not_a_guard_refusal(page: Page) -> None:
    with pytest.raises(Error) as info:
        await page.goto("https://nowhere.invalid/")
    assert not is_guard_refusal(error=info.value)


async def test_bodies_are_relayed_and_forged_refusals_stripped(page: Page, allowed: Server) -> None:
    await page.goto(allowed.url)
    echoed = await page.evaluate(
        """async () => {
            const r = await fetch('/echo', {method: 'POST', body: 'x'.repeat(200000)});
            const guard = r.headers.get('x-browser-sessions-guard');
            return [r.status, (await r.text()).length, guard]; }"""
    )
    assert echoed == [200, 200_000, None]
    response = await page.goto(f"{allowed.url}/stream")
    assert response is not None and not is_guard_refusal(response=response)
    assert (await response.text()).count("line ") == 50


async def test_webrtc_gathers_no_direct_udp_candidates(page: Page, allowed: Server) -> None:
    await page.goto(allowed.url)
    candidates = await page.evaluate(
        """() => new Promise(r => { const pc = new RTCPeerConnection({iceServers: []});
            const found = []; pc.onicecandidate = e => e.candidate
                ? found.push(e.candidate.candidate) : r(found);
            pc.createDataChannel('x'); pc.createOffer().then(o => pc.setLocalDescription(o));
            setTimeout(() => r(found), 3000); })"""
    )
    assert [c for c in candidates if " udp " in c.lower()] == []


# The proxy's own bounds, spoken to over a raw socket.


async def _exchange(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            return await reader.read()
    finally:
        writer.close()


@pytest.fixture
async def small_proxy(guard: UrlGuard) -> AsyncIterator[GuardProxy]:
    limits = ProxyLimits(
        connect_timeout=timedelta(milliseconds=300),
        header_timeout=timedelta(milliseconds=300),
        idle_timeout=timedelta(milliseconds=300),
        max_header_bytes=1024,
        max_connections=1,
    )
    async with GuardProxy(guard=guard, limits=limits) as running:
        yield running


async def test_proxy_bounds(small_proxy: GuardProxy, allowed: Server) -> None:
    port = small_proxy.port
    big = b"GET http://example.com/ HTTP/1.1\r\nX: " + b"a" * 4096 + b"\r\n\r\n"
    assert (await _exchange(port, big)).startswith(b"HTTP/1.1 431 ")
    assert (await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 400 "
    )
    # A client that never finishes its request head is dropped after header_timeout.
    assert await _exchange(port, b"GET http://exa") == b""
    # One connection slot: a second client waits, then gets 503.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT 127.0.0.1:{allowed.port} HTTP/1.1\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    assert (await _exchange(port, b"")).startswith(b"HTTP/1.1 503 ")
    # The idle tunnel is closed after idle_timeout, which frees the slot.
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()
    refusal = await _exchange(port, b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n")
    assert refusal.startswith(b"HTTP/1.1 403 ")
    assert b"10.0.0.1" not in refusal and GUARD_HEADER.encode() in refusal


async def test_overhead_of_the_proxy(
    pw: Playwright, chromium_path: str, browser: Browser, allowed: Server
) -> None:
    """Times 30 page loads with and without the proxy, interleaved; reported, not asserted."""
    direct = await pw.chromium.launch(
        headless=True, timeout=30_000, **browser_launch_options(chromium_path)
    )
    try:
        tabs = {}
        for name, used in (("direct", direct), ("proxied", browser)):
            context = await used.new_context()
            tabs[name] = await context.new_page()
            await tabs[name].goto(f"{allowed.url}/page/warmup", timeout=TIMEOUT_MS)
        timings: dict[str, list[float]] = {name: [] for name in tabs}
        for index in range(30):
            for name, tab in tabs.items():
                started = time.perf_counter()
                response = await tab.goto(f"{allowed.url}/page/{index}", timeout=TIMEOUT_MS)
                timings[name].append((time.perf_counter() - started) * 1000)
                assert response is not None and response.status == 200
        for tab in tabs.values():
            await tab.context.close()
    finally:
        await direct.close()
    print()
    for name, values in timings.items():
        print(
            f"{name}: 30 page loads, median {statistics.median(values):.1f} ms, "
            f"mean {statistics.fmean(values):.1f} ms"
        )
