"""The registry client and copy engine against real distribution registries (the test world).

Images are built here from random bytes (config + layers, multi-arch indexes, referrer artifacts) and
pushed with the client itself; what a user notices is checked on the registries: digests, and which
requests each registry served (its access log).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ecr_operator.registry import mediatypes
from ecr_operator.registry.auth import Credentials, DockerConfigCredentials, StaticCredentials
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.copy import copy_image
from ecr_operator.registry.digests import sha256_digest
from ecr_operator.registry.errors import AuthError, DigestMismatch, NoMatchingPlatform, RegistryError
from ecr_operator.registry.manifest import parse_manifest
from ecr_operator.registry.platforms import PlatformFilter
from ecr_operator.registry.reference import Reference, fallback_tag, parse_reference
from ecr_operator.registry.transport import AiohttpSender, create_session
from ecr_sandbox.registries import RegistryInfo, RegistryRequest
from ecr_sandbox.world import World

pytestmark = pytest.mark.integration

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
Descriptor = dict[str, Any]


# --- fixtures and image building ----------------------------------------------------------------


def _docker_config(world: World) -> DockerConfigCredentials:
    """The world's credentials as a kubernetes.io/dockerconfigjson document, keys spelled variously."""
    auths: dict[str, dict[str, str]] = {}
    for info in world.registries.values():
        if info.username is None or info.password is None:
            continue
        key = f"https://{info.host}/v1/" if info.name == "ecr" else info.host
        if info.name == "basic":
            auths[key] = {"username": info.username, "password": info.password}
        else:
            auths[key] = {"auth": base64.b64encode(f"{info.username}:{info.password}".encode()).decode()}
    return DockerConfigCredentials.from_json(json.dumps({"auths": auths}))


@pytest.fixture
async def session(world: World) -> AsyncIterator[aiohttp.ClientSession]:
    async with create_session(ca_bundle=world.ca_bundle) as opened:
        yield opened


@pytest.fixture
def client(world: World, session: aiohttp.ClientSession) -> RegistryClient:
    return RegistryClient(AiohttpSender(session), credentials=_docker_config(world))


def _repo(world: World, registry: str, prefix: str = "") -> Reference:
    return parse_reference(f"{world.registries[registry].host}/{prefix}it-{uuid.uuid4().hex[:10]}/app")


async def push_blob(
    client: RegistryClient, repo: Reference, data: bytes, media_type: str = LAYER_TYPE
) -> Descriptor:
    digest = sha256_digest(data)

    async def body() -> AsyncIterator[bytes]:
        yield data

    await client.upload_blob(repo, await client.start_upload(repo), digest, len(data), body())
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


async def push_manifest(
    client: RegistryClient, repo: Reference, document: dict[str, Any], tag: str | None = None
) -> Descriptor:
    # Indented on purpose: a client that re-serialised manifests would change their digests.
    raw = json.dumps(document, indent=3).encode()
    manifest = parse_manifest(raw, content_type=document["mediaType"])
    await client.put_manifest(repo, tag or manifest.digest, manifest)
    descriptor: Descriptor = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": len(raw)}
    if "artifactType" in document:
        descriptor["artifactType"] = document["artifactType"]
    return descriptor


async def push_image(
    client: RegistryClient,
    repo: Reference,
    tag: str | None = None,
    *,
    platform: tuple[str, str] = ("linux", "amd64"),
    layer_sizes: tuple[int, ...] = (300_000, 1_500_000),
) -> tuple[Descriptor, list[Descriptor]]:
    os_name, architecture = platform
    config = await push_blob(
        client,
        repo,
        json.dumps({"os": os_name, "architecture": architecture, "rootfs": {"type": "layers"}}).encode(),
        CONFIG_TYPE,
    )
    layers = [await push_blob(client, repo, os.urandom(size)) for size in layer_sizes]
    manifest = await push_manifest(
        client,
        repo,
        {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": config, "layers": layers},
        tag,
    )
    return manifest, [config, *layers]


async def push_index(
    client: RegistryClient, repo: Reference, tag: str, architectures: tuple[str, ...]
) -> tuple[Descriptor, list[Descriptor], list[Descriptor]]:
    """A multi-arch index; returns it, its children and all their blobs."""
    children, blobs = [], []
    for architecture in architectures:
        child, child_blobs = await push_image(
            client, repo, platform=("linux", architecture), layer_sizes=(200_000,)
        )
        children.append({**child, "platform": {"os": "linux", "architecture": architecture}})
        blobs += child_blobs
    index = await push_manifest(
        client, repo, {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": children}, tag
    )
    return index, children, blobs


async def push_artifact(
    client: RegistryClient, repo: Reference, subject: Descriptor, artifact_type: str, payload: bytes
) -> Descriptor:
    """An OCI 1.1 artifact (empty config, one layer) whose ``subject`` is another manifest."""
    empty = await push_blob(client, repo, b"{}", mediatypes.OCI_EMPTY)
    layer = await push_blob(client, repo, payload, "application/octet-stream")
    return await push_manifest(
        client,
        repo,
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": empty,
            "layers": [layer],
            "subject": {key: subject[key] for key in ("mediaType", "digest", "size")},
        },
    )


async def push_fallback_index(
    client: RegistryClient, repo: Reference, subject: Descriptor, referrers: list[Descriptor]
) -> None:
    """What cosign/oras do on registries without the referrers API: an index under ``sha256-<hex>``."""
    document = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": referrers}
    await push_manifest(client, repo, document, fallback_tag(subject["digest"]))


async def settled_requests(info: RegistryInfo) -> list[RegistryRequest]:
    """The access log once the registry stopped appending (it logs just after answering)."""
    seen = -1
    for _ in range(40):
        requests = info.requests()
        if len(requests) == seen:
            return requests
        seen = len(requests)
        await asyncio.sleep(0.05)
    return info.requests()


async def head_digest(client: RegistryClient, repo: Reference, target: str) -> str | None:
    head = await client.head_manifest(repo, target)
    return head.digest if head else None


# --- tests --------------------------------------------------------------------------------------


async def test_multi_arch_index_is_copied_digest_exact(world: World, client: RegistryClient) -> None:
    source, destination = _repo(world, "token"), _repo(world, "ecr")
    index, children, blobs = await push_index(client, source, "v1", ("amd64", "arm64", "s390x"))

    result = await copy_image(source.with_tag("v1"), destination, source_client=client)

    assert result.source_digest == result.destination_digest == index["digest"]
    assert await head_digest(client, destination, "v1") == index["digest"]
    for child in children:
        assert await head_digest(client, destination, child["digest"]) == child["digest"]
    copied = await client.get_manifest(destination, "v1")
    assert copied.raw == (await client.get_manifest(source, "v1")).raw
    assert result.platforms_copied == ("linux/amd64", "linux/arm64", "linux/s390x")
    assert result.manifests_pushed == 4
    assert result.blobs_copied == len(blobs) == 6
    assert result.bytes_copied == sum(blob["size"] for blob in blobs)


async def test_second_copy_only_heads_the_source_and_reuses_its_token(
    world: World, client: RegistryClient
) -> None:
    token_registry = world.registries["token"]
    source, destination = _repo(world, "token"), _repo(world, "anonymous")
    manifest, _ = await push_image(client, source, "v1")
    first = await copy_image(source.with_tag("v1"), destination, source_client=client)
    assert not first.up_to_date

    source_mark = len(await settled_requests(token_registry))
    destination_mark = len(await settled_requests(world.registries["anonymous"]))
    tokens_mark = len(token_registry.token_requests())
    second = await copy_image(source.with_tag("v1"), destination, source_client=client)

    assert second.up_to_date
    assert second.destination_digest == manifest["digest"]
    assert (second.blobs_copied, second.manifests_pushed, second.bytes_copied) == (0, 0, 0)
    source_requests = (await settled_requests(token_registry))[source_mark:]
    destination_requests = (await settled_requests(world.registries["anonymous"]))[destination_mark:]
    # A manifest GET is a pull on Docker Hub; HEAD is not. A no-op resync must cost no pull.
    assert [(r.method, r.status) for r in source_requests] == [("HEAD", 200)]
    assert [r.method for r in destination_requests] == ["HEAD"]
    assert len(token_registry.token_requests()) == tokens_mark


async def test_blob_already_in_destination_is_skipped(world: World, client: RegistryClient) -> None:
    basic = world.registries["basic"]
    source, destination = _repo(world, "basic"), _repo(world, "ecr")
    _, blobs = await push_image(client, source, "v1")
    shared_layer = blobs[1]
    await push_blob(client, destination, await _read_blob(client, source, shared_layer["digest"]))
    mark = len(await settled_requests(basic))

    result = await copy_image(source.with_tag("v1"), destination, source_client=client)

    assert (result.blobs_skipped, result.blobs_copied) == (1, 2)
    assert result.bytes_copied == blobs[0]["size"] + blobs[2]["size"]
    fetched = [
        r.path for r in (await settled_requests(basic))[mark:] if r.method == "GET" and "/blobs/" in r.path
    ]
    assert not any(shared_layer["digest"] in path for path in fetched)
    assert len(fetched) == 2


async def _read_blob(client: RegistryClient, repo: Reference, digest: str) -> bytes:
    response = await client.open_blob(repo, digest)
    try:
        return b"".join([chunk async for chunk in response.iter_chunks(65536)])
    finally:
        response.close()


async def test_copy_within_one_registry_mounts_instead_of_moving_bytes(
    world: World, client: RegistryClient
) -> None:
    ecr = world.registries["ecr"]
    source, destination = _repo(world, "ecr"), _repo(world, "ecr")
    manifest, blobs = await push_image(client, source, "v1")
    mark = len(await settled_requests(ecr))

    result = await copy_image(source.with_tag("v1"), destination.with_tag("copy"), source_client=client)

    assert result.destination_digest == manifest["digest"]
    assert (result.blobs_mounted, result.blobs_copied, result.bytes_copied) == (len(blobs), 0, 0)
    requests = (await settled_requests(ecr))[mark:]
    assert not [r for r in requests if r.method == "GET" and "/blobs/" in r.path]
    assert sum(1 for r in requests if r.method == "POST" and "mount=" in r.path and r.status == 201) == len(
        blobs
    )


async def test_registry_refuses_an_index_whose_children_are_missing(
    world: World, client: RegistryClient
) -> None:
    """The fact the platform-filter design rests on: a partial index cannot be pushed as is."""
    source, destination = _repo(world, "anonymous"), _repo(world, "ecr")
    index, _, _ = await push_index(client, source, "v1", ("amd64", "arm64"))
    manifest = await client.get_manifest(source, index["digest"])
    with pytest.raises(RegistryError) as refused:
        await client.put_manifest(destination, "v1", manifest)
    assert "MANIFEST_BLOB_UNKNOWN" in refused.value.codes


async def test_platform_filter_pushes_a_deterministic_filtered_index(
    world: World, client: RegistryClient
) -> None:
    anonymous = world.registries["anonymous"]
    source, destination = _repo(world, "anonymous"), _repo(world, "ecr")
    index, children, _ = await push_index(client, source, "v1", ("amd64", "arm64", "s390x"))
    wanted = PlatformFilter.parse(["linux/arm64/v8", "linux/riscv64"])

    result = await copy_image(source.with_tag("v1"), destination, source_client=client, platforms=wanted)

    assert result.filtered
    assert result.source_digest == index["digest"] != result.destination_digest
    assert await head_digest(client, destination, "v1") == result.destination_digest
    pushed = json.loads((await client.get_manifest(destination, "v1")).raw)
    source_document = json.loads((await client.get_manifest(source, "v1")).raw)
    assert pushed == {**source_document, "manifests": [children[1]]}
    assert await head_digest(client, destination, children[1]["digest"]) == children[1]["digest"]
    for dropped in (children[0], children[2]):
        assert await head_digest(client, destination, dropped["digest"]) is None
    assert result.platforms_copied == ("linux/arm64",)
    assert result.platforms_missing == ("linux/riscv64",)
    child = await client.get_manifest(source, children[1]["digest"])
    pushed_size = len(json.dumps(pushed, separators=(",", ":")))
    assert result.image_bytes == pushed_size + len(child.raw) + sum(blob.size for blob in child.blobs)

    # The same source and filter make the same index: known from the first copy, a resync only HEADs.
    mark = len(await settled_requests(anonymous))
    again = await copy_image(
        source.with_tag("v1"),
        destination,
        source_client=client,
        platforms=wanted,
        known_copies={result.source_digest: result.destination_digest},
    )
    assert again.up_to_date
    assert again.filtered
    assert again.destination_digest == result.destination_digest
    assert [r.method for r in (await settled_requests(anonymous))[mark:]] == ["HEAD"]
    forgotten = await copy_image(source.with_tag("v1"), destination, source_client=client, platforms=wanted)
    assert forgotten.up_to_date
    assert forgotten.destination_digest == result.destination_digest


async def test_platform_filter_keeps_the_index_exact_when_the_dropped_children_are_there(
    world: World, client: RegistryClient
) -> None:
    source, destination = _repo(world, "anonymous"), _repo(world, "ecr")
    index, children, _ = await push_index(client, source, "v1", ("amd64", "arm64"))
    await copy_image(source.with_tag("v1"), destination, source_client=client)
    wanted = PlatformFilter.parse(["linux/arm64"])

    exact = await copy_image(
        source.with_tag("v1"), destination.with_tag("arm64-only"), source_client=client, platforms=wanted
    )

    assert not exact.filtered
    assert exact.destination_digest == index["digest"]
    assert await head_digest(client, destination, "arm64-only") == index["digest"]
    assert (exact.manifests_pushed, exact.bytes_copied) == (1, 0)
    assert exact.platforms_copied == ("linux/arm64",)
    assert exact.image_bytes > children[1]["size"]


async def test_a_filter_matching_no_platform_copies_nothing(world: World, client: RegistryClient) -> None:
    ecr = world.registries["ecr"]
    source, destination = _repo(world, "anonymous"), _repo(world, "ecr")
    await push_index(client, source, "v1", ("amd64", "arm64"))
    mark = len(await settled_requests(ecr))
    with pytest.raises(NoMatchingPlatform) as refused:
        await copy_image(
            source.with_tag("v1"),
            destination,
            source_client=client,
            platforms=PlatformFilter.parse(["linux/riscv64"]),
        )
    assert refused.value.missing_platforms == ("linux/riscv64",)
    assert [r for r in (await settled_requests(ecr))[mark:] if r.method not in ("HEAD", "GET")] == []


async def test_a_moved_tag_is_kept_or_followed_as_asked(world: World, client: RegistryClient) -> None:
    anonymous = world.registries["anonymous"]
    source, destination = _repo(world, "anonymous"), _repo(world, "ecr")
    first, _ = await push_image(client, source, "v1", layer_sizes=(1000,))
    await copy_image(source.with_tag("v1"), destination, source_client=client)
    moved, _ = await push_image(client, source, "v1", layer_sizes=(1000,))

    mark = len(await settled_requests(anonymous))
    kept = await copy_image(source.with_tag("v1"), destination, source_client=client, replace_tag=False)
    assert kept.tag_kept
    assert not kept.up_to_date
    assert (kept.source_digest, kept.destination_digest) == (moved["digest"], first["digest"])
    assert await head_digest(client, destination, "v1") == first["digest"]
    assert [r.method for r in (await settled_requests(anonymous))[mark:]] == ["HEAD"]

    followed = await copy_image(source.with_tag("v1"), destination, source_client=client)
    assert followed.destination_digest == moved["digest"]
    assert await head_digest(client, destination, "v1") == moved["digest"]


async def test_referrers_are_copied_recursively(world: World, client: RegistryClient) -> None:
    source, destination = _repo(world, "basic"), _repo(world, "ecr")
    image, _ = await push_image(client, source, "v1")
    sbom = await push_artifact(client, source, image, "application/spdx+json", b'{"spdxVersion": "SPDX-2.3"}')
    signature = await push_artifact(
        client, source, sbom, "application/vnd.dev.cosign.artifact.sig.v1+json", b"sig"
    )
    await push_fallback_index(client, source, image, [sbom])
    await push_fallback_index(client, source, sbom, [signature])

    result = await copy_image(source.with_tag("v1"), destination, source_client=client, referrers=True)

    assert [(r.subject, r.digest, r.artifact_type) for r in result.referrers] == [
        (image["digest"], sbom["digest"], "application/spdx+json"),
        (sbom["digest"], signature["digest"], "application/vnd.dev.cosign.artifact.sig.v1+json"),
    ]
    for referrer in (sbom, signature):
        assert await head_digest(client, destination, referrer["digest"]) == referrer["digest"]
    for subject in (image, sbom):
        tag = fallback_tag(subject["digest"])
        assert await head_digest(client, destination, tag) == await head_digest(client, source, tag)

    ecr, basic = world.registries["ecr"], world.registries["basic"]
    mark, source_mark = len(await settled_requests(ecr)), len(await settled_requests(basic))
    again = await copy_image(source.with_tag("v1"), destination, source_client=client, referrers=True)
    assert again.up_to_date
    assert [r.digest for r in again.referrers] == [sbom["digest"], signature["digest"]]
    assert [r for r in (await settled_requests(ecr))[mark:] if r.method in ("PUT", "POST", "PATCH")] == []
    # Upstream, a resync only HEADs manifests and asks the referrers API (absent here: 404); it pulls nothing.
    upstream = [(r.method, r.path.split("/")[-2]) for r in (await settled_requests(basic))[source_mark:]]
    assert {entry for entry in upstream if entry[0] != "HEAD"} == {("GET", "referrers")}


async def test_corrupted_source_blob_is_refused(world: World, client: RegistryClient) -> None:
    source, destination = _repo(world, "anonymous"), _repo(world, "ecr")
    manifest, blobs = await push_image(client, source, "v1")
    layer = blobs[2]
    # Rot the bytes on the source registry's disk (same size, so only hashing can tell).
    hex_digest = layer["digest"].removeprefix("sha256:")
    stored = _blob_file(world, "anonymous", hex_digest)
    stored.write_bytes(os.urandom(layer["size"]))

    with pytest.raises(DigestMismatch):
        await copy_image(source.with_tag("v1"), destination, source_client=client)

    assert not await client.blob_exists(destination, layer["digest"])
    assert await client.head_manifest(destination, "v1") is None
    assert await client.head_manifest(destination, manifest["digest"]) is None


def _blob_file(world: World, registry: str, hex_digest: str) -> Path:
    data = world.state_dir / "registries" / registry / "data" / "docker" / "registry" / "v2" / "blobs"
    return data / "sha256" / hex_digest[:2] / hex_digest / "data"


async def test_anonymous_access_and_refused_credentials(
    world: World, client: RegistryClient, session: aiohttp.ClientSession
) -> None:
    public, private = _repo(world, "token", "public/"), _repo(world, "token")
    await push_image(client, public, "v1", layer_sizes=(1000,))
    await push_image(client, private, "v1", layer_sizes=(1000,))
    anonymous = RegistryClient(AiohttpSender(session))

    assert await anonymous.list_tags(public) == ["v1"]
    with pytest.raises(AuthError):
        await anonymous.list_tags(private)

    basic = world.registries["basic"]
    wrong = RegistryClient(
        AiohttpSender(session),
        credentials=StaticCredentials({basic.host: Credentials(basic.username or "", "wrong")}),
    )
    with pytest.raises(AuthError) as refused:
        await copy_image(
            public.with_tag("v1"), _repo(world, "basic"), source_client=anonymous, destination_client=wrong
        )
    assert refused.value.status == 401


async def test_memory_stays_flat_for_a_large_layer(world: World, client: RegistryClient) -> None:
    source, destination = _repo(world, "anonymous"), _repo(world, "basic")
    size, chunk = 48 * 1024 * 1024, 1024 * 1024

    def chunks() -> Iterator[bytes]:
        generator = random.Random(size)  # the same bytes twice: once to hash, once to upload
        for _ in range(size // chunk):
            yield generator.randbytes(chunk)

    hasher = hashlib.sha256()
    for piece in chunks():
        hasher.update(piece)
    digest = f"sha256:{hasher.hexdigest()}"
    layer = {"mediaType": LAYER_TYPE, "digest": digest, "size": size}

    async def body() -> AsyncIterator[bytes]:
        for piece in chunks():
            yield piece

    await client.upload_blob(source, await client.start_upload(source), digest, size, body())
    config = await push_blob(client, source, b'{"os":"linux","architecture":"amd64"}', CONFIG_TYPE)
    document = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": config, "layers": [layer]}
    await push_manifest(client, source, document, "big")

    tracemalloc.start()
    try:
        result = await copy_image(source.with_tag("big"), destination, source_client=client)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.bytes_copied > size
    assert peak < 12 * 1024 * 1024, f"copying a {size >> 20} MiB layer peaked at {peak >> 20} MiB"


async def test_tags_are_listed(world: World, client: RegistryClient) -> None:
    repo = _repo(world, "ecr")
    manifest, _ = await push_image(client, repo, "v1", layer_sizes=(100,))
    raw = await client.get_manifest(repo, manifest["digest"])
    for tag in ("v2", "latest", "1.0.0"):
        await client.put_manifest(repo, tag, raw)
    assert sorted(await client.list_tags(repo)) == ["1.0.0", "latest", "v1", "v2"]


async def test_ecr_hostname_reaches_its_endpoint_with_its_own_credentials(
    world: World, session: aiohttp.ClientSession
) -> None:
    """How the operator addresses ECR: the real hostname, served elsewhere (here: the world's stand-in)."""
    ecr_host = world.ecr_registry_host()
    ecr = world.registries["ecr"]
    credentials = StaticCredentials({ecr_host: Credentials("AWS", f"{world.account_id}-auth-token")})
    client = RegistryClient(
        AiohttpSender(session), credentials=credentials, endpoints=world.registry_host_overrides()
    )
    anonymous = RegistryClient(AiohttpSender(session))
    source = _repo(world, "anonymous")
    manifest, _ = await push_image(anonymous, source, "v1", layer_sizes=(5000,))
    destination = parse_reference(f"{ecr_host}/team/app-{uuid.uuid4().hex[:8]}:v1")

    result = await copy_image(
        source.with_tag("v1"), destination, source_client=anonymous, destination_client=client
    )

    assert result.destination == destination.with_digest(manifest["digest"])
    on_stand_in = parse_reference(f"{ecr.host}/{destination.repository}")
    with pytest.raises(AuthError):  # its credentials belong to the ECR name, not to the raw address
        await head_digest(client, on_stand_in, "v1")
    ecr_client = RegistryClient(AiohttpSender(session), credentials=_docker_config(world))
    assert await head_digest(ecr_client, on_stand_in, "v1") == manifest["digest"]
