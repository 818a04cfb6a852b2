"""The private-network and site guard for browsing with users' cookies (pure policy, no browser).

`UrlGuard` decides which URLs and network addresses a browse may reach: http/https only (plus
ws/wss through the proxy), and never loopback, private, link-local, metadata, multicast or
reserved addresses, judged after DNS resolution. Hosts are canonicalised the way Chromium does
(percent-decoding, IDNA, WHATWG IPv4 forms such as ``2130706433``, ``0x7f.1`` and ``0177.1``)
so a tricky spelling cannot slip past. `workers.guard.proxy` applies the same policy to every
connection the browser opens (redirects, subresources, websockets), which is the real boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final
from urllib.parse import unquote, urlsplit

import idna
from publicsuffixlist import PublicSuffixList

from schema.errors import InvalidInput, NavigationFailed, UrlNotAllowed
from schema.events import NO_EVENTS, Events

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``: how names are resolved (the event loop's getaddrinfo)."""

NAVIGATION_SCHEMES: Final = frozenset({"http", "https"})
DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
ABOUT_BLANK: Final = "about:blank"

_BLOCKED_V4: Final = tuple(
    IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)
_BLOCKED_V6: Final = tuple(
    IPv6Network(net)
    for net in (
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT): ::ffff:0:7f00:1 is 127.0.0.1
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local (fd00:ec2::254 is the AWS metadata address)
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_MAPPED: Final = IPv6Network("::ffff:0:0/96")
_NAT64: Final = IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR: Final = IPv6Network("2002::/16")

_BLOCKED_NAMES: Final = frozenset(
    {"localhost", "metadata", "metadata.goog", "metadata.google.internal", "instance-data"}
)
_BLOCKED_SUFFIXES: Final = ("localhost", "localdomain", "local", "internal", "home.arpa")

# The Public Suffix List (ICANN and private sections) shipped inside the `publicsuffixlist`
# package: no network at run time; upgrading the package updates the list.
_PSL: Final = PublicSuffixList()

_C0_AND_SPACE: Final = "".join(map(chr, range(0x21)))
_FORBIDDEN_HOST_CHARS: Final = re.compile(r"[\x00-\x20\x7f#%/:<>?@\[\\\]^|]")


@dataclass(frozen=True, kw_only=True)
class ResolvedTarget:
    """A checked destination; connect to one of ``addresses``, never to ``host`` again."""

    scheme: str  # "" when checked for a CONNECT tunnel; "about" for about:blank
    host: str  # canonical: lower-case, IDNA, IPv6 without brackets
    port: int
    addresses: tuple[IPAddress, ...]
    allow_listed: bool = False


def _refuse(reason: str, message: str, host: str = "") -> UrlNotAllowed:
    return UrlNotAllowed(f"URL not allowed: {message}", reason=reason, host=host)


def _embedded_ipv4(addr: IPv6Address) -> IPv4Address | None:
    if addr in _MAPPED or addr in _NAT64:
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _SIX_TO_FOUR:
        return addr.sixtofour
    return None


def is_address_allowed(ip: IPAddress | str) -> bool:
    """Whether ``ip`` is a public unicast address (IPv6 forms that embed an IPv4 judged by it)."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, IPv6Address):
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            return is_address_allowed(embedded)
        return addr.is_global and not any(addr in net for net in _BLOCKED_V6)
    return addr.is_global and not any(addr in net for net in _BLOCKED_V4)


def _ipv4_number(part: str) -> int | None:
    """One WHATWG IPv4 part: decimal, ``0x`` hex or leading-zero octal; ``None`` if not numeric."""
    if part[:2].lower() == "0x":
        digits, base = part[2:], 16
        if digits == "":
            return 0
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits.isascii() or not digits.isalnum():
        return None
    try:
        return int(digits, base)
    except ValueError:
        return None


def _parse_ipv4(host: str) -> IPv4Address | None:
    """The WHATWG IPv4 parser: ``None`` for a domain, raises for a number-like invalid host."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    last = parts[-1]
    ends_in_number = (last != "" and last.isascii() and last.isdigit()) or (
        last[:2].lower() == "0x" and _ipv4_number(last) is not None
    )
    if not ends_in_number:
        return None
    numbers = [_ipv4_number(p) if p else None for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise _refuse("malformed", "the host is not a valid IPv4 address", host)
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise _refuse("malformed", "the host is not a valid IPv4 address", host)
    total = values[-1]
    for index, n in enumerate(values[:-1]):
        total += n * 256 ** (3 - index)
    return IPv4Address(total)


def normalize_host(host: str) -> IPAddress | str:
    """Canonical form of a URL host as Chromium sees it: an IP address or a lower-case name.

    Raises `UrlNotAllowed` for a host Chromium would reject or read differently.
    """
    raw = host
    if host.startswith("[") and host.endswith("]"):
        try:
            return IPv6Address(host[1:-1])
        except ValueError:
            raise _refuse("malformed", "the host is not a valid IPv6 address", raw) from None
    try:
        host = unquote(host, errors="strict")
    except UnicodeDecodeError:
        raise _refuse("malformed", "the host is not valid", raw) from None
    if not host:
        raise _refuse("malformed", "the URL has no host")
    if not host.isascii():
        try:
            # UTS 46 non-transitional, as Chromium does: ``straße.de`` is ``xn--strae-oqa.de``.
            host = idna.encode(host, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise _refuse("malformed", "the host is not a valid domain name", raw) from None
    host = host.lower()
    if ":" in host:
        try:
            return IPv6Address(host)
        except ValueError:
            raise _refuse("malformed", "the host is not valid", raw) from None
    if _FORBIDDEN_HOST_CHARS.search(host):
        raise _refuse("malformed", "the host contains forbidden characters", raw)
    ipv4 = _parse_ipv4(host)
    if ipv4 is not None:
        return ipv4
    if any(label == "" for label in host.removesuffix(".").split(".")):
        raise _refuse("malformed", "the host has an empty label", raw)
    return host


def split_url(url: str, *, schemes: Iterable[str]) -> tuple[str, str, int]:
    """``(scheme, raw host, port)`` of an absolute URL whose scheme is in ``schemes``.

    Pre-processes like the WHATWG parser (trims, drops tabs/newlines, ``\\`` as ``/``) so the
    host read here is the one Chromium would connect to.
    """
    text = re.sub(r"[\t\n\r]", "", url.strip(_C0_AND_SPACE))
    scheme, sep, _ = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in set(schemes):
        raise _refuse("scheme", f"the scheme {scheme[:16]!r} is not allowed")
    if scheme in DEFAULT_PORTS:
        cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=len(text))
        text = text[:cut].replace("\\", "/") + text[cut:]
    parts = urlsplit(text)
    if not text[len(scheme) + 1 :].startswith("//") or not parts.netloc:
        raise _refuse("malformed", "the URL has no host")
    authority = parts.netloc.rpartition("@")[2]
    if authority.startswith("["):
        host, bracket, port_text = authority.partition("]")
        host += bracket
        if port_text and not port_text.startswith(":"):
            raise _refuse("malformed", "the port is not valid")
        port_text = port_text[1:]
    else:
        host, _, port_text = authority.partition(":")
    return scheme, host, _port(port_text, DEFAULT_PORTS.get(scheme, 0))


def _port(text: str, default: int) -> int:
    if text == "":
        return default
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= 65535:
        raise _refuse("malformed", "the port is not valid")
    return int(text)


def _host_key(host: IPAddress | str) -> str:
    return str(host) if not isinstance(host, str) else host.removesuffix(".")


def _parse_host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.strip().lower().rpartition(":")
    try:
        if not sep or not host:
            raise _refuse("malformed", "no port")
        return _host_key(normalize_host(host.strip("[]") if ":" in host else host)), _port(port, 0)
    except UrlNotAllowed:
        raise InvalidInput(
            f"allow_private_hosts entries must be host:port, got {entry!r}"
        ) from None


def is_local_name(name: str) -> bool:
    """Names that mean this machine or its private network: ``localhost``, ``*.internal``,
    metadata names, and single-label names (resolved through the host's search domains)."""
    name = name.lower().removesuffix(".")
    return (
        name in _BLOCKED_NAMES
        or "." not in name
        or any(name.endswith("." + suffix) for suffix in _BLOCKED_SUFFIXES)
    )


def is_public_suffix(host: str) -> bool:
    """Whether ``host`` is a public suffix (a TLD, or a rule of the Public Suffix List)."""
    host = host.lower().removesuffix(".")
    return "." not in host or _PSL.is_public(host)


def registrable_domain(host: str) -> str:
    """The site of ``host``: its registrable domain (``a.b.example.co.uk`` -> ``example.co.uk``).

    An IP host's site is the canonical IP; a public suffix's is itself.
    """
    canonical = normalize_host(host)
    if not isinstance(canonical, str):
        return str(canonical)
    name = canonical.removesuffix(".")
    return _PSL.privatesuffix(name) or name


def _origin(url: str) -> str:
    scheme, host, port = split_url(url, schemes=NAVIGATION_SCHEMES)
    canonical = normalize_host(host)
    shown = f"[{canonical}]" if isinstance(canonical, IPv6Address) else _host_key(canonical)
    return f"{scheme}://{shown}:{port}"


class UrlGuard:
    """Checks URLs and hosts against the network policy; hosts in the allow list get through.

    ``allow_private_hosts`` holds exact ``host:port`` pairs (dev and tests only): the pair lets
    that one port through even if it is private, never other ports of the same host.
    """

    def __init__(
        self,
        *,
        allow_private_hosts: Iterable[str] = frozenset(),
        resolver: Resolver | None = None,
        dns_timeout: timedelta = timedelta(seconds=5),
        events: Events = NO_EVENTS,
    ) -> None:
        self._events = events
        self._allowed = frozenset(_parse_host_port(entry) for entry in allow_private_hosts)
        self._resolver = resolver or _system_resolver
        self._dns_timeout = dns_timeout

    def is_address_allowed(self, ip: IPAddress | str) -> bool:
        """Whether ``ip`` may be reached on any port (the allow list aside)."""
        return is_address_allowed(ip)

    def is_allow_listed(self, host: str, port: int) -> bool:
        """Whether ``host:port`` is in the allow list (``host`` is canonicalised first)."""
        return (_host_key(normalize_host(host)), port) in self._allowed

    async def check_url(
        self, url: str, *, schemes: Iterable[str] = NAVIGATION_SCHEMES
    ) -> ResolvedTarget:
        """:meth:`_check_url`; a refusal is reported to the events hook."""
        with self._reporting_refusals():
            return await self._check_url(url, schemes=schemes)

    async def check_host(self, host: str, port: int) -> ResolvedTarget:
        """:meth:`_check_host`; a refusal is reported to the events hook."""
        with self._reporting_refusals():
            return await self._check_host(host, port)

    def check_site(self, url: str, *, start_url: str, extra_origins: Iterable[str] = ()) -> None:
        """:meth:`_check_site`; a refusal is reported to the events hook."""
        with self._reporting_refusals():
            self._check_site(url, start_url=start_url, extra_origins=extra_origins)

    @contextlib.contextmanager
    def _reporting_refusals(self) -> Iterator[None]:
        try:
            yield
        except UrlNotAllowed:
            self._events.guard_refused()
            raise

    async def _check_url(self, url: str, *, schemes: Iterable[str]) -> ResolvedTarget:
        """Check a navigation target: scheme, host, and every address it resolves to.

        ``about:blank`` is allowed (no network). Raises `UrlNotAllowed`, or `NavigationFailed`
        when the name does not resolve.
        """
        if url.strip().lower() == ABOUT_BLANK:
            return ResolvedTarget(scheme="about", host="", port=0, addresses=())
        scheme, host, port = split_url(url, schemes=schemes)
        target = await self._check_host(host, port)
        return ResolvedTarget(
            scheme=scheme,
            host=target.host,
            port=port,
            addresses=target.addresses,
            allow_listed=target.allow_listed,
        )

    async def _check_host(self, host: str, port: int) -> ResolvedTarget:
        """Check a ``host:port`` (as in a CONNECT request) and resolve it to allowed addresses."""
        canonical = normalize_host(host)
        key = _host_key(canonical)
        allow_listed = (key, port) in self._allowed
        if isinstance(canonical, str):
            if not allow_listed and is_local_name(key):
                raise _refuse("local_name", "the host names a local or internal machine", key)
            addresses = await self._resolve(key, port)
        else:
            addresses = (canonical,)
        if not allow_listed and not all(is_address_allowed(a) for a in addresses):
            raise _refuse("private_address", "the host is on a private or reserved network", key)
        return ResolvedTarget(
            scheme="", host=key, port=port, addresses=addresses, allow_listed=allow_listed
        )

    def _check_site(self, url: str, *, start_url: str, extra_origins: Iterable[str]) -> None:
        """Refuse ``url`` unless it is within the site of ``start_url`` or an extra origin.

        The site is the registrable domain of the start URL's host (an IP host: that IP only).
        ``extra_origins`` are exact origins (``https://accounts.example.net``).
        """
        if url.strip().lower() == ABOUT_BLANK:
            return
        _, host, _ = split_url(url, schemes=NAVIGATION_SCHEMES)
        _, start_host, _ = split_url(start_url, schemes=NAVIGATION_SCHEMES)
        name = _host_key(normalize_host(host))
        site = registrable_domain(start_host)
        start_is_name = isinstance(normalize_host(start_host), str)
        if name == site or (
            start_is_name and not is_public_suffix(site) and name.endswith("." + site)
        ):
            return
        try:
            origins = {_origin(origin) for origin in extra_origins}
        except UrlNotAllowed as exc:
            raise InvalidInput(f"extra origin is not a valid http(s) origin: {exc}") from None
        if _origin(url) in origins:
            return
        raise _refuse("site", "the URL is outside the session's site", name)

    async def _resolve(self, name: str, port: int) -> tuple[IPAddress, ...]:
        try:
            async with asyncio.timeout(self._dns_timeout.total_seconds()):
                found = await self._resolver(name, port)
        except (OSError, TimeoutError):
            found = ()
        addresses = tuple(dict.fromkeys(ipaddress.ip_address(a) for a in found))
        if not addresses:
            raise NavigationFailed("the host name could not be resolved", host=name)
        return addresses


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]
