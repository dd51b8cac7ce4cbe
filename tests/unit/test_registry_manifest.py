"""Reading manifests: media types, schema 1 refusal, size limit, digests, what must be copied."""

from __future__ import annotations

import json

import pytest

from ecr_operator.registry import mediatypes
from ecr_operator.registry.digests import sha256_digest
from ecr_operator.registry.errors import (
    DigestMismatch,
    MalformedResponse,
    ManifestTooLarge,
    RegistryError,
    UnsupportedMediaType,
)
from ecr_operator.registry.manifest import MAX_MANIFEST_SIZE, parse_manifest

pytestmark = pytest.mark.unit

CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "1" * 64, "size": 10}
LAYER = {
    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
    "digest": "sha256:" + "2" * 64,
    "size": 20,
}


def _raw(document: object) -> bytes:
    return json.dumps(document, indent=3).encode()


def test_bytes_and_digest_are_kept_exactly() -> None:
    raw = _raw(
        {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": CONFIG, "layers": [LAYER]}
    )
    manifest = parse_manifest(raw, content_type=mediatypes.OCI_MANIFEST)
    assert manifest.raw is raw
    assert manifest.digest == sha256_digest(raw)
    assert [blob.digest for blob in manifest.blobs] == [CONFIG["digest"], LAYER["digest"]]


def test_body_media_type_wins_over_a_generic_content_type() -> None:
    raw = _raw({"schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST, "config": CONFIG, "layers": []})
    assert parse_manifest(raw, content_type="application/json").media_type == mediatypes.DOCKER_MANIFEST


def test_media_type_comes_from_content_type_or_structure_when_the_body_has_none() -> None:
    image = _raw({"schemaVersion": 2, "config": CONFIG, "layers": []})
    index = _raw({"schemaVersion": 2, "manifests": []})
    assert parse_manifest(image, content_type=f"{mediatypes.DOCKER_MANIFEST}; charset=utf-8").media_type == (
        mediatypes.DOCKER_MANIFEST
    )
    assert parse_manifest(image, content_type=None).media_type == mediatypes.OCI_MANIFEST
    assert parse_manifest(index, content_type="application/json").media_type == mediatypes.OCI_INDEX


def test_index_children_carry_platforms() -> None:
    child = {
        **LAYER,
        "mediaType": mediatypes.DOCKER_MANIFEST,
        "platform": {"os": "linux", "architecture": "arm64"},
    }
    manifest = parse_manifest(
        _raw({"schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST_LIST, "manifests": [child]}),
        content_type=None,
    )
    assert manifest.is_index
    assert manifest.blobs == ()
    assert str(manifest.children[0].platform) == "linux/arm64"


@pytest.mark.parametrize(
    ("document", "content_type"),
    [
        ({"schemaVersion": 1, "name": "x", "fsLayers": []}, None),
        ({"schemaVersion": 1}, mediatypes.DOCKER_SCHEMA1_SIGNED),
        ({"name": "x"}, mediatypes.DOCKER_SCHEMA1),
    ],
)
def test_schema1_is_refused_with_an_explanation(document: object, content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType, match="schema 1"):
        parse_manifest(_raw(document), content_type=content_type)


def test_unknown_media_types_are_refused() -> None:
    raw = _raw({"mediaType": "application/vnd.oci.artifact.manifest.v1+json", "blobs": []})
    with pytest.raises(UnsupportedMediaType, match=r"artifact\.manifest"):
        parse_manifest(raw, content_type=None)


def test_manifests_over_4_mib_are_refused() -> None:
    padding = "x" * MAX_MANIFEST_SIZE
    raw = _raw({"schemaVersion": 2, "config": CONFIG, "layers": [], "annotations": {"pad": padding}})
    with pytest.raises(ManifestTooLarge, match="exceeds"):
        parse_manifest(raw, content_type=mediatypes.OCI_MANIFEST)


def test_index_children_announced_over_4_mib_are_refused() -> None:
    child = {**LAYER, "mediaType": mediatypes.OCI_MANIFEST, "size": MAX_MANIFEST_SIZE + 1}
    with pytest.raises(ManifestTooLarge):
        parse_manifest(_raw({"schemaVersion": 2, "manifests": [child]}), content_type=mediatypes.OCI_INDEX)


def test_content_must_match_the_digest_it_was_fetched_by() -> None:
    raw = _raw({"schemaVersion": 2, "config": CONFIG, "layers": []})
    with pytest.raises(DigestMismatch):
        parse_manifest(raw, content_type=mediatypes.OCI_MANIFEST, expected_digest="sha256:" + "0" * 64)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        _raw({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "layers": []}),
        _raw({"schemaVersion": 2, "config": {**CONFIG, "size": -1}, "layers": []}),
        _raw({"schemaVersion": 2, "config": {**CONFIG, "digest": "sha256:short"}, "layers": []}),
        _raw({"schemaVersion": 2, "config": {**CONFIG, "size": 2**63}, "layers": []}),
        _raw({"schemaVersion": 2, "config": CONFIG, "layers": 7}),
        _raw({"schemaVersion": 2, "config": CONFIG, "layers": ["x"]}),
        _raw({"schemaVersion": 2, "config": CONFIG, "subject": []}),
        b"[" * 50_000,
    ],
)
def test_malformed_manifests_raise_malformed_response(raw: bytes) -> None:
    with pytest.raises(MalformedResponse):
        parse_manifest(raw, content_type=mediatypes.OCI_MANIFEST)
    assert issubclass(MalformedResponse, RegistryError)


def test_a_non_string_media_type_is_malformed_not_a_type_error() -> None:
    with pytest.raises(MalformedResponse, match="mediaType is not a string"):
        parse_manifest(_raw({"schemaVersion": 2, "mediaType": {"a": 1}, "config": CONFIG}), content_type=None)


def test_index_children_listed_twice_keep_the_manifest_bytes() -> None:
    child = {"mediaType": mediatypes.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 10}
    raw = _raw({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [child, child, child]})
    index = parse_manifest(raw, content_type=None)
    assert index.raw == raw
    assert len(index.children) == 3  # as written; the copy engine de-duplicates (distinct_children)


def test_non_distributable_layers_are_not_blobs_to_copy() -> None:
    foreign = {
        **LAYER,
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "urls": ["u"],
    }
    raw = _raw(
        {"schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST, "config": CONFIG, "layers": [foreign]}
    )
    manifest = parse_manifest(raw, content_type=None)
    assert [blob.digest for blob in manifest.blobs] == [CONFIG["digest"]]
