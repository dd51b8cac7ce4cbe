"""The built-in mirror-source deny list: every special-purpose range, in every spelling an address takes.

An IPv4 address can be written inside IPv6 in several ways that still reach it (mapped, SIIT-translated,
compatible, NAT64, 6to4, Teredo), and a literal host can carry brackets and a zone. Each spelling of each
denied range must be refused; public addresses must still pass; admin rules must still win.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from ecr_operator.config import (
    DEFAULT_DENIED_SOURCE_IPV4,
    DEFAULT_DENIED_SOURCE_IPV6,
    MirrorSourcePolicy,
    SourceRule,
    embedded_ipv4,
)
from ecr_operator.registry.errors import SourceRefused
from ecr_operator.registry.guard import GuardedSender, literal_address
from ecr_operator.registry.transport import Body, HttpResponse

pytestmark = pytest.mark.unit

DEFAULT = MirrorSourcePolicy(allowed=(), denied=())
IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
PUBLIC_IPV4 = IPv4("54.1.2.3")


def _policy(allowed: tuple[str, ...] = (), denied: tuple[str, ...] = ()) -> MirrorSourcePolicy:
    return MirrorSourcePolicy(
        allowed=tuple(SourceRule.parse(rule) for rule in allowed),
        denied=tuple(SourceRule.parse(rule) for rule in denied),
    )


def _is_denied_ipv4(address: IPv4) -> bool:
    return any(address in network for network in DEFAULT_DENIED_SOURCE_IPV4)


# --- the IPv6 spellings of one IPv4 address -------------------------------------------------------------


def mapped(v4: IPv4) -> IPv6:
    return IPv6(0xFFFF_0000_0000 | int(v4))


def translated(v4: IPv4) -> IPv6:
    return IPv6(0xFFFF_0000_0000_0000 | int(v4))


def compatible(v4: IPv4) -> IPv6:
    return IPv6(int(v4))


def nat64(v4: IPv4) -> IPv6:
    return IPv6((0x0064_FF9B << 96) | int(v4))


def sixtofour(v4: IPv4, rest: int = 0) -> IPv6:
    """``2002:<v4>::/48``, with any subnet and interface bits after it."""
    return IPv6((0x2002 << 112) | (int(v4) << 80) | (rest & ((1 << 80) - 1)))


def teredo(server: IPv4, client: IPv4, flags: int = 0, port: int = 0) -> IPv6:
    """``2001:0:<server>:<flags>:<port ^ ffff>:<client ^ ffffffff>`` (RFC 4380)."""
    return IPv6(
        (0x2001_0000 << 96)
        | (int(server) << 64)
        | ((flags & 0xFFFF) << 48)
        | (((port ^ 0xFFFF) & 0xFFFF) << 32)
        | (int(client) ^ 0xFFFFFFFF)
    )


SPELLINGS = {
    "mapped": mapped,
    "translated": translated,
    "compatible": compatible,
    "nat64": nat64,
    "6to4": sixtofour,
    "teredo-server": lambda v4: teredo(v4, PUBLIC_IPV4),
    "teredo-client": lambda v4: teredo(PUBLIC_IPV4, v4),
}


def text_forms(address: IPv6, zone: str | None) -> list[str]:
    """How a literal host may write the address: compressed, exploded, upper case, dotted tail, a zone."""
    dotted_tail = ":".join(address.exploded.split(":")[:6]) + f":{IPv4(int(address) & 0xFFFFFFFF)}"
    forms = [address.compressed, address.exploded, address.compressed.upper(), dotted_tail]
    suffix = f"%{zone}" if zone else ""
    return [form + suffix for form in forms]


def in_denied_ipv4() -> st.SearchStrategy[IPv4]:
    return st.sampled_from(DEFAULT_DENIED_SOURCE_IPV4).flatmap(
        lambda network: st.ip_addresses(network=network)
    )


ZONES = st.one_of(st.none(), st.sampled_from(["eth0", "1", "lo", "vxlan.calico"]))


# --- the list itself ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cidr",
    [
        # F11 and the special-purpose ranges a registry never lives in.
        "198.18.0.0/15",
        "192.0.0.0/24",
        "240.0.0.0/4",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "ff00::/8",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "64:ff9b:1::/48",
        "::1/128",
        "::/128",
    ],
)
def test_every_special_purpose_range_is_denied_at_both_ends(cidr: str) -> None:
    network = ipaddress.ip_network(cidr)
    for address in (network.network_address, network.broadcast_address):
        assert not DEFAULT.permits("registry.example", [address]), address


@given(v4=in_denied_ipv4(), spelling=st.sampled_from(sorted(SPELLINGS)), zone=ZONES)
def test_every_ipv6_spelling_of_a_denied_ipv4_address_is_denied(
    v4: IPv4, spelling: str, zone: str | None
) -> None:
    address = SPELLINGS[spelling](v4)
    for text in text_forms(address, zone):
        parsed = ipaddress.ip_address(text)
        assert not DEFAULT.permits("registry.example", [parsed]), text
        # As a literal URL host, bracketed, exactly as the guard reads one.
        literal = literal_address(f"[{text}]")
        assert literal is not None
        assert not DEFAULT.permits(f"[{text}]", [literal]), text


@given(v4=in_denied_ipv4(), rest=st.integers(min_value=0, max_value=(1 << 80) - 1))
def test_6to4_is_judged_by_bits_16_to_48_whatever_follows(v4: IPv4, rest: int) -> None:
    address = sixtofour(v4, rest)
    assert embedded_ipv4(address) == (v4,)
    assert not DEFAULT.permits("registry.example", [address])


@given(
    server=st.ip_addresses(v=4),
    client=st.ip_addresses(v=4),
    flags=st.integers(0, 0xFFFF),
    port=st.integers(0, 0xFFFF),
)
def test_teredo_is_judged_by_both_embedded_addresses(
    server: IPv4, client: IPv4, flags: int, port: int
) -> None:
    address = teredo(server, client, flags, port)
    assert embedded_ipv4(address) == (server, client)
    expected = not _is_denied_ipv4(server) and not _is_denied_ipv4(client)
    assert DEFAULT.permits("registry.example", [address]) is expected


@given(address=st.ip_addresses(network="64:ff9b:1::/48"))
def test_local_use_nat64_is_denied_whole(address: IPv6) -> None:
    assert not DEFAULT.permits("registry.example", [address])


@given(address=st.ip_addresses(v=4))
def test_every_ipv4_address_python_calls_non_global_is_denied(address: IPv4) -> None:
    if not address.is_global or address.is_multicast:
        assert not DEFAULT.permits("registry.example", [address])


@given(address=st.ip_addresses(v=6))
def test_every_ipv6_address_python_calls_non_global_is_denied(address: IPv6) -> None:
    # Python (3.11) also calls all of 2001::/23 and ::ffff:0:0/96 private; both are judged more finely here.
    if address in ipaddress.ip_network("2001::/23") or address.ipv4_mapped is not None:
        return
    if not address.is_global or address.is_multicast or address.is_site_local:
        assert not DEFAULT.permits("registry.example", [address])


@given(
    v4=st.ip_addresses(v=4).filter(lambda address: not _is_denied_ipv4(address)),
    spelling=st.sampled_from(sorted(SPELLINGS)),
)
def test_public_addresses_pass_in_every_spelling(v4: IPv4, spelling: str) -> None:
    assert DEFAULT.permits("registry.example", [v4])
    assert DEFAULT.permits("registry.example", [SPELLINGS[spelling](v4)])


@given(
    address=st.ip_addresses(network="2000::/3").filter(
        lambda address: (
            not embedded_ipv4(address)
            and not any(address in network for network in DEFAULT_DENIED_SOURCE_IPV6)
        )
    )
)
def test_global_unicast_ipv6_passes(address: IPv6) -> None:
    assert DEFAULT.permits("registry.example", [address])


def test_the_f11_spellings_are_denied() -> None:
    for text in (
        "::7f00:1",  # [::127.0.0.1]
        "::a9fe:a9fe",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::10.0.0.1",
        "2002:7f00:1::1",
        "2002:a9fe:a9fe::",
        "198.18.0.1",
        "192.0.0.170",
        "240.0.0.1",
        "::ffff:0:127.0.0.1",
        "::ffff:169.254.169.254%eth0",
    ):
        assert not DEFAULT.permits("registry.example", [ipaddress.ip_address(text)]), text


# --- admin rules ----------------------------------------------------------------------------------------


@given(
    v4=st.ip_addresses(network="10.20.0.0/16"),
    spelling=st.sampled_from(["mapped", "translated", "compatible", "nat64", "6to4"]),
)
def test_an_admin_allowance_admits_every_spelling_of_its_addresses(v4: IPv4, spelling: str) -> None:
    policy = _policy(allowed=("10.20.0.0/16",))
    assert policy.permits("mirror.corp", [v4])
    assert policy.permits("mirror.corp", [SPELLINGS[spelling](v4)])
    assert not policy.permits("mirror.corp", [SPELLINGS[spelling](IPv4("10.21.0.1"))])


def test_an_admin_allowance_of_an_ipv6_range_or_a_host_name_admits_it() -> None:
    assert _policy(allowed=("64:ff9b:1::/48",)).permits(
        "nat.corp", [ipaddress.ip_address("64:ff9b:1::a00:1")]
    )
    assert _policy(allowed=("fd00::/8",)).permits("mirror.corp", [ipaddress.ip_address("fd00::1")])
    assert _policy(allowed=("registry.corp",)).permits(
        "registry.corp", [ipaddress.ip_address("::ffff:10.0.0.1")]
    )


@given(v4=st.ip_addresses(network="54.0.0.0/8"), spelling=st.sampled_from(sorted(SPELLINGS)))
def test_an_admin_denial_of_an_ipv4_range_covers_its_ipv6_spellings(v4: IPv4, spelling: str) -> None:
    policy = _policy(denied=("54.0.0.0/8",))
    assert not policy.permits("registry.example", [SPELLINGS[spelling](v4)])


# --- at the guard: literal hosts are refused before anything is sent -------------------------------------


class NeverSends:
    def __init__(self) -> None:
        self.sent: list[URL] = []

    async def send(self, method: str, url: URL, headers: Mapping[str, str], body: Body) -> HttpResponse:
        self.sent.append(url)
        raise AssertionError(f"sent to {url}")


@pytest.mark.parametrize(
    "host",
    [
        "[::127.0.0.1]",
        "[::ffff:127.0.0.1]:5000",
        "[::ffff:0:a9fe:a9fe]",
        "[64:ff9b::169.254.169.254]",
        "[2002:a9fe:a9fe::1]",
        "[2001:0:3601:203:0:ffff:5601:5601]",  # Teredo, client 169.254.169.254
        "[2001:0:7f00:1:0:ffff:c9fe:fdfc]",  # Teredo, server 127.0.0.1
        "[fe80::1%25eth0]",
        "[ff02::1]",
        "[100::1]",
        "198.18.0.1",
        "192.0.0.8",
        "240.0.0.1",
        "255.255.255.255",
        "224.0.0.251",
    ],
)
async def test_literal_special_purpose_hosts_are_refused_before_sending(host: str) -> None:
    inner = NeverSends()
    with pytest.raises(SourceRefused):
        await GuardedSender(inner, DEFAULT).send("GET", URL(f"https://{host}/v2/"), {}, None)
    assert inner.sent == []
