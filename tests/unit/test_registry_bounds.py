"""No upstream can hold a worker, bloat memory, or crash the caller with a foreign exception.

Each hostile behaviour of issue 8 (F7-F10) is played by a scripted in-memory HttpSender (I/O around the
pure parsing and bookkeeping under test): endless and self-linking pagination, trickled bodies, huge
Retry-After, an index listing one child 2,000 times, realm churn with giant tokens, malformed tags,
digests, platforms and headers. Every failure must be a RegistryError subclass with ``retryable`` and
``retry_after`` telling the caller what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from ecr_operator.registry import client as client_module
from ecr_operator.registry import mediatypes
from ecr_operator.registry.auth import (
    MAX_TOKEN_LIFETIME,
    BearerTokenCache,
    Credentials,
    DockerConfigCredentials,
    InvalidDockerConfig,
    StaticCredentials,
    TokenKey,
    clamp_lifetime,
    parse_token_response,
    parse_www_authenticate,
)
from ecr_operator.registry.client import (
    RegistryClient,
    header_digest,
    parse_content_length,
    parse_next_link,
)
from ecr_operator.registry.copy import copy_image
from ecr_operator.registry.errors import (
    AuthError,
    DeadlineExceeded,
    InvalidChallenge,
    InvalidReference,
    LimitExceeded,
    MalformedResponse,
    PaginationLoop,
    RegistryError,
    SourceRefused,
    parse_error_body,
)
from ecr_operator.registry.guard import GuardedSender
from ecr_operator.registry.limits import Deadlines, Limits
from ecr_operator.registry.manifest import parse_manifest
from ecr_operator.registry.reference import fallback_tag, parse_reference
from ecr_operator.registry.transport import (
    RETRY_AFTER_CEILING,
    Body,
    HttpResponse,
    PacedResponse,
    RetryPolicy,
    parse_retry_after,
    resolve_location,
)
from refusals import unless_refused
from registry_fakes import ScriptedResponse, Sleeps

pytestmark = pytest.mark.unit

REPO = parse_reference("up.example/team/app")
DST = parse_reference("dst.example/mirror/app")
SOURCE_V1 = parse_reference("up.example/team/app:v1")


# --- a scripted network -------------------------------------------------------------------------


Route = Callable[[str, URL, dict[str, str]], ScriptedResponse]


@dataclass
class Network:
    """An HttpSender that answers every request with ``route`` and records what was sent."""

    route: Route
    sent: list[tuple[str, URL, dict[str, str]]] = field(default_factory=list)

    async def send(self, method: str, url: URL, headers: Mapping[str, str], body: Body) -> HttpResponse:
        self.sent.append((method, url, dict(headers)))
        if body is not None and not isinstance(body, bytes):
            async for _ in body:
                pass
        return self.route(method, url, dict(headers))

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, url, _ in self.sent if m == method and path_part in url.path)


def _client(route: Route, **options: object) -> tuple[RegistryClient, Network, Sleeps]:
    network, sleeps = Network(route), Sleeps()
    client = RegistryClient(network, sleep=sleeps, **options)  # type: ignore[arg-type]
    return client, network, sleeps


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


def _endless_tag_pages(tags: Callable[[int], list[str]], query: str = "") -> Route:
    """Tag list pages without end: page N lists ``tags(N)`` and links to page N + 1."""

    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        page = int(url.query.get("page", "0"))
        link = f'</v2/team/app/tags/list?{query}page={page + 1}>; rel="next"'
        return ScriptedResponse(200, {"Link": link}, _json({"tags": tags(page)}))

    return route


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- F7: pagination never ends by itself --------------------------------------------------------


async def test_endless_tag_pagination_stops_at_the_page_bound() -> None:
    route = _endless_tag_pages(lambda page: [f"t{page}"], query="n=1000&")
    client, network, _ = _client(route, limits=Limits(max_tag_pages=7))
    with pytest.raises(LimitExceeded, match="more than 7 pages") as raised:
        await client.list_tags(REPO)
    assert raised.value.limit == "max_tag_pages"
    assert not raised.value.retryable
    assert len(network.sent) == 7


async def test_tag_pages_repeating_their_content_under_new_urls_are_a_loop() -> None:
    client, network, _ = _client(_endless_tag_pages(lambda page: ["same"]))
    with pytest.raises(PaginationLoop, match="repeats an earlier page"):
        await client.list_tags(REPO)
    assert len(network.sent) == 2


async def test_a_tag_page_linking_to_itself_is_a_loop() -> None:
    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        return ScriptedResponse(200, {"Link": f'<{url.path_qs}>; rel="next"'}, _json({"tags": ["a"]}))

    client, network, _ = _client(route)
    with pytest.raises(PaginationLoop, match="already read"):
        await client.list_tags(REPO)
    assert len(network.sent) == 1


async def test_tag_count_is_bounded_and_the_caller_may_choose_the_bound() -> None:
    client, network, _ = _client(_endless_tag_pages(lambda page: [f"p{page}-{i}" for i in range(1000)]))
    with pytest.raises(LimitExceeded, match="more than 10000 tags") as raised:
        await client.list_tags(REPO)
    assert raised.value.limit == "max_tags"
    assert raised.value.bound == 10_000
    assert len(network.sent) == 11
    with pytest.raises(LimitExceeded, match="more than 1500 tags"):
        await client.list_tags(REPO, max_tags=1500)
    # One page over the bound fails on that page, before anything else is read.
    with pytest.raises(LimitExceeded, match="more than 10 tags"):
        await client.list_tags(REPO, max_tags=10)


async def test_self_linking_referrer_pages_are_read_once() -> None:
    index = _json({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []})

    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        return ScriptedResponse(200, {"Link": f'<{url.path}>; rel="next"'}, index)

    client, network, _ = _client(route)
    with pytest.raises(PaginationLoop):
        await client.list_referrers(REPO, "sha256:" + "a" * 64)
    assert len(network.sent) == 1


async def test_referrer_pages_are_bounded_in_number_and_content() -> None:
    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        page = int(url.query.get("page", "0"))
        entries = [
            {"mediaType": mediatypes.OCI_MANIFEST, "digest": _digest(f"{page}-{i}".encode()), "size": 9}
            for i in range(40)
        ]
        index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": entries}
        return ScriptedResponse(200, {"Link": f'<{url.path}?page={page + 1}>; rel="next"'}, _json(index))

    client, network, _ = _client(route)
    with pytest.raises(LimitExceeded, match="more than 20 pages"):
        await client.list_referrers(REPO, "sha256:" + "a" * 64)
    assert len(network.sent) == 20
    client, network, _ = _client(route, limits=Limits(max_referrers=100))
    with pytest.raises(LimitExceeded, match="more than 100 referrers"):
        await client.list_referrers(REPO, "sha256:" + "a" * 64)
    assert len(network.sent) == 3  # 40 new referrers a page


# --- F7: deadlines ------------------------------------------------------------------------------

FAST = Deadlines(connect=1, read=0.3, request=0.5, blob_min_rate=1000, blob_window=0.6)


def _manifest_bytes() -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(b"{}"), "size": 2}
    return _json({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": config, "layers": []})


def _manifest_client(headers: Mapping[str, str]) -> tuple[RegistryClient, bytes]:
    """A client of a registry serving one manifest with ``headers`` (and its Content-Type)."""
    raw = _manifest_bytes()

    def route(method: str, url: URL, headers_sent: dict[str, str]) -> ScriptedResponse:
        answer = {**headers, "Content-Type": mediatypes.OCI_MANIFEST}
        return ScriptedResponse(200, answer, raw if method == "GET" else b"")

    client, _, _ = _client(route)
    return client, raw


async def test_a_trickled_manifest_fails_at_the_request_deadline_and_is_not_retried_at_once() -> None:
    raw = _manifest_bytes()

    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        return ScriptedResponse(200, {"Content-Type": mediatypes.OCI_MANIFEST}, raw, pace=0.05, chunk=1)

    client, network, sleeps = _client(route, deadlines=FAST)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"within 0\.5 s") as raised:
        await client.get_manifest(REPO, "v1")
    assert time.monotonic() - started < 1.5
    assert raised.value.retryable  # the caller may come back later ...
    assert len(network.sent) == 1  # ... but the worker is not held by retries now
    assert sleeps.delays == []


async def test_a_slow_token_endpoint_is_bounded_by_the_request_deadline() -> None:
    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        if url.host == "auth.example":
            return ScriptedResponse(200, body=_json({"token": "t"}), pace=0.3, chunk=4)
        return ScriptedResponse(401, {"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'})

    client, _, _ = _client(route, deadlines=FAST)
    with pytest.raises(DeadlineExceeded):
        await client.head_manifest(REPO, "v1")


async def _drain(response: HttpResponse) -> bytes:
    return b"".join([chunk async for chunk in response.iter_chunks(1024)])


async def test_a_trickled_blob_fails_within_one_throughput_window() -> None:
    trickle = ScriptedResponse(
        200, body=b"x" * 100, pace=0.1, chunk=1
    )  # 10 bytes/s, under the 1000 bytes/s floor
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="below the minimum"):
        await _drain(PacedResponse(trickle, FAST, "GET blob"))
    assert time.monotonic() - started < 1.2


async def test_a_stalled_blob_fails_at_the_read_deadline() -> None:
    stalled = ScriptedResponse(200, body=b"x", pace=5.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"no data for 0\.3 s"):
        await _drain(PacedResponse(stalled, FAST, "GET blob"))
    assert time.monotonic() - started < 1.0


async def test_a_fast_blob_read_by_a_slow_consumer_is_not_blamed_on_the_source() -> None:
    data = b"y" * 4000
    paced = PacedResponse(ScriptedResponse(200, body=data, chunk=100), FAST, "GET blob")
    received = []
    async for chunk in paced.iter_chunks(100):
        received.append(chunk)
        await asyncio.sleep(0.02)  # the destination is slow: 40 chunks take ~0.8 s, over one window
    assert b"".join(received) == data


async def test_open_blob_streams_are_paced() -> None:
    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        return ScriptedResponse(200, body=b"z" * 50, pace=0.1, chunk=1)

    client, _, _ = _client(route, deadlines=FAST)
    response = await client.open_blob(REPO, "sha256:" + "b" * 64)
    with pytest.raises(DeadlineExceeded):
        await _drain(response)


# --- F7: Retry-After ----------------------------------------------------------------------------


async def test_a_huge_retry_after_fails_at_once_carrying_the_delay() -> None:
    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        return ScriptedResponse(
            429, {"Retry-After": "300"}, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"x"}]}'
        )

    client, network, sleeps = _client(route)
    with pytest.raises(RegistryError) as raised:
        await client.head_manifest(REPO, "v1")
    assert raised.value.retry_after == 300.0
    assert raised.value.retryable
    assert raised.value.status == 429
    assert sleeps.delays == []
    assert len(network.sent) == 1


async def test_retries_sleep_at_most_max_wait_in_all() -> None:
    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        return ScriptedResponse(503, {"Retry-After": "15"})

    client, network, sleeps = _client(route, retry=RetryPolicy(attempts=10))
    with pytest.raises(RegistryError) as raised:
        await client.head_manifest(REPO, "v1")
    assert sleeps.delays == [15.0, 15.0, 15.0, 15.0]  # a fifth would pass the 60 s default
    assert raised.value.retry_after == 15.0
    assert len(network.sent) == 5


def test_retry_after_default_cap_is_seconds_not_minutes() -> None:
    policy = RetryPolicy()
    assert policy.max_retry_after <= 30
    assert policy.max_wait <= 60
    assert policy.delay(1, 300.0) is None


async def test_a_throttled_token_endpoint_reports_its_retry_after() -> None:
    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        if url.host == "auth.example":
            return ScriptedResponse(429, {"Retry-After": "120"})
        return ScriptedResponse(401, {"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'})

    client, _, sleeps = _client(route)
    with pytest.raises(RegistryError) as raised:
        await client.head_manifest(REPO, "v1")
    assert raised.value.retry_after == 120.0
    assert sleeps.delays == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 7 ", 7.0),
        ("²", None),  # str.isdigit() says yes, float() says no
        ("١٢", None),  # Arabic-Indic digits
        ("7.5", None),
        ("-1", None),
        ("9" * 4400, None),  # too long to be a header value of ours: absent
        ("9" * 40, RETRY_AFTER_CEILING),
        ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_CEILING),
        ("Mon, 01 Jan 0001 00:00:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:28:10", None),  # no zone
        ("", None),
    ],
)
def test_retry_after_parsing_is_robust(value: str, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


@given(st.text(max_size=80))
def test_retry_after_never_raises(value: str) -> None:
    parsed = parse_retry_after(value)
    assert parsed is None or 0.0 <= parsed <= RETRY_AFTER_CEILING


@given(st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=30))
def test_retry_after_of_any_unicode_digits_never_raises(value: str) -> None:
    parsed = parse_retry_after(value)
    if not value.isascii():
        assert parsed is None


# --- F8: index children -------------------------------------------------------------------------


@dataclass
class MiniRegistry:
    """Manifests and blobs by digest (and tags), monolithic uploads; counts nothing itself."""

    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def answer(self, method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        path = url.path
        if "/referrers/" in path:
            return ScriptedResponse(404)  # no referrers API: the fallback tag is read
        if "/blobs/uploads/" in path:
            return ScriptedResponse(202, {"Location": "/upload/1"})
        if path.startswith("/upload/"):
            return ScriptedResponse(201)
        if "/blobs/" in path:
            digest = path.rsplit("/", 1)[1]
            if digest not in self.blobs:
                return ScriptedResponse(404)
            data = self.blobs[digest]
            return ScriptedResponse(200, {"Content-Length": str(len(data))}, data if method == "GET" else b"")
        target = path.rsplit("/", 1)[1]
        if method == "PUT":
            return ScriptedResponse(201)
        digest = self.tags.get(target, target)
        if digest not in self.manifests:
            return ScriptedResponse(404)
        raw, media_type = self.manifests[digest]
        answer = {"Docker-Content-Digest": digest, "Content-Type": media_type}
        return ScriptedResponse(200, answer, raw if method == "GET" else b"")

    def add(self, document: object, media_type: str, tag: str | None = None) -> tuple[str, bytes]:
        raw = _json(document)
        self.manifests[_digest(raw)] = (raw, media_type)
        if tag:
            self.tags[tag] = _digest(raw)
        return _digest(raw), raw

    def image(self, seed: str) -> tuple[str, int]:
        config = _json({"architecture": "amd64", "os": "linux", "seed": seed})
        self.blobs[_digest(config)] = config
        descriptor = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config)}
        document = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {**descriptor, "size": len(config)},
            "layers": [],
        }
        digest, raw = self.add(document, mediatypes.OCI_MANIFEST)
        return digest, len(raw)


def _index(children: list[dict[str, object]]) -> dict[str, object]:
    return {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": children}


def _child(digest: str, size: int, arch: str = "amd64") -> dict[str, object]:
    platform = {"os": "linux", "architecture": arch}
    return {"mediaType": mediatypes.OCI_MANIFEST, "digest": digest, "size": size, "platform": platform}


def _copy_world(upstream: MiniRegistry) -> tuple[Network, Network, RegistryClient, RegistryClient]:
    destination = MiniRegistry()
    source_network, destination_network = Network(upstream.answer), Network(destination.answer)
    return (
        source_network,
        destination_network,
        RegistryClient(source_network, sleep=Sleeps()),
        RegistryClient(destination_network, sleep=Sleeps()),
    )


async def test_an_index_listing_one_child_2000_times_copies_it_once_and_pushes_the_index_exact() -> None:
    upstream = MiniRegistry()
    child, size = upstream.image("only")
    index_digest, _ = upstream.add(_index([_child(child, size)] * 2000), mediatypes.OCI_INDEX, "v1")
    source_network, destination_network, src, dst = _copy_world(upstream)
    result = await copy_image(SOURCE_V1, DST, source_client=src, destination_client=dst)
    assert result.destination_digest == index_digest == result.source_digest  # byte-exact index
    assert source_network.count("GET", f"/manifests/{child}") == 1
    assert destination_network.count("HEAD", f"/manifests/{child}") == 1
    assert destination_network.count("PUT", f"/manifests/{child}") == 1
    assert result.manifests_pushed == 2


async def test_a_large_index_is_parsed_off_the_event_loop_and_a_small_one_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed_in: list[int] = []

    def recording(raw: bytes, **options: Any) -> Any:
        parsed_in.append(threading.get_ident())
        return parse_manifest(raw, **options)

    monkeypatch.setattr(client_module, "parse_manifest", recording)
    child = {"mediaType": mediatypes.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 500}
    for count in (2, 2_000):
        document = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [child] * count}
        raw = json.dumps(document).encode()
        index = await client_module._parse_manifest(raw, content_type=mediatypes.OCI_INDEX)
        assert len(index.children) == count
    loop_thread = threading.get_ident()
    assert parsed_in[0] == loop_thread
    assert parsed_in[1] != loop_thread


async def test_an_index_with_too_many_distinct_children_is_refused_before_any_push() -> None:
    upstream = MiniRegistry()
    children = [_child(upstream.image(str(i))[0], 100) for i in range(12)]
    upstream.add(_index(children), mediatypes.OCI_INDEX, "v1")
    source_network, destination_network, _, dst = _copy_world(upstream)
    src = RegistryClient(source_network, limits=Limits(max_index_children=10))
    with pytest.raises(LimitExceeded, match="more than 10 distinct manifests") as raised:
        await copy_image(SOURCE_V1, DST, source_client=src, destination_client=dst)
    assert raised.value.limit == "max_index_children"
    assert destination_network.count("PUT", "/manifests/") == 0
    assert source_network.count("GET", "/manifests/sha256:") == 1  # the index itself, by digest


async def test_one_digest_listed_with_two_sizes_is_malformed() -> None:
    upstream = MiniRegistry()
    child, size = upstream.image("x")
    upstream.add(_index([_child(child, size), _child(child, size + 1)]), mediatypes.OCI_INDEX, "v1")
    _, _, src, dst = _copy_world(upstream)
    with pytest.raises(MalformedResponse, match="with sizes"):
        await copy_image(SOURCE_V1, DST, source_client=src, destination_client=dst)


async def test_indexes_nested_too_deep_are_refused() -> None:
    upstream = MiniRegistry()
    digest, size = upstream.image("leaf")
    for _ in range(3):
        digest, raw = upstream.add(_index([_child(digest, size)]), mediatypes.OCI_INDEX)
        size = len(raw)
    upstream.tags["v1"] = digest
    source_network, _, _, dst = _copy_world(upstream)
    src = RegistryClient(source_network, limits=Limits(max_index_depth=1))
    with pytest.raises(LimitExceeded, match="nested more than 1 deep"):
        await copy_image(SOURCE_V1, DST, source_client=src, destination_client=dst)


async def test_a_fallback_referrers_index_is_bounded_too() -> None:
    upstream = MiniRegistry()
    subject, _ = upstream.image("signed")
    upstream.tags["v1"] = subject
    artifacts = [_child(upstream.image(f"sig{i}")[0], 100) for i in range(5)]
    upstream.add(_index(artifacts), mediatypes.OCI_INDEX, fallback_tag(subject))
    source_network, _, _, dst = _copy_world(upstream)
    src = RegistryClient(source_network, limits=Limits(max_referrers=3))
    with pytest.raises(LimitExceeded, match="limit max_referrers") as raised:
        await copy_image(
            SOURCE_V1,
            DST,
            source_client=src,
            destination_client=dst,
            referrers=True,
        )
    assert raised.value.limit == "max_referrers"


# --- F9: bearer tokens --------------------------------------------------------------------------


def _churning_realms(token_size: int, expires_in: float) -> Route:
    counter = iter(range(10**9))

    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        if url.host == "auth.example":
            return ScriptedResponse(200, body=_json({"token": "t" * token_size, "expires_in": expires_in}))
        realm = f"https://auth.example/token/{next(counter)}"
        return ScriptedResponse(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="up.example"'})

    return route


async def test_giant_tokens_are_refused_and_never_cached() -> None:
    cache = BearerTokenCache()
    client, _, _ = _client(_churning_realms(1024 * 1024, 1e300), token_cache=cache)
    for _ in range(5):
        with pytest.raises(AuthError, match="larger than 262144 bytes"):
            await client.head_manifest(REPO, "v1")
    assert len(cache) == 0
    assert cache.size_bytes == 0


async def test_realm_churn_cannot_grow_the_token_cache() -> None:
    cache = BearerTokenCache(max_per_registry=8)
    client, _, _ = _client(_churning_realms(60 * 1024, 1e300), token_cache=cache)
    for _ in range(40):
        with pytest.raises(AuthError):
            await client.head_manifest(REPO, "v1")
    assert len(cache) == 8
    assert cache.size_bytes < 8 * 62 * 1024
    assert client._auth._locks == {}  # no lock left behind per churned realm


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key(registry: str = "r.io", realm: str = "https://r.io/token", scope: str = "s") -> TokenKey:
    return TokenKey(registry, realm, "svc", (scope,), "")


def test_token_cache_bounds_entries_bytes_and_each_registry() -> None:
    cache = BearerTokenCache(_Clock(), max_entries=10, max_bytes=10_000, max_per_registry=4)
    for i in range(6):
        cache.put(_key(scope=f"a{i}"), "t", 300)
    assert len(cache) == 4  # one registry holds at most 4; the oldest went first
    assert cache.get(_key(scope="a0")) is None
    assert cache.get(_key(scope="a5")) == "t"
    for i in range(20):
        cache.put(_key(registry=f"r{i}.io", scope="s"), "t", 300)
    assert len(cache) == 10
    cache.put(_key(registry="big.io"), "x" * 9_000, 300)
    assert cache.size_bytes <= 10_000
    assert cache.get(_key(registry="big.io")) == "x" * 9_000
    cache.put(_key(registry="huge.io"), "x" * 20_000, 300)  # larger than the cache: not kept
    assert cache.get(_key(registry="huge.io")) is None
    assert cache.size_bytes <= 10_000


def test_token_cache_entries_expire_within_the_lifetime_cap_and_are_pruned() -> None:
    clock = _Clock()
    cache = BearerTokenCache(clock)
    cache.put(_key(scope="forever"), "t", 1e300)
    cache.put(_key(scope="infinite"), "t", float("inf"))
    clock.now += MAX_TOKEN_LIFETIME
    assert cache.get(_key(scope="forever")) is None
    cache.put(_key(scope="new"), "t", 300)  # a put prunes what expired
    assert len(cache) == 1


def test_a_recently_used_token_outlives_older_ones() -> None:
    cache = BearerTokenCache(_Clock(), max_entries=2, max_per_registry=2)
    cache.put(_key(scope="a"), "ta", 300)
    cache.put(_key(scope="b"), "tb", 300)
    assert cache.get(_key(scope="a")) == "ta"
    cache.put(_key(registry="o.io", scope="c"), "tc", 300)
    assert cache.get(_key(scope="a")) == "ta"
    assert cache.get(_key(scope="b")) is None


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (300, 300.0),
        (1e300, MAX_TOKEN_LIFETIME),
        (10**400, MAX_TOKEN_LIFETIME),
        (float("inf"), MAX_TOKEN_LIFETIME),
        (float("nan"), 60.0),
        (-5, 60.0),
        (0, 60.0),
        (True, 60.0),
        ("300", 60.0),
    ],
)
def test_token_lifetimes_are_clamped(expires_in: object, lifetime: float) -> None:
    assert clamp_lifetime(expires_in) == lifetime  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        b'{"token": "a\\r\\nX-Injected: 1"}',
        b'{"token": "caf\\u00e9"}',
        b'{"token": "two words"}',
        b"[" * 100_000,
        b'{"token": "' + b"t" * (64 * 1024 + 1) + b'"}',
        b'{"token": ["t"]}',
    ],
)
def test_unusable_tokens_are_auth_errors(body: bytes) -> None:
    with pytest.raises(AuthError):
        parse_token_response(body)


def test_a_token_with_a_400_digit_lifetime_lives_an_hour() -> None:
    assert parse_token_response(b'{"token": "t", "expires_in": 1' + b"0" * 400 + b"}") == (
        "t",
        MAX_TOKEN_LIFETIME,
    )


def test_a_deeply_nested_docker_config_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidDockerConfig):
        DockerConfigCredentials.from_json("[" * 100_000)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_token_responses_only_ever_raise_auth_error(body: bytes) -> None:
    parsed = unless_refused(AuthError, parse_token_response, body)
    if parsed is None:
        return
    token, lifetime = parsed
    assert token
    assert 60.0 <= lifetime <= MAX_TOKEN_LIFETIME


@given(st.text(max_size=300))
@settings(max_examples=200)
async def test_any_www_authenticate_header_surfaces_as_auth_error(header: str) -> None:
    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        if url.host == "up.example":
            return ScriptedResponse(401, [("WWW-Authenticate", header)])
        return ScriptedResponse(200, body=b'{"token": "t"}')

    client, _, _ = _client(route)
    with pytest.raises(RegistryError) as raised:
        await client.head_manifest(REPO, "v1")
    assert isinstance(raised.value, AuthError | MalformedResponse)


def test_challenge_errors_are_registry_errors() -> None:
    assert issubclass(InvalidChallenge, RegistryError)
    assert issubclass(InvalidReference, RegistryError)
    assert issubclass(InvalidReference, ValueError)  # as before, for callers that catch ValueError


# --- F10: malformed upstream values -------------------------------------------------------------


async def test_invalid_upstream_tags_are_left_out_and_counted() -> None:
    tags = ["v1", "9" * 4400, "-bad", "x/../../y", 7, None, "v2", "v1", "a" * 129]

    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        return ScriptedResponse(200, body=_json({"tags": tags}))

    client, _, _ = _client(route)
    listed = await client.list_tags(REPO)
    assert listed == ["v1", "v2"]
    assert listed.rejected == 6
    assert all(len(example) <= 60 for example in listed.rejected_examples)


@pytest.mark.parametrize("header", ["x:y", "sha256:short", "md5:" + "a" * 32, "sha256:" + "A" * 64])
async def test_a_malformed_content_digest_header_is_malformed_response(header: str) -> None:
    client, _ = _manifest_client({"Docker-Content-Digest": header})
    with pytest.raises(MalformedResponse, match="Docker-Content-Digest"):
        await client.head_manifest(REPO, "v1")
    with pytest.raises(MalformedResponse, match="Docker-Content-Digest"):
        await client.get_manifest(REPO, "v1")


@pytest.mark.parametrize("length", ["²", "1e9", "-1", "9" * 4400, " ", "0x10"])
async def test_odd_content_lengths_are_ignored_not_fatal(length: str) -> None:
    client, raw = _manifest_client({"Content-Length": length})
    head = await client.head_manifest(REPO, "v1")
    assert head is not None
    assert head.size is None
    assert (await client.get_manifest(REPO, "v1")).raw == raw


def test_content_length_and_digest_header_parsers() -> None:
    assert parse_content_length("123") == 123
    assert parse_content_length("²") is None
    assert parse_content_length("1" * 20) is None
    assert header_digest(None, "x") is None
    assert header_digest("sha256:" + "a" * 64, "x") == "sha256:" + "a" * 64


async def test_retry_after_in_unicode_digits_is_backoff_not_a_crash() -> None:
    answers = iter([ScriptedResponse(429, {"Retry-After": "²"}), ScriptedResponse(404)])
    client, _, sleeps = _client(lambda m, u, h: next(answers))
    assert await client.head_manifest(REPO, "v1") is None
    assert len(sleeps.delays) == 1
    assert sleeps.delays[0] <= 0.5  # first exponential step, as without a Retry-After


@pytest.mark.parametrize(
    "platform",
    [
        {"os": "linux", "architecture": "a" * 100},
        {"os": "linux/evil", "architecture": "amd64"},
        {"os": "linux", "architecture": "amd64", "variant": "v8 extra"},
        {"os": "", "architecture": "amd64"},
    ],
)
def test_an_index_with_an_invalid_platform_is_malformed(platform: dict[str, str]) -> None:
    child = {"mediaType": mediatypes.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 10}
    raw = _json(_index([{**child, "platform": platform}]))
    with pytest.raises(MalformedResponse, match="invalid platform"):
        parse_manifest(raw, content_type=None)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"schemaVersion": 2, "mediaType": [], "manifests": []}',
        b'{"schemaVersion": 2, "mediaType": "' + mediatypes.OCI_INDEX.encode() + b'", "manifests": {"a": 1}}',
        b'{"schemaVersion": 2, "manifests": [{"mediaType": "x", "digest": "sha256:'
        + b"a" * 64
        + b'", "size": 1'
        + b"0" * 30
        + b"}]}",
        b'{"schemaVersion": 2, "config": "x"}',
        b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "x:y", "size": 1}}',
    ],
)
def test_malformed_manifests_are_malformed_responses(raw: bytes) -> None:
    with pytest.raises(RegistryError):
        parse_manifest(raw, content_type=None)


def test_a_manifest_expected_by_an_unknown_digest_algorithm_is_refused() -> None:
    with pytest.raises(InvalidReference):
        parse_manifest(b"{}", content_type=None, expected_digest="x:y")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "mediaType",
                        "manifests",
                        "config",
                        "layers",
                        "digest",
                        "size",
                        "platform",
                        "os",
                        "architecture",
                        "subject",
                        "annotations",
                        "schemaVersion",
                    ]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=30,
    )
)
def test_any_json_manifest_raises_only_registry_errors(document: object) -> None:
    with contextlib.suppress(RegistryError):
        parse_manifest(_json(document), content_type=None)


async def test_manifest_targets_outside_the_tag_and_digest_grammar_are_refused() -> None:
    client, network, _ = _client(lambda m, u, h: ScriptedResponse(404))
    for target in ("../../other/manifests/x", "-bad", "9" * 4400, "x:y"):
        with pytest.raises(InvalidReference):
            await client.head_manifest(REPO, target)
    assert network.sent == []


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(["tags", "name"]), inner),
    max_leaves=20,
)


@given(_JSON, st.text(max_size=60))
async def test_any_tag_page_yields_tags_or_a_registry_error(document: object, link: str) -> None:
    client, _, _ = _client(lambda m, u, h: ScriptedResponse(200, [("Link", link)], _json(document)))
    try:
        listed = await client.list_tags(REPO)
    except RegistryError:
        return
    assert all(isinstance(tag, str) and 0 < len(tag) <= 128 for tag in listed)


async def test_a_deeply_nested_tag_page_is_malformed() -> None:
    client, _, _ = _client(lambda m, u, h: ScriptedResponse(200, body=b"[" * 100_000))
    with pytest.raises(MalformedResponse, match="not JSON"):
        await client.list_tags(REPO)


def test_error_bodies_of_any_shape_are_summarised_briefly() -> None:
    assert parse_error_body(b"[" * 100_000) == ()
    many = _json({"errors": [{"code": "X" * 500, "message": "m" * 5000}] * 1000})
    details = parse_error_body(many)
    assert len(details) <= 5
    assert all(len(d.code) <= 64 and len(d.message) <= 200 for d in details)


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ('</next>; rel="next"', "/next"),
        ('<https://x/1>; rel="prev", <https://x/3>; rel=next', "https://x/3"),
        ('<https://x/1>; title="a, rel=next", <https://x/2>; rel="next"', "https://x/2"),
        ('<https://x/1>; rel="next prev"', "https://x/1"),
        ("<unterminated; rel=next", None),
        ("garbage", None),
    ],
)
def test_link_headers(header: str, target: str | None) -> None:
    assert parse_next_link(header) == target


@given(st.text(max_size=300))
def test_link_parsing_never_raises_anything_but_malformed_response(header: str) -> None:
    target = unless_refused(MalformedResponse, parse_next_link, header)
    assert target is None or isinstance(target, str)


def test_link_parsing_is_linear_on_hostile_headers() -> None:
    for header in ("<>;" * 2700, "<" * 8000, '<a>;"' * 1600, "<a>; rel=prev" * 600):
        started = time.perf_counter()
        parse_next_link(header[:8000])
        assert time.perf_counter() - started < 0.05
    with pytest.raises(MalformedResponse, match="longer than"):
        parse_next_link("<>" * 5000)


@pytest.mark.parametrize(
    "location", ["http://[::1", "javascript:alert(1)", "ftp://x.example/a", "x" * 9000, "http://"]
)
def test_unusable_locations_are_malformed_responses(location: str) -> None:
    with pytest.raises(MalformedResponse):
        resolve_location(URL("https://r.example/v2/"), location, what="redirect")


@given(st.text(max_size=200))
def test_resolving_any_location_raises_only_malformed_response(location: str) -> None:
    target = unless_refused(
        MalformedResponse, resolve_location, URL("https://r.example/v2/a/"), location, what="redirect"
    )
    if target is None:
        return
    assert target.scheme in ("http", "https")
    assert target.host


async def test_a_garbage_pagination_link_is_malformed_response() -> None:
    client, _, _ = _client(
        lambda m, u, h: ScriptedResponse(200, {"Link": '<http://[::1>; rel="next"'}, b"{}")
    )
    with pytest.raises(MalformedResponse):
        await client.list_tags(REPO)


# --- what already held, kept holding -----------------------------------------------------------


class _DenyLoopbackAndLinkLocal:
    def permits(self, host: str, addresses: Sequence[object]) -> bool:
        return not any(str(a).startswith(("127.", "169.254.", "::1")) for a in addresses)


async def test_token_realms_and_redirects_to_internal_addresses_are_refused_before_connecting() -> None:
    for answer in (
        ScriptedResponse(401, {"WWW-Authenticate": 'Bearer realm="https://169.254.169.254/token"'}),
        ScriptedResponse(307, {"Location": "https://127.0.0.1/blob"}),
        ScriptedResponse(307, {"Location": "https://[::1]/blob"}),
    ):
        network = Network(lambda m, u, h, answer=answer: answer)  # type: ignore[misc]
        client = RegistryClient(GuardedSender(network, _DenyLoopbackAndLinkLocal()), sleep=Sleeps())
        with pytest.raises(SourceRefused):
            await client.head_manifest(REPO, "v1")
        assert all(url.host == "up.example" for _, url, _ in network.sent)


async def test_credentials_never_follow_a_redirect_to_another_host() -> None:
    def route(method: str, url: URL, headers: dict[str, str]) -> ScriptedResponse:
        if url.host == "up.example":
            return ScriptedResponse(307, {"Location": "https://storage.example/blob?sig=s"})
        return ScriptedResponse(200, body=b"data")

    network = Network(route)
    credentials = StaticCredentials({"up.example": Credentials("u", "p")})
    client = RegistryClient(network, credentials=credentials, sleep=Sleeps())
    client._auth._schemes["up.example"] = parse_www_authenticate('Basic realm="r"')[0]
    response = await client.open_blob(REPO, "sha256:" + "c" * 64)
    response.close()
    assert "Authorization" in network.sent[0][2]
    assert "Authorization" not in network.sent[1][2]
