"""The enforcement point of the network guard: a local forward proxy Chromium must go through.

``page.route`` is not a boundary (redirects, websockets and workers get past it), so the
worker runs this small HTTP proxy on ``127.0.0.1:<random port>`` and launches Chromium with
`chromium_launch_options`: ``--proxy-server`` pointing here and ``--proxy-bypass-list=<-loopback>``
(Chromium otherwise sends localhost, loopback and link-local traffic directly), plus WebRTC
restricted to proxied TCP. Every connection the browser opens (navigations, redirects,
subresources, fetch, websockets) arrives here as a ``CONNECT`` (https, ws, wss) or an
absolute-URI request (http). The proxy resolves the host once, checks every address with
`UrlGuard`, and connects to the checked IP, never to the name again (no DNS-rebinding window).

A refusal is a ``403`` with ``X-Browser-Sessions-Guard: refused`` (Chromium reports a refused
``CONNECT`` as ``net::ERR_TUNNEL_CONNECTION_FAILED``); an unreachable or unresolvable target
closes the connection instead (``net::ERR_EMPTY_RESPONSE``), so `is_guard_refusal` can tell the
two apart. The browse code must also block service workers at the context level
(``new_context(service_workers="block")``) and must not pass a per-context ``proxy=``, which
would replace this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Final, Protocol

import structlog

from schema.errors import NavigationFailed, UrlNotAllowed
from workers.guard.policy import ResolvedTarget, UrlGuard, split_url

log = structlog.get_logger(__name__)

GUARD_HEADER: Final = "X-Browser-Sessions-Guard"
GUARD_CHROMIUM_ARGS: Final = (
    "--proxy-bypass-list=<-loopback>",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--force-webrtc-ip-handling-policy",  # a page or policy cannot widen it again
)
REFUSAL_ERRORS: Final = ("net::ERR_TUNNEL_CONNECTION_FAILED",)

_REFUSED_BODY: Final = b"Blocked by the browser-sessions network guard.\n"
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        GUARD_HEADER.lower(),
    }
)
_CHUNK: Final = 64 * 1024

Headers = list[tuple[str, str]]


@dataclass(frozen=True, kw_only=True)
class ProxyLimits:
    """Bounds on every connection the proxy serves."""

    connect_timeout: timedelta = timedelta(seconds=10)
    header_timeout: timedelta = timedelta(seconds=10)
    idle_timeout: timedelta = timedelta(seconds=60)
    max_header_bytes: int = 32 * 1024
    max_connections: int = 256


class _BadRequest(Exception):
    """The client sent something this proxy does not forward."""


class _BadUpstream(Exception):
    """The target answered with something this proxy does not relay."""


class _Headed(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]: ...


def chromium_launch_options(proxy: GuardProxy, *, args: Iterable[str] = ()) -> dict[str, Any]:
    """Keyword arguments for ``chromium.launch`` that route all browser traffic via ``proxy``."""
    return {
        "proxy": {"server": proxy.server_url},
        "args": [*args, *GUARD_CHROMIUM_ARGS],
    }


def is_guard_refusal(
    *, response: _Headed | None = None, error: BaseException | str | None = None
) -> bool:
    """Whether a navigation's response or error is the guard's refusal (map to URL_NOT_ALLOWED).

    A plain-http refusal arrives as a response carrying `GUARD_HEADER` (the proxy strips that
    header from real upstream responses); a refused tunnel (https, ws, wss) as a
    ``net::ERR_TUNNEL_CONNECTION_FAILED`` error.
    """
    if response is not None and response.url.lower().startswith("http:"):
        value = {k.lower(): v for k, v in response.headers.items()}.get(GUARD_HEADER.lower())
        if value == "refused":
            return True
    return error is not None and any(code in str(error) for code in REFUSAL_ERRORS)


class GuardProxy:
    """An HTTP forward proxy that lets through only what `UrlGuard` allows.

    Use as ``async with GuardProxy(guard=UrlGuard(...)) as proxy`` (it listens inside the
    block) and launch Chromium with ``chromium_launch_options(proxy)``; ``refused_count``
    counts refused requests.
    """

    def __init__(
        self,
        *,
        guard: UrlGuard,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ProxyLimits = ProxyLimits(),
    ) -> None:
        self.guard = guard
        self.host = host
        self.port = port
        self.limits = limits
        self.refused_count = 0
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(limits.max_connections)
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def server_url(self) -> str:
        """``http://127.0.0.1:<port>``: the value for Chromium's ``--proxy-server``."""
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> GuardProxy:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=self.limits.max_header_bytes
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.debug("guard_proxy_started", port=self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                async with asyncio.timeout(self.limits.connect_timeout.total_seconds()):
                    await self._slots.acquire()
            except TimeoutError:
                writer.write(_status(503, "Service Unavailable"))
                return
            try:
                await self._handle(reader, writer)
            finally:
                self._slots.release()
        except _BadRequest:
            writer.write(_status(400, "Bad Request"))
        except asyncio.LimitOverrunError:
            writer.write(_status(431, "Request Header Fields Too Large"))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, _BadUpstream):
            pass  # the client or the target went away, stalled or misbehaved: just close
        except Exception as exc:  # never let one connection's surprise reach the loop
            log.warning("guard_proxy_error", error=type(exc).__name__)
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.limits.header_timeout.total_seconds()):
            head = await reader.readuntil(b"\r\n\r\n")
        start, headers = _parse_head(head)
        parts = start.split(" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in _VERSIONS:
            raise _BadRequest
        method, target, _ = parts
        if method == "CONNECT":
            await self._tunnel(reader, writer, target)
        elif target[:7].lower() == "http://":
            await self._forward(reader, writer, method, target, headers)
        else:
            raise _BadRequest

    async def _check(
        self, writer: asyncio.StreamWriter, host: str, port: int, via: str
    ) -> ResolvedTarget | None:
        """The checked target, or ``None`` after answering a refusal."""
        try:
            return await self.guard.check_host(host, port)
        except UrlNotAllowed as exc:
            self.refused_count += 1
            log.warning(
                "guard_refused",
                host=str(exc.detail.get("host") or host)[:253],
                port=port,
                reason=exc.detail.get("reason", "not_allowed"),
                via=via,
            )
            writer.write(_refusal())
            await writer.drain()
            return None

    async def _open(
        self, target: ResolvedTarget
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connect to the first reachable checked address, or ``None``."""
        try:
            async with asyncio.timeout(self.limits.connect_timeout.total_seconds()):
                for address in target.addresses:
                    with contextlib.suppress(OSError):
                        return await asyncio.open_connection(
                            str(address), target.port, limit=self.limits.max_header_bytes
                        )
        except TimeoutError:
            pass
        log.info("guard_upstream_unreachable", host=target.host[:253], port=target.port)
        return None

    async def _tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str
    ) -> None:
        host, port = _split_authority(authority)
        try:
            target = await self._check(writer, host, port, "connect")
        except NavigationFailed:
            return  # close without an answer: Chromium reports ERR_EMPTY_RESPONSE
        if target is None:
            return
        upstream = await self._open(target)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        try:
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await self._splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        url: str,
        headers: Headers,
    ) -> None:
        try:
            _, host, port = split_url(url, schemes=("http",))
        except UrlNotAllowed:
            raise _BadRequest from None
        try:
            target = await self._check(writer, host, port, "http")
        except NavigationFailed:
            writer.write(_status(502, "Bad Gateway"))
            return
        if target is None:
            return
        framing = _body_framing(headers)
        upstream = await self._open(target)
        if upstream is None:
            writer.write(_status(502, "Bad Gateway"))
            return
        up_reader, up_writer = upstream
        try:
            up_writer.write(_request_head(method, url, headers))
            await self._copy_body(reader, up_writer, framing)
            await self._relay_response(up_reader, writer, method)
        finally:
            up_writer.close()

    async def _relay_response(
        self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str
    ) -> None:
        idle = self.limits.idle_timeout.total_seconds()
        while True:
            try:
                async with asyncio.timeout(idle):
                    head = await up_reader.readuntil(b"\r\n\r\n")
                status_line, headers = _parse_head(head)
                fields = status_line.split(" ", 2)
                if len(fields) < 2 or not fields[1].isdigit():
                    raise _BadUpstream
                response_framing = _body_framing(headers, response=True)
            except (_BadRequest, asyncio.LimitOverrunError):
                raise _BadUpstream from None
            status = int(fields[1])
            if status == 101:
                return  # the Upgrade header is never forwarded: a 101 is a broken server
            if 100 <= status < 200:
                writer.write(head)
                continue
            break
        writer.write(_response_head(status_line, headers))
        if method == "HEAD" or status in (204, 304):
            framing: int | str | None = 0
        else:
            framing = response_framing
        await self._copy_body(up_reader, writer, framing)
        await writer.drain()

    async def _copy_body(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        framing: int | str | None,
    ) -> None:
        """Copy a body: ``int`` bytes, ``"chunked"``, or ``None`` (until end of stream)."""
        idle = self.limits.idle_timeout.total_seconds()
        if framing == "chunked":
            while True:
                async with asyncio.timeout(idle):
                    line = await src.readuntil(b"\r\n")
                dst.write(line)
                size_text = line.split(b";", 1)[0].strip()
                if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                    raise _BadUpstream
                size = int(size_text, 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        async with asyncio.timeout(idle):
                            line = await src.readuntil(b"\r\n")
                        dst.write(line)
                        if line == b"\r\n":
                            return
                await self._copy_exact(src, dst, size + 2)
        elif isinstance(framing, int):
            await self._copy_exact(src, dst, framing)
        else:
            while True:
                async with asyncio.timeout(idle):
                    chunk = await src.read(_CHUNK)
                if not chunk:
                    return
                dst.write(chunk)
                async with asyncio.timeout(idle):
                    await dst.drain()

    async def _copy_exact(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, size: int
    ) -> None:
        idle = self.limits.idle_timeout.total_seconds()
        while size > 0:
            async with asyncio.timeout(idle):
                chunk = await src.read(min(size, _CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", size)
            size -= len(chunk)
            dst.write(chunk)
            async with asyncio.timeout(idle):
                await dst.drain()

    async def _splice(
        self,
        a_reader: asyncio.StreamReader,
        a_writer: asyncio.StreamWriter,
        b_reader: asyncio.StreamReader,
        b_writer: asyncio.StreamWriter,
    ) -> None:
        """Copy both ways until either side closes or both stay idle for ``idle_timeout``."""
        loop = asyncio.get_running_loop()
        idle = self.limits.idle_timeout.total_seconds()
        last_activity = [loop.time()]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while True:
                try:
                    chunk = await asyncio.wait_for(src.read(_CHUNK), idle)
                except TimeoutError:
                    if loop.time() - last_activity[0] >= idle:
                        return
                    continue
                if not chunk:
                    return
                last_activity[0] = loop.time()
                dst.write(chunk)
                await asyncio.wait_for(dst.drain(), idle)

        pumps = [
            asyncio.create_task(pump(a_reader, b_writer)),
            asyncio.create_task(pump(b_reader, a_writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)


_VERSIONS: Final = frozenset({"HTTP/1.1", "HTTP/1.0"})


def _status(code: int, reason: str) -> bytes:
    return f"HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


def _refusal() -> bytes:
    return (
        f"HTTP/1.1 403 Forbidden\r\n{GUARD_HEADER}: refused\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(_REFUSED_BODY)}\r\nCache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + _REFUSED_BODY


def _parse_head(head: bytes) -> tuple[str, Headers]:
    """The start line and header fields of a message head; strict about line breaks."""
    lines = head.decode("latin-1")[:-4].split("\r\n")
    headers: Headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            raise _BadRequest
        headers.append((name, value.strip(" \t")))
    if "\n" in lines[0] or "\r" in lines[0]:
        raise _BadRequest
    return lines[0], headers


def _split_authority(authority: str) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority.partition("]")
        host, port = host + "]", rest.removeprefix(":")
    else:
        host, _, port = authority.rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) <= 65535:
        raise _BadRequest
    return host, int(port)


def _body_framing(headers: Headers, *, response: bool = False) -> int | str | None:
    """``"chunked"``, a ``Content-Length``, or ``None`` (a response read to end of stream)."""
    encodings = [v.strip().lower() for k, v in headers if k.lower() == "transfer-encoding"]
    lengths = {v.strip() for k, v in headers if k.lower() == "content-length"}
    if encodings:
        if encodings != ["chunked"] or lengths:
            raise _BadRequest
        return "chunked"
    if len(lengths) > 1:
        raise _BadRequest
    if lengths:
        length = lengths.pop()
        if not (length.isascii() and length.isdigit()):
            raise _BadRequest
        return int(length)
    return None if response else 0


def _connection_tokens(headers: Headers) -> set[str]:
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() in ("connection", "proxy-connection")
        for token in value.split(",")
    }


def _request_head(method: str, url: str, headers: Headers) -> bytes:
    """The origin-form request with hop-by-hop fields dropped and ``Connection: close``."""
    rest = url[len("http://") :].split("#", 1)[0]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    authority = authority.rpartition("@")[2]
    path = path if path.startswith("/") else "/" + path
    drop = _HOP_BY_HOP | _connection_tokens(headers) | {"host"}
    kept = [(k, v) for k, v in headers if k.lower() not in drop]
    lines = [f"{method} {path} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{k}: {v}" for k, v in kept]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _response_head(status_line: str, headers: Headers) -> bytes:
    drop = _HOP_BY_HOP | _connection_tokens(headers)
    lines = [status_line] + [f"{k}: {v}" for k, v in headers if k.lower() not in drop]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
