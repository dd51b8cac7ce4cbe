"""Source-address policy at connect time: resolved names, literal addresses, redirects, rebinding."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ecr_operator.config import MirrorSourcePolicy, SourceRule
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.errors import SourceRefused
from ecr_operator.registry.guard import GuardedResolver, GuardedSender
from ecr_operator.registry.reference import parse_reference
from ecr_operator.registry.transport import Body, HttpResponse, RetryPolicy

pytestmark = pytest.mark.unit

DEFAULT = MirrorSourcePolicy(allowed=(), denied=())


def _policy(allowed: tuple[str, ...] = (), denied: tuple[str, ...] = ()) -> MirrorSourcePolicy:
    return MirrorSourcePolicy(
        allowed=tuple(SourceRule.parse(rule) for rule in allowed),
        denied=tuple(SourceRule.parse(rule) for rule in denied),
    )


class ScriptedResolver(AbstractResolver):
    """Answers each lookup of a name with the next address list given for it (DNS that changes its mind)."""

    def __init__(self, answers: Mapping[str, list[list[str]]]) -> None:
        self._answers = {host: list(lists) for host, lists in answers.items()}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self._answers[host].pop(0)
        return [
            ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)
            for address in addresses
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "addresses",
    [["169.254.169.254"], ["127.0.0.1"], ["10.1.2.3"], ["192.168.0.10"], ["::1"], ["fd00::1"]],
)
async def test_names_resolving_to_internal_addresses_are_refused(addresses: list[str]) -> None:
    resolver = GuardedResolver(DEFAULT, ScriptedResolver({"registry.example": [addresses]}))
    with pytest.raises(SourceRefused, match="ECR_OPERATOR_MIRROR_ALLOWED_SOURCES"):
        await resolver.resolve("registry.example", 443)


async def test_one_internal_address_among_public_ones_is_enough_to_refuse() -> None:
    resolver = GuardedResolver(DEFAULT, ScriptedResolver({"mixed.example": [["54.1.2.3", "10.0.0.7"]]}))
    with pytest.raises(SourceRefused, match=r"10\.0\.0\.7"):
        await resolver.resolve("mixed.example", 443)


async def test_a_name_rebound_to_the_metadata_service_is_refused_at_the_next_connection() -> None:
    scripted = ScriptedResolver({"rebind.example": [["54.1.2.3"], ["169.254.169.254"]]})
    resolver = GuardedResolver(DEFAULT, scripted)
    first = await resolver.resolve("rebind.example", 443)
    assert [result["host"] for result in first] == ["54.1.2.3"]
    with pytest.raises(SourceRefused, match=r"169\.254\.169\.254"):
        await resolver.resolve("rebind.example", 443)


async def test_admin_allowances_admit_networks_and_host_names() -> None:
    by_network = GuardedResolver(
        _policy(allowed=("10.20.0.0/16",)), ScriptedResolver({"mirror.corp": [["10.20.1.1"]]})
    )
    assert [r["host"] for r in await by_network.resolve("mirror.corp", 443)] == ["10.20.1.1"]
    by_name = GuardedResolver(
        _policy(allowed=("*.corp",)), ScriptedResolver({"registry.corp": [["192.168.1.1"]]})
    )
    assert [r["host"] for r in await by_name.resolve("registry.corp", 443)] == ["192.168.1.1"]
    denied = GuardedResolver(
        _policy(denied=("*.example",)), ScriptedResolver({"public.example": [["54.1.2.3"]]})
    )
    with pytest.raises(SourceRefused):
        await denied.resolve("public.example", 443)


class Answer:
    """A bodiless HTTP answer."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(headers))

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        for chunk in ():
            yield chunk

    def close(self) -> None:
        return None


class RecordingSender:
    def __init__(self, redirect_to: str | None = None) -> None:
        self.sent: list[URL] = []
        self._redirect_to = redirect_to

    async def send(self, method: str, url: URL, headers: Mapping[str, str], body: Body) -> HttpResponse:
        self.sent.append(url)
        if self._redirect_to is not None and "/blobs/" in url.path:
            return Answer(307, {"Location": self._redirect_to})
        return Answer(200, {"Docker-Content-Digest": "sha256:" + "a" * 64})


@pytest.mark.parametrize(
    "host", ["169.254.169.254", "127.0.0.1:5000", "[::1]:5000", "10.0.0.1", "2130706433", "127.1", "0x7f.1"]
)
async def test_literal_internal_addresses_are_refused_before_anything_is_sent(host: str) -> None:
    inner = RecordingSender()
    with pytest.raises(SourceRefused):
        await GuardedSender(inner, DEFAULT).send("GET", URL(f"https://{host}/v2/"), {}, None)
    assert inner.sent == []


async def test_literal_public_and_allowed_addresses_pass() -> None:
    inner = RecordingSender()
    await GuardedSender(inner, DEFAULT).send("GET", URL("https://54.1.2.3/v2/"), {}, None)
    await GuardedSender(inner, _policy(allowed=("127.0.0.1/32",))).send(
        "GET", URL("https://127.0.0.1:5000/v2/"), {}, None
    )
    assert [url.host for url in inner.sent] == ["54.1.2.3", "127.0.0.1"]


async def test_a_redirect_into_an_internal_network_is_refused_and_not_retried() -> None:
    inner = RecordingSender(redirect_to="https://169.254.169.254/latest/meta-data/")
    client = RegistryClient(GuardedSender(inner, DEFAULT), retry=RetryPolicy(attempts=3))
    repo = parse_reference("54.1.2.3/team/app")
    with pytest.raises(SourceRefused) as refused:
        await client.open_blob(repo, "sha256:" + "b" * 64)
    assert not refused.value.retryable
    assert [url.host for url in inner.sent] == ["54.1.2.3"]
