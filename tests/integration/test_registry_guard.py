"""The guarded source session against the world's registries, which all listen on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from ecr_operator.config import MirrorSourcePolicy, SourceRule
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.errors import SourceRefused
from ecr_operator.registry.guard import GuardedSender, create_guarded_session
from ecr_operator.registry.reference import parse_reference
from ecr_operator.registry.transport import AiohttpSender
from ecr_sandbox.world import World

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


@pytest.mark.parametrize(
    "answer",
    [
        ("401", "https://localhost:{port}/token"),  # a token realm on a denied name
        ("401", "https://127.0.0.1:{port}/token"),  # ... and address
        ("307", "http://localhost:{port}/blob"),  # a redirect to a denied name
        ("307", "http://[::ffff:127.0.0.1]:{port}/blob"),  # ... and an IPv4-mapped spelling
        ("307", "http://169.254.169.254/latest/meta-data/"),  # the instance metadata service
    ],
)
async def test_realms_and_redirects_to_denied_addresses_are_refused_at_connect_time(
    answer: tuple[str, str],
) -> None:
    """An allowed registry (on 127.0.0.2) names a token realm or redirects to a denied address: the
    guarded session refuses the connection; the denied server never sees a request."""
    reached: list[str] = []

    async def denied(request: web.Request) -> web.Response:
        reached.append(request.path)
        return web.json_response({"token": "t"})

    denied_runner = await _serve(denied, "127.0.0.1")
    port = denied_runner.addresses[0][1]
    status, target = answer[0], answer[1].format(port=port)

    async def registry(request: web.Request) -> web.Response:
        if status == "401":
            return web.Response(status=401, headers={"WWW-Authenticate": f'Bearer realm="{target}"'})
        return web.Response(status=307, headers={"Location": target})

    registry_runner = await _serve(registry, "127.0.0.2")
    host = f"127.0.0.2:{registry_runner.addresses[0][1]}"
    policy = _policy("127.0.0.2/32")
    try:
        async with create_guarded_session(policy) as session:
            client = RegistryClient(GuardedSender(AiohttpSender(session), policy), insecure_registries=[host])
            with pytest.raises(SourceRefused, match="in a range mirrors may not read from"):
                await client.open_blob(parse_reference(f"{host}/app"), "sha256:" + "a" * 64)
    finally:
        await registry_runner.cleanup()
        await denied_runner.cleanup()
    assert reached == []


async def _serve(handler: Callable[[web.Request], Awaitable[web.Response]], address: str) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, address, 0).start()
    return runner
