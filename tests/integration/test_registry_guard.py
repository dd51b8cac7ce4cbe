"""The guarded source session against the world's registries, which all listen on loopback."""

from __future__ import annotations

import uuid

import pytest

from ecr_operator.config import MirrorSourcePolicy, SourceRule
from ecr_operator.registry import AiohttpSender, RegistryClient, parse_reference
from ecr_operator.registry.guard import GuardedSender, SourceRefused, create_guarded_session
from ecr_operator.sandbox.world import World

pytestmark = pytest.mark.integration


def _policy(*allowed: str) -> MirrorSourcePolicy:
    return MirrorSourcePolicy(allowed=tuple(SourceRule.parse(rule) for rule in allowed), denied=())


async def _head(world: World, policy: MirrorSourcePolicy, host: str) -> object:
    async with create_guarded_session(policy, ca_bundle=world.ca_bundle) as session:
        client = RegistryClient(GuardedSender(AiohttpSender(session), policy))
        return await client.head_manifest(parse_reference(f"{host}/it-{uuid.uuid4().hex[:8]}/app"), "v1")


@pytest.mark.parametrize("spelling", ["address", "name"])
async def test_a_loopback_source_is_refused_by_default(world: World, spelling: str) -> None:
    port = world.registries["anonymous"].host.rpartition(":")[2]
    host = f"127.0.0.1:{port}" if spelling == "address" else f"localhost:{port}"
    with pytest.raises(SourceRefused, match="in a range mirrors may not read from"):
        await _head(world, _policy(), host)


async def test_an_allowed_network_is_reachable(world: World) -> None:
    assert await _head(world, _policy("127.0.0.1/32"), world.registries["anonymous"].host) is None
