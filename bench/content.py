"""Benchmark images: fresh random content for every run, pushed into the source registry.

Fresh content keeps "cold" honest for every tool: skopeo remembers where it has seen a blob (its blob
info cache) and would mount it from an earlier run's repository instead of copying, and a registry
that already stores a digest does less work. Layers are gzip streams of random bytes in stored
(uncompressed) deflate blocks: valid gzip, which copiers check, and cheap to make.
"""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.manifest import parse_manifest
from ecr_operator.registry.reference import Reference

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BlobRef:
    digest: str
    size: int

    def descriptor(self, media_type: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": self.digest, "size": self.size}


def gzip_of_random(size: int, seed: int) -> bytes:
    """``size`` random bytes (from ``seed``) as a stored-block gzip stream."""
    compressor = zlib.compressobj(0, zlib.DEFLATED, 31)
    return compressor.compress(random.Random(seed).randbytes(size)) + compressor.flush()


def write_gzip_of_random(path: Path, size: int, seed: int) -> BlobRef:
    """The same as gzip_of_random, streamed into a file (for layers too big to hold in memory)."""
    compressor = zlib.compressobj(0, zlib.DEFLATED, 31)
    generator = random.Random(seed)
    digest = hashlib.sha256()
    written = 0
    with path.open("wb") as out:

        def emit(data: bytes) -> None:
            nonlocal written
            digest.update(data)
            out.write(data)
            written += len(data)

        remaining = size
        while remaining:
            step = min(CHUNK, remaining)
            remaining -= step
            emit(compressor.compress(generator.randbytes(step)))
        emit(compressor.flush())
    return BlobRef("sha256:" + digest.hexdigest(), written)


async def _chunks_of(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


async def _chunks_of_file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk


async def push_bytes(client: RegistryClient, repo: Reference, data: bytes) -> BlobRef:
    blob = BlobRef("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    if not await client.blob_exists(repo, blob.digest, for_push=True):
        location = await client.start_upload(repo)
        await client.upload_blob(repo, location, blob.digest, blob.size, _chunks_of(data))
    return blob


async def push_file(client: RegistryClient, repo: Reference, path: Path, blob: BlobRef) -> BlobRef:
    location = await client.start_upload(repo)
    await client.upload_blob(repo, location, blob.digest, blob.size, _chunks_of_file(path))
    return blob


async def push_manifest(client: RegistryClient, repo: Reference, target: str, document: object) -> BlobRef:
    raw = json.dumps(document, separators=(",", ":")).encode()
    media_type = str(document["mediaType"]) if isinstance(document, dict) else OCI_MANIFEST
    manifest = parse_manifest(raw, content_type=media_type)
    await client.put_manifest(repo, target, manifest)
    return BlobRef(manifest.digest, len(raw))


def image_manifest(config: BlobRef, layers: Sequence[BlobRef]) -> dict[str, object]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(OCI_CONFIG),
        "layers": [layer.descriptor(OCI_LAYER) for layer in layers],
    }


def config_for(platform: str, layers: Sequence[BlobRef], salt: str) -> bytes:
    os_name, architecture = platform.split("/", 1)
    return json.dumps(
        {
            "architecture": architecture,
            "os": os_name,
            "config": {"Labels": {"bench.run": salt}},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        }
    ).encode()


async def push_image(
    client: RegistryClient,
    repo: Reference,
    tag: str | None,
    *,
    layers: Sequence[bytes],
    platform: str = "linux/amd64",
    salt: str,
) -> BlobRef:
    """An image of the given layers (pushed if new), tagged ``tag`` (or by digest when None)."""
    pushed = [await push_bytes(client, repo, layer) for layer in layers]
    config = await push_bytes(client, repo, config_for(platform, pushed, salt))
    manifest = image_manifest(config, pushed)
    raw_digest = "sha256:" + hashlib.sha256(json.dumps(manifest, separators=(",", ":")).encode()).hexdigest()
    return await push_manifest(client, repo, tag or raw_digest, manifest)


async def push_index(
    client: RegistryClient,
    repo: Reference,
    tag: str,
    *,
    platforms: Sequence[str],
    layer_sizes: Sequence[int],
    seed: int,
) -> BlobRef:
    entries = []
    for number, platform in enumerate(platforms):
        layers = [
            gzip_of_random(size, seed * 1000 + number * 10 + index) for index, size in enumerate(layer_sizes)
        ]
        image = await push_image(client, repo, None, layers=layers, platform=platform, salt=f"{seed}")
        os_name, architecture = platform.split("/", 1)
        entries.append(
            {
                **image.descriptor(OCI_MANIFEST),
                "platform": {"os": os_name, "architecture": architecture},
            }
        )
    return await push_manifest(
        client, repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    )
