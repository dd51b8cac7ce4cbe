"""Manifests as read from a registry: the exact bytes plus the descriptors they reference.

The bytes are what gets pushed; the parsed view only decides what to copy first. A manifest is never
re-serialised, because any change of whitespace or key order changes its digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ecr_operator.json_object import parse_json_object
from ecr_operator.registry import mediatypes
from ecr_operator.registry.digests import digest_of, validate_digest
from ecr_operator.registry.errors import (
    DigestMismatch,
    InvalidReference,
    MalformedResponse,
    ManifestTooLarge,
    UnsupportedMediaType,
)
from ecr_operator.registry.platforms import Platform, platform_from_descriptor

# The OCI distribution spec: registries SHOULD accept manifests up to 4 MiB. Larger ones would not be
# accepted by every destination (ECR among them) and would cost memory, so they are refused.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
# Sizes are int64 in every registry; a larger one is a lie that would only overflow somewhere else.
MAX_BLOB_SIZE = 2**63 - 1


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    urls: tuple[str, ...] = ()

    @property
    def distributable(self) -> bool:
        """False for foreign/non-distributable layers, which registries never hold as blobs."""
        return self.media_type not in mediatypes.NON_DISTRIBUTABLE_LAYERS

    def to_json(self) -> dict[str, Any]:
        """The OCI descriptor object (used only to build referrers fallback indexes, never to re-push)."""
        document: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            document["artifactType"] = self.artifact_type
        if self.annotations:
            document["annotations"] = dict(self.annotations)
        return document


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes, its digest and media type, and what it references."""

    raw: bytes
    digest: str
    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in mediatypes.INDEXES

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Blobs that must exist in a repository before this manifest can be pushed there."""
        referenced = (self.config, *self.layers) if self.config is not None else self.layers
        return tuple(blob for blob in referenced if blob.distributable)


def parse_manifest(raw: bytes, *, content_type: str | None, expected_digest: str | None = None) -> Manifest:
    """Parse manifest bytes as served, verifying them against ``expected_digest`` when given.

    The media type is the body's ``mediaType`` field when present (the registry's Content-Type may be a
    generic one), else the Content-Type, else inferred from the structure as the OCI spec allows.
    Every failure is a RegistryError: ManifestTooLarge, DigestMismatch, UnsupportedMediaType, or
    MalformedResponse for anything that does not parse (upstream input never escapes as a ValueError).
    """
    if len(raw) > MAX_MANIFEST_SIZE:
        raise manifest_too_large(len(raw))
    if expected_digest is not None:
        validate_digest(expected_digest)
    algorithm = expected_digest.partition(":")[0] if expected_digest else "sha256"
    digest = digest_of(raw, algorithm)
    if expected_digest is not None and digest != expected_digest:
        raise DigestMismatch(f"manifest expected to be {expected_digest} hashes to {digest}")
    document = parse_json_object(
        raw, MalformedResponse, f"manifest {digest} is not JSON", f"manifest {digest} is not a JSON object"
    )
    media_type = _media_type(document, content_type, digest)
    try:
        return _build(document, raw=raw, digest=digest, media_type=media_type)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        detail = str(exc)[:200] if isinstance(exc, InvalidReference) else repr(exc)[:200]
        raise MalformedResponse(f"malformed {media_type} manifest {digest}: {detail}") from exc


def manifest_too_large(size: int) -> ManifestTooLarge:
    return ManifestTooLarge(f"manifest of {size} bytes exceeds the {MAX_MANIFEST_SIZE} byte limit")


def _media_type(document: Mapping[str, Any], content_type: str | None, digest: str) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise MalformedResponse(f"manifest {digest}: mediaType is not a string")
    header = mediatypes.bare_media_type(content_type)
    if document.get("schemaVersion") == 1 or declared in mediatypes.SCHEMA1 or header in mediatypes.SCHEMA1:
        raise UnsupportedMediaType(
            f"manifest {digest} is Docker schema 1, deprecated since 2017 and refused by modern registries;"
            " rebuild or re-push the image with a current client"
        )
    if isinstance(declared, str):
        media_type = declared
    elif header in mediatypes.MANIFESTS:
        media_type = header
    elif "manifests" in document:
        media_type = mediatypes.OCI_INDEX
    elif "config" in document:
        media_type = mediatypes.OCI_MANIFEST
    else:
        media_type = header or "unknown"
    if media_type not in mediatypes.MANIFESTS:
        shown = media_type[:100] if isinstance(media_type, str) else type(media_type).__name__
        raise UnsupportedMediaType(f"manifest {digest} has unsupported media type {shown!r}")
    return media_type


def _build(document: Mapping[str, Any], *, raw: bytes, digest: str, media_type: str) -> Manifest:
    subject = _descriptor(document["subject"]) if "subject" in document else None
    artifact_type = document.get("artifactType")
    annotations = _annotations(document.get("annotations"))
    if media_type in mediatypes.INDEXES:
        children = tuple(_descriptor(entry) for entry in document["manifests"])
        for child in children:
            if child.size > MAX_MANIFEST_SIZE:
                raise manifest_too_large(child.size)
        return Manifest(
            raw=raw,
            digest=digest,
            media_type=media_type,
            children=children,
            subject=subject,
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
            annotations=annotations,
        )
    return Manifest(
        raw=raw,
        digest=digest,
        media_type=media_type,
        config=_descriptor(document["config"]),
        layers=tuple(_descriptor(entry) for entry in document.get("layers") or ()),
        subject=subject,
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        annotations=annotations,
    )


def _descriptor(entry: Mapping[str, Any]) -> Descriptor:
    media_type, digest, size = entry["mediaType"], entry["digest"], entry["size"]
    if not isinstance(media_type, str) or not isinstance(digest, str):
        raise TypeError("descriptor mediaType and digest must be strings")
    validate_digest(digest)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
        raise ValueError(f"descriptor {digest} has invalid size {str(size)[:40]}")
    artifact_type = entry.get("artifactType")
    urls = entry.get("urls") or ()
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=platform_from_descriptor(entry.get("platform")),
        annotations=_annotations(entry.get("annotations")),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        urls=tuple(url for url in urls if isinstance(url, str)),
    )


def _annotations(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(key): str(item) for key, item in value.items()}
