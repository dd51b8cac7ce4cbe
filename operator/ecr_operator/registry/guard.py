"""Which addresses a source registry may be reached at, enforced where connections are made.

A mirror's source is user input: pointed at ``169.254.169.254`` (the instance metadata service), at
``localhost`` or at a private service, the operator would fetch from inside the cluster network on a
tenant's behalf. Checking the host once before syncing is not enough: a name can resolve to a public
address for the check and to a private one for the connection (DNS rebinding), and a registry can
redirect blob downloads or name a token realm on another host. So the check sits in the source
session itself: every name resolved for a connection, and every literal address connected to, is
judged by the policy; a refusal fails the request and is never retried.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ecr_operator.config import IPAddress
from ecr_operator.registry.errors import SourceRefused
from ecr_operator.registry.limits import DEFAULT_DEADLINES, Deadlines
from ecr_operator.registry.transport import Body, HttpResponse, HttpSender, create_session

# Numeric hosts that are not a canonical IPv4 address ("2130706433", "127.1", "0x7f.1") still reach an
# address through the C resolver; they are never needed for a registry, so they are refused outright.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+))*\.?$", re.IGNORECASE)


class AddressPolicy(Protocol):
    """Decides whether ``host``, resolved to ``addresses``, may be connected to."""

    def permits(self, host: str, addresses: Sequence[IPAddress]) -> bool: ...


def refusal(host: str, addresses: Sequence[IPAddress]) -> SourceRefused:
    shown = ", ".join(sorted({str(address) for address in addresses})) or "no address"
    return SourceRefused(
        f"{host} resolves to {shown}, in a range mirrors may not read from (loopback, link-local, private,"
        " another special-purpose range or an IPv6 form of one, or denied by the admin); an admin can allow"
        " it with ECR_OPERATOR_MIRROR_ALLOWED_SOURCES"
    )


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally (``10.0.0.1``, ``::1``), else None; numeric oddities refused."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        if _NUMERIC_HOST.match(bare):
            raise SourceRefused(f"{host} is not a canonical IP address; write the address in full") from None
        return None


def check_host(policy: AddressPolicy, host: str, addresses: Sequence[IPAddress]) -> None:
    if not policy.permits(host, addresses):
        raise refusal(host, addresses)


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses names with an address the policy denies.

    Every resolution a connection uses passes through here (aiohttp caches only what this returned),
    so a name re-pointed at a private address after a first check is still refused.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        check_host(self._policy, host, [ipaddress.ip_address(result["host"]) for result in results])
        return results

    async def close(self) -> None:
        await self._inner.close()


class GuardedSender:
    """An HttpSender that judges literal-address hosts before sending (aiohttp does not resolve those).

    Pair it with a session made by ``create_guarded_session``, whose resolver judges names.
    """

    def __init__(self, inner: HttpSender, policy: AddressPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def send(self, method: str, url: URL, headers: Mapping[str, str], body: Body) -> HttpResponse:
        host = url.host or ""
        address = literal_address(host)
        if address is not None:
            check_host(self._policy, host, [address])
        return await self._inner.send(method, url, headers, body)


def create_guarded_session(
    policy: AddressPolicy,
    *,
    ca_bundle: Path | None = None,
    connections: int = 32,
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> aiohttp.ClientSession:
    """``transport.create_session`` with every resolved address judged by ``policy``."""
    return create_session(
        ca_bundle=ca_bundle, connections=connections, resolver=GuardedResolver(policy), deadlines=deadlines
    )
