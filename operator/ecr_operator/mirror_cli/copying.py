"""The copies one ``ecr-operator mirror`` command asks for: one image, or every matching tag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ecr_operator.ecr_hosts import ecr_host_region
from ecr_operator.mirror_cli.arguments import TAGS_PER_JOB, MirrorRequest
from ecr_operator.mirror_cli.progress import ProgressLine
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.copy import copy_image
from ecr_operator.registry.errors import InvalidReference, NotFound, RegistryError
from ecr_operator.registry.reference import Reference, validate_tag
from ecr_operator.registry.results import ImageCopyResult
from ecr_operator.tag_patterns import TagPattern


@dataclass(frozen=True)
class TagFailure:
    source: Reference
    error: str


@dataclass
class MirrorOutcome:
    copies: list[ImageCopyResult] = field(default_factory=list)
    failures: list[TagFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def connections_for(jobs: int) -> int:
    """Connections the session may open: every blob in flight holds its source GET while it opens the
    destination upload, so each of the tags at once needs two per blob job, plus its manifest requests,
    plus a margin. Fewer, and blobs could hold every connection waiting for a second one."""
    tags = TAGS_PER_JOB * jobs
    return 2 * tags * jobs + 2 * tags + 8


def select_tags(tags: Sequence[str], pattern: TagPattern) -> list[str]:
    """Tags the pattern matches whole, in a stable order; names no client could pull are left out."""
    return sorted(tag for tag in tags if pattern.fullmatch(tag) and _is_tag(tag))


def _is_tag(text: str) -> bool:
    try:
        validate_tag(text)
    except InvalidReference:
        return False
    return True


async def _copies_asked_for(
    request: MirrorRequest, client: RegistryClient
) -> list[tuple[Reference, Reference]]:
    """(source, destination) of each image to copy: the one named, or every tag the pattern selects."""
    if request.tag_pattern is None:
        return [(request.source, request.destination)]
    listed = await client.list_tags(request.source)
    tags = select_tags(listed, request.tag_pattern)
    if not tags:
        raise NotFound(
            f"no tag of {request.source} matches {request.tag_pattern.pattern!r} ({len(listed)} tags listed)"
        )
    return [(request.source.with_tag(tag), request.destination.with_tag(tag)) for tag in tags]


async def mirror(
    request: MirrorRequest,
    client: RegistryClient,
    progress: ProgressLine | None = None,
) -> MirrorOutcome:
    """Run the copies the request asks for; failures of single tags are collected, not raised."""
    outcome = MirrorOutcome()
    began = time.monotonic()
    pairs = await _copies_asked_for(request, client)
    if progress is not None:
        progress.images_total = len(pairs)
    slots = asyncio.Semaphore(TAGS_PER_JOB * request.jobs)

    async def copy(source: Reference, destination: Reference) -> ImageCopyResult:
        return await copy_image(
            source,
            destination,
            source_client=client,
            platforms=request.platforms,
            referrers=request.referrers,
            concurrency=request.jobs,
            progress=progress,
        )

    async def copy_one(source: Reference, destination: Reference) -> None:
        async with slots:
            try:
                try:
                    result = await copy(source, destination)
                except RegistryError as error:
                    if "MANIFEST_BLOB_UNKNOWN" not in error.codes:
                        raise
                    # A blob another tag's copy was committing at the same moment (see below): the
                    # blobs are all there now, so a second pass only pushes the manifest.
                    result = await copy(source, destination)
            except (RegistryError, InvalidReference) as error:  # e.g. DST pins another digest
                outcome.failures.append(TagFailure(source, _explain(error, destination)))
            else:
                outcome.copies.append(result)
            if progress is not None:
                progress.image_done()

    # Tags of one repository mostly share their base layers. The first tag goes alone, so the others
    # find those blobs in the destination instead of all uploading them at once: bytes saved, and no
    # race in registries that rewrite a repository's blob link non-atomically (distribution 2.8 then
    # refuses a manifest pushed meanwhile with MANIFEST_BLOB_UNKNOWN; measured in `make bench`).
    first, *others = pairs
    await copy_one(*first)
    async with asyncio.TaskGroup() as group:
        for source, destination in others:
            group.create_task(copy_one(source, destination))
    outcome.copies.sort(key=lambda result: str(result.source))
    outcome.failures.sort(key=lambda failure: str(failure.source))
    outcome.seconds = time.monotonic() - began
    return outcome


def _explain(error: RegistryError | InvalidReference, destination: Reference) -> str:
    message = str(error)
    codes = error.codes if isinstance(error, RegistryError) else ()
    if ecr_host_region(destination.registry) and "NAME_UNKNOWN" in codes:
        message += (
            f" (does the ECR repository {destination.repository} exist? this command does not create it)"
        )
    return message
