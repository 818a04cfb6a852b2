"""The pure network and site policy: addresses, tricky URL forms, the allow list, sites."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from publicsuffixlist import PublicSuffixList

from schema.errors import InvalidInput, NavigationFailed, UrlNotAllowed
from tests.support.cases import yes_no_cases
from workers.guard.policy import (
    UrlGuard,
    is_address_allowed,
    is_local_name,
    normalize_host,
    registrable_domain,
    split_url,
)

BLOCKED_ADDRESSES = [
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.255",
    "169.254.169.254",
    "169.254.0.1",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "::1",
    "::",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
    "fe80::1%eth0",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
    "::ffff:0:a9fe:a9fe",  # IPv4-translated 169.254.169.254
    "::ffff:0:808:808",  # IPv4-translated, even of a public address
    "::127.0.0.1",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:db8::1",
    "2001::1",  # Teredo
]
ALLOWED_ADDRESSES = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "100.128.0.1",  # just past CGNAT
    "172.32.0.1",  # just past 172.16/12
    "2606:4700:4700::1111",
    "2a00:1450:4001:82b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


@pytest.mark.parametrize("address", BLOCKED_ADDRESSES)
def test_blocked_addresses(address: str) -> None:
    assert not is_address_allowed(address)


@pytest.mark.parametrize("address", ALLOWED_ADDRESSES)
def test_public_addresses(address: str) -> None:
    assert is_address_allowed(address)


PRIVATE_V4 = [
    ipaddress.ip_network(net)
    for net in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/8",
        "224.0.0.0/4",
        "240.0.0.0/4",
    ]
]


@st.composite
def private_v4(draw: st.DrawFn) -> IPv4Address:
    net = draw(st.sampled_from(PRIVATE_V4))
    offset = draw(st.integers(min_value=0, max_value=net.num_addresses - 1))
    return IPv4Address(int(net.network_address) + offset)


@given(private_v4())
def test_every_private_ipv4_is_blocked_in_every_spelling(ip: IPv4Address) -> None:
    mapped = IPv6Address(f"::ffff:{ip}")
    assert not is_address_allowed(ip)
    assert not is_address_allowed(mapped)
    assert normalize_host(str(int(ip))) == ip
    assert normalize_host(hex(int(ip))) == ip
    assert normalize_host("0" + oct(int(ip))[2:]) == ip
    assert normalize_host(".".join(f"0x{octet:x}" for octet in ip.packed)) == ip
    assert normalize_host(f"[{mapped}]") == mapped


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_mapped_ipv6_is_judged_like_its_ipv4(number: int) -> None:
    ip = IPv4Address(number)
    assert is_address_allowed(IPv6Address(f"::ffff:{ip}")) == is_address_allowed(ip)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("%31%32%37.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
        ("EXAMPLE.Com", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("straße.de", "xn--strae-oqa.de"),  # UTS 46 non-transitional, as Chromium
        ("STRAßE.de", "xn--strae-oqa.de"),
        ("faß.example", "xn--fa-hia.example"),
        ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1"),  # full-width digits
        ("127\u30020\u30020\u30021", "127.0.0.1"),  # ideographic full stops
        ("\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54", "localhost"),
    ],
)
def test_normalize_host(host: str, expected: str) -> None:
    assert str(normalize_host(host)) == expected


@pytest.mark.parametrize(
    "host", ["1.2.3.4.5", "256.0.0.1", "example.123", "0x7g.1", "[::1", "a..b", "a%2fb", ""]
)
def test_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(UrlNotAllowed):
        normalize_host(host)


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "LOCALHOST.",
        "foo.localhost",
        "metadata.google.internal",
        "metadata",
        "db.internal",
        "printer.local",
        "router.home.arpa",
        "intranet",
    ],
)
def test_local_names(name: str) -> None:
    assert is_local_name(name)


@pytest.mark.parametrize("name", ["example.com", "localhost.example.com", "internal.example"])
def test_public_names(name: str) -> None:
    assert not is_local_name(name)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.com/x", ("https", "Example.com", 443)),
        ("http://example.com:8080/?q=1", ("http", "example.com", 8080)),
        ("  http://example.com\t/", ("http", "example.com", 80)),
        ("http://user:pw@example.com/", ("http", "example.com", 80)),
        ("http://[::1]:81/", ("http", "[::1]", 81)),
        # Chromium reads a backslash as a slash: the host is the part before it.
        ("http://127.0.0.1\\@example.com/", ("http", "127.0.0.1", 80)),
        ("http://example.com\\@127.0.0.1/", ("http", "example.com", 80)),
        ("http://example.com:80@127.0.0.1/", ("http", "127.0.0.1", 80)),
    ],
)
def test_split_url(url: str, expected: tuple[str, str, int]) -> None:
    assert split_url(url, schemes={"http", "https"}) == expected


class FakeDns:
    """A resolver with fixed answers (a stand-in for DNS, which the unit tests may not use)."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError("no such host")
        return self.answers[host]


DNS = FakeDns(
    {
        "example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
        "rebind.example": ["93.184.216.34", "10.0.0.5"],
        "metadata-alias.example": ["169.254.169.254"],
        "mapped.example": ["::ffff:127.0.0.1"],
        "dev.example": ["127.0.0.1"],
    }
)


def make_guard(*allowed: str) -> UrlGuard:
    return UrlGuard(allow_private_hosts=frozenset(allowed), resolver=DNS)


REFUSED_URLS = [
    "http://127.0.0.1/",
    "http://localhost:8080/",
    "http://LocalHost./",
    "http://foo.localhost/",
    "http://2130706433/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::ffff:0:7f00:1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://%31%32%37.0.0.1/",
    "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",
    "http://127.0.0.1\\@example.com/",
    "http://rebind.example/",
    "http://metadata-alias.example/",
    "http://mapped.example/",
    "file:///etc/passwd",
    "chrome://version",
    "about:config",
    "about:blank#x",
    "data:text/html,<h1>x</h1>",
    "javascript:alert(1)",
    "ws://example.com/",
    "ftp://example.com/",
    "http:example.com",
    "http://example.com:0/",
    "http://example.com:65536/",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_refused_urls(url: str) -> None:
    with pytest.raises(UrlNotAllowed) as info:
        await make_guard().check_url(url)
    assert info.value.code == "URL_NOT_ALLOWED"


async def test_public_url_resolves_to_every_address() -> None:
    target = await make_guard().check_url("https://Example.com./path?q=secret")
    assert (target.scheme, target.host, target.port) == ("https", "example.com", 443)
    assert [str(a) for a in target.addresses] == [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
    ]
    assert not target.allow_listed


async def test_about_blank_is_allowed_without_network() -> None:
    target = await make_guard().check_url("about:blank")
    assert target.addresses == ()


async def test_unresolvable_name_is_a_navigation_failure() -> None:
    with pytest.raises(NavigationFailed):
        await make_guard().check_url("https://nowhere.example/")


async def test_allow_list_admits_only_the_named_port() -> None:
    guard = make_guard("127.0.0.1:54321", "dev.example:8080", "[::1]:9000")
    for url in ("http://127.0.0.1:54321/", "http://2130706433:54321/", "http://[::1]:9000/"):
        assert (await guard.check_url(url)).allow_listed
    target = await guard.check_url("http://dev.example:8080/")
    assert target.allow_listed and target.addresses == (IPv4Address("127.0.0.1"),)
    for url in (
        "http://127.0.0.1:54322/",
        "http://127.0.0.1/",
        "http://dev.example:8081/",
        "http://[::1]:9001/",
        "http://localhost:54321/",  # a name is not its address
    ):
        with pytest.raises(UrlNotAllowed):
            await guard.check_url(url)
    assert guard.is_allow_listed("127.0.0.1", 54321)
    assert not guard.is_allow_listed("127.0.0.1", 1)


async def test_check_host_for_tunnels() -> None:
    guard = make_guard("127.0.0.1:4443")
    assert (await guard.check_host("127.0.0.1", 4443)).allow_listed
    assert (await guard.check_host("[2606:4700:4700::1111]", 443)).addresses
    with pytest.raises(UrlNotAllowed):
        await guard.check_host("127.0.0.1", 4444)
    with pytest.raises(UrlNotAllowed):
        await guard.check_host("[::1]", 443)


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.1:0", ":80", "a..b:80", "h:http"])
def test_bad_allow_list_entry_is_invalid_input(entry: str) -> None:
    with pytest.raises(InvalidInput):
        UrlGuard(allow_private_hosts={entry})


@pytest.mark.parametrize(
    ("host", "site"),
    [
        ("example.com", "example.com"),
        ("a.b.example.com", "example.com"),
        ("www.bbc.co.uk", "bbc.co.uk"),
        ("bbc.co.uk", "bbc.co.uk"),
        ("shop.example.com.au", "example.com.au"),
        ("me.github.io", "me.github.io"),
        ("docs.me.github.io", "me.github.io"),
        ("co.uk", "co.uk"),
        ("evil.r2.dev", "evil.r2.dev"),
        ("r2.dev", "r2.dev"),
        ("a.b.example.pvt.k12.ma.us", "example.pvt.k12.ma.us"),
        ("com", "com"),
        ("Example.COM.", "example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("[::1]", "::1"),
    ],
)
def test_registrable_domain(host: str, site: str) -> None:
    assert registrable_domain(host) == site


PSL = PublicSuffixList()
LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)


@given(st.lists(LABEL, min_size=1, max_size=5), st.sampled_from(["com", "co.uk", "github.io"]))
def test_registrable_domain_is_a_stable_suffix(labels: list[str], suffix: str) -> None:
    host = ".".join([*labels, suffix])
    assume(PSL.publicsuffix(host) == suffix)  # e.g. us.com is a suffix too
    site = registrable_domain(host)
    assert site == f"{labels[-1]}.{suffix}"
    assert registrable_domain(site) == site
    assert host == site or host.endswith("." + site)


SITES = {  # start URL -> (URLs on its site, URLs off it)
    "https://www.example.com/home": (
        ["https://example.com/feed", "http://news.example.com/"],
        [],
    ),
    "https://example.com/": (
        ["about:blank"],
        ["https://example.com.evil.net/", "https://notexample.com/"],
    ),
    "https://www.bbc.co.uk/": ([], ["https://other.co.uk/"]),
    "https://bob.github.io/": ([], ["https://alice.github.io/"]),
    # r2.dev is in the list's private section: each subdomain is a site of its own.
    "https://victim.r2.dev/": (["https://a.victim.r2.dev/"], ["https://evil.r2.dev/"]),
    "https://victim.s3.dualstack.eu-west-1.amazonaws.com/": (
        [],
        ["https://evil.s3.dualstack.eu-west-1.amazonaws.com/"],
    ),
    "https://straße.de/": (["https://xn--strae-oqa.de/"], ["https://strasse.de/"]),
    "https://co.uk/": (["https://co.uk/"], ["https://x.co.uk/"]),
    "http://127.0.0.1:54321/": (["http://127.0.0.1:54321/a"], []),
    "http://127.0.0.1/": ([], ["http://127.0.0.2/"]),
}


@pytest.mark.parametrize(("url", "start", "allowed"), yes_no_cases(SITES))
def test_check_site(url: str, start: str, allowed: bool) -> None:
    guard = make_guard()
    if allowed:
        guard.check_site(url, start_url=start)
    else:
        with pytest.raises(UrlNotAllowed):
            guard.check_site(url, start_url=start)


def test_extra_origins_are_exact() -> None:
    guard = make_guard()
    extra = ["https://accounts.idp.example:443", "https://cdn.example.net"]
    guard.check_site(
        "https://accounts.idp.example/login", start_url="https://a.com/", extra_origins=extra
    )
    guard.check_site(
        "https://CDN.example.net:443/x", start_url="https://a.com/", extra_origins=extra
    )
    for url in (
        "http://accounts.idp.example/",
        "https://idp.example/",
        "https://cdn.example.net:8443/",
    ):
        with pytest.raises(UrlNotAllowed):
            guard.check_site(url, start_url="https://a.com/", extra_origins=extra)
    with pytest.raises(InvalidInput):
        guard.check_site("https://b.com/", start_url="https://a.com/", extra_origins=["nope"])


def test_refusals_carry_no_address_details() -> None:
    with pytest.raises(UrlNotAllowed) as info:
        make_guard().check_site("https://b.com/", start_url="https://a.com/")
    assert info.value.to_dict() == {
        "code": "URL_NOT_ALLOWED",
        "message": "URL not allowed: the URL is outside the session's site",
    }
