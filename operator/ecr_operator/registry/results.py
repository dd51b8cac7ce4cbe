"""What a copy did and what it reports while working: plain values, so pure code can reason about them.

``copy.copy_image`` returns an ``ImageCopyResult`` and calls a ``ProgressCallback`` with ``ProgressEvent``s;
``reconcile/`` turns results into status, so they live apart from the copy engine and its HTTP stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ecr_operator.registry.reference import Reference


@dataclass(frozen=True)
class BlobStarted:
    digest: str
    size: int


@dataclass(frozen=True)
class BlobProgress:
    digest: str
    transferred: int
    size: int


@dataclass(frozen=True)
class BlobDone:
    digest: str
    size: int
    outcome: Literal["copied", "skipped", "mounted"]


@dataclass(frozen=True)
class ManifestPushed:
    digest: str
    media_type: str
    target: str


ProgressEvent = BlobStarted | BlobProgress | BlobDone | ManifestPushed
ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class ReferrerCopy:
    """A referrer (signature, SBOM, attestation...) of ``subject`` now present in the destination."""

    subject: str
    digest: str
    artifact_type: str | None
    media_type: str


@dataclass(frozen=True)
class ImageCopyResult:
    """What one copy_image did.

    ``up_to_date``: the destination already had the image (after HEADs only, platform fields and
    ``image_bytes`` are then empty). ``filtered``: the destination holds a platform subset of the source
    index under ``destination_digest``. ``tag_kept``: the destination tag names another image and was
    left alone (``replace_tag=False``); ``destination_digest`` is that image. ``image_bytes`` is the size
    of the image as copied: its manifests and their blobs.
    """

    source: Reference
    destination: Reference
    source_digest: str
    destination_digest: str
    media_type: str | None
    up_to_date: bool
    filtered: bool = False
    tag_kept: bool = False
    image_bytes: int = 0
    bytes_copied: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_pushed: int = 0
    platforms_copied: tuple[str, ...] = ()
    platforms_missing: tuple[str, ...] = ()
    referrers: tuple[ReferrerCopy, ...] = ()
