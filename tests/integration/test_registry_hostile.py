"""The registry client against the test world's hostile registry (``sandbox/hostile_registry.py``).

Each behaviour of issue 8's findings F7-F10 is met by the client alone (the operator's handling of the
same errors is tests/e2e/test_hostile_registry.py): it must end in a RegistryError subclass that says what
happened, within its deadlines, after a bounded number of requests the hostile registry counted itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ecr_operator.registry.auth import BearerTokenCache, Credentials, StaticCredentials
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.copy import copy_image
from ecr_operator.registry.errors import (
    AuthError,
    DeadlineExceeded,
    LimitExceeded,
    MalformedResponse,
    PaginationLoop,
    RegistryError,
)
from ecr_operator.registry.limits import Deadlines
from ecr_operator.registry.reference import Reference, parse_reference
from ecr_operator.registry.transport import AiohttpSender, create_session
from ecr_sandbox.hostile_registry import DUPLICATE_CHILDREN, fetch_stats
from ecr_sandbox.registries import HOSTILE_REGISTRY
from ecr_sandbox.world import World
from registry_fakes import Sleeps

pytestmark = pytest.mark.integration

# The hostile registry trickles a byte every 3 s; these deadlines make each case end in seconds.
DEADLINES = Deadlines(connect=5, read=5, request=8, blob_min_rate=1024, blob_window=5)


@pytest.fixture
async def session(world: World) -> AsyncIterator[aiohttp.ClientSession]:
    async with create_session(ca_bundle=world.ca_bundle, deadlines=DEADLINES) as opened:
        yield opened


def _client(session: aiohttp.ClientSession, **options: Any) -> RegistryClient:
    return RegistryClient(AiohttpSender(session), deadlines=DEADLINES, **options)


def _repo(world: World, behaviour: str) -> str:
    return f"{world.registries[HOSTILE_REGISTRY].host}/{behaviour}/it-{uuid.uuid4().hex[:8]}"


def _counters(world: World, name: str) -> dict[str, Any]:
    stats = fetch_stats(world.registries[HOSTILE_REGISTRY].url, world.ca_bundle)
    repository = name.partition("/")[2]
    found: dict[str, Any] = stats["repositories"].get(repository, {"requests": 0, "open": 0, "endpoints": {}})
    return found


async def _settled(world: World, name: str) -> dict[str, Any]:
    """The registry's counters once no request of ``name`` is open (a trickle notices the hang-up late)."""
    for _ in range(40):
        counters = _counters(world, name)
        if counters["open"] == 0:
            return counters
        await asyncio.sleep(0.25)
    return _counters(world, name)


async def test_endless_tag_pagination_ends_at_a_bound(world: World, session: aiohttp.ClientSession) -> None:
    name = _repo(world, "endless-tags")
    with pytest.raises(LimitExceeded, match="limit max_tag"):  # max_tags at 1,000 a page
        await _client(session).list_tags(parse_reference(name))
    assert (await _settled(world, name))["endpoints"]["tags/list"] <= 11


@pytest.mark.parametrize("part", ["headers", "body"])
async def test_a_trickled_manifest_ends_at_a_deadline(
    world: World, session: aiohttp.ClientSession, part: str
) -> None:
    name = _repo(world, f"trickle/{part}")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await _client(session).get_manifest(parse_reference(name), "v1")
    assert time.monotonic() - started < DEADLINES.request + 2
    assert (await _settled(world, name))["endpoints"]["manifests"] == 1  # not retried at once


@pytest.mark.parametrize(("variant", "error"), [("same", PaginationLoop), ("fresh", RegistryError)])
async def test_self_linking_referrer_pages_are_bounded(
    world: World, session: aiohttp.ClientSession, variant: str, error: type[RegistryError]
) -> None:
    name = _repo(world, f"self-referrers/{variant}")
    client = _client(session)
    head = await client.head_manifest(parse_reference(name), "v1")
    assert head is not None
    assert head.digest is not None
    with pytest.raises(error) as raised:
        await client.list_referrers(parse_reference(name), head.digest)
    assert isinstance(raised.value, PaginationLoop | LimitExceeded)
    assert (await _settled(world, name))["endpoints"]["referrers"] <= 20


async def _throttled_head(
    world: World, session: aiohttp.ClientSession, retry_after: str
) -> tuple[RegistryError, Sleeps]:
    """The error a manifest HEAD ends in against ``Retry-After: <retry_after>``, and the sleeps before it."""
    name = _repo(world, f"retry-after/{retry_after}")
    sleeps = Sleeps()
    with pytest.raises(RegistryError) as raised:
        await _client(session, sleep=sleeps).head_manifest(parse_reference(name), "v1")
    return raised.value, sleeps


async def test_a_huge_retry_after_fails_at_once_carrying_it(
    world: World, session: aiohttp.ClientSession
) -> None:
    error, sleeps = await _throttled_head(world, session, "300")
    assert (error.status, error.retry_after, error.retryable) == (429, 300.0, True)
    assert sleeps.delays == []


async def test_a_unicode_digit_retry_after_is_ignored_not_fatal(
    world: World, session: aiohttp.ClientSession
) -> None:
    error, sleeps = await _throttled_head(world, session, "superscript")
    assert error.status == 429
    assert error.retry_after is None
    assert len(sleeps.delays) == 4  # the default five attempts, exponential backoff between them
    assert all(delay <= 10 for delay in sleeps.delays)


async def test_an_index_listing_one_child_2000_times_copies_it_once(
    world: World, session: aiohttp.ClientSession
) -> None:
    name = _repo(world, "duplicate-children")
    basic = world.registries["basic"]
    assert basic.username is not None
    assert basic.password is not None
    destination = parse_reference(f"{basic.host}/it-{uuid.uuid4().hex[:8]}/app:v1")
    credentials = StaticCredentials({basic.host: Credentials(basic.username, basic.password)})
    result = await copy_image(
        parse_reference(f"{name}:v1"),
        destination,
        source_client=_client(session),
        destination_client=_client(session, credentials=credentials),
    )
    assert result.destination_digest == result.source_digest  # the index itself, byte-exact
    counters = await _settled(world, name)
    # HEAD v1 + GET index by digest + GET of the one child, instead of 2,001 manifest requests.
    assert counters["endpoints"]["manifests"] == 3
    assert DUPLICATE_CHILDREN == 2000


async def test_realm_churn_with_giant_tokens_grows_nothing(
    world: World, session: aiohttp.ClientSession
) -> None:
    name = _repo(world, "realm-churn")
    cache = BearerTokenCache()
    client = _client(session, token_cache=cache)
    for _ in range(3):
        with pytest.raises(AuthError, match="larger than"):
            await client.head_manifest(parse_reference(name), "v1")
    assert len(cache) == 0
    assert cache.size_bytes == 0


async def test_malformed_tags_are_left_out(world: World, session: aiohttp.ClientSession) -> None:
    listed = await _client(session).list_tags(parse_reference(_repo(world, "malformed/tags")))
    assert sorted(listed) == ["1.0.0", "v1"]
    assert listed.rejected == 2


@pytest.mark.parametrize("variant", ["digest", "platform", "json"])
async def test_malformed_manifests_are_malformed_responses(
    world: World, session: aiohttp.ClientSession, variant: str
) -> None:
    repo = parse_reference(_repo(world, f"malformed/{variant}"))
    client = _client(session)
    with pytest.raises(MalformedResponse):
        await _head_then_get(client, repo)


async def _head_then_get(client: RegistryClient, repo: Reference) -> None:
    head = await client.head_manifest(repo, "v1")
    await client.get_manifest(repo, head.digest if head and head.digest else "v1")


async def test_a_tag_listing_that_is_not_json_is_a_malformed_response(
    world: World, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(MalformedResponse, match="not JSON"):
        await _client(session).list_tags(parse_reference(_repo(world, "malformed/json")))
