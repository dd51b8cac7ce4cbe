"""copy_image: digest-exact copy of an image (or image index) between registries.

Order of work, each step skipped when the destination already has what it needs:

1. HEAD the manifest on both sides; equal digests end the work. A HEAD is not a pull on Docker Hub, so
   a no-op resync costs no rate limit.
2. Plan: GET the manifest (and the children of an index the platform filter selects and the destination
   lacks), collecting every blob they reference.
3. Blobs, at most ``concurrency`` at a time: HEAD in the destination; mount when source and destination
   are repositories of the same registry (and the same client/credentials); else stream GET -> PUT in one
   request, hashed on the way and cut before its last chunk if digest or size is wrong. Failures that may
   pass (429, 5xx, connection loss) restart the blob, honouring ``Retry-After``.
4. Manifests, children first, as the exact bytes read (never re-serialised), only after all their blobs
   are in the destination; the registry must report the source digest back.
5. Referrers (signatures, SBOMs, attestations), when asked: listed through the referrers API or the
   ``sha256-<hex>`` fallback tag, copied like images, recursively (signatures of SBOMs...), for the image
   and every child copied. On a no-op resync only the top-level digest is asked (signatures added later to
   an index are picked up; asking for each child would need the index, a GET, a pull on Docker Hub). A
   destination without the referrers API gets the fallback tag: the source's own fallback index
   byte-exact when the destination has none yet, else the union of both listings. A fallback index the
   destination already holds (same digest on both sides) is read there rather than pulled again.

Platform filter on an index: an index can be pushed only when every child it lists exists in the
destination (distribution and ECR refuse it otherwise, MANIFEST_BLOB_UNKNOWN /
ReferencedImagesNotFoundException). Whenever that allows, the original index is pushed byte-exact, so
destination digest == source digest, which is what users pin and verify: without a filter, when the filter
keeps every child, or when the children it drops are already in the destination (e.g. from an earlier
unfiltered copy). Otherwise a *filtered* index is pushed: the source index with only the kept entries of
its ``manifests`` list (every other field, and each kept entry, as in the source), serialised
deterministically, so the same source and filter always give the same digest. Its children are still
byte-exact; the result says ``filtered`` and reports both digests. Referrers of the source index (its
signatures) are not copied then: they sign a digest the destination does not hold. Docker attestation
manifests (platform unknown/unknown) follow the image they describe; children without a platform are
always copied. Requested platforms the index lacks are reported, not an error, unless none is left. A
single-platform image (no index) is copied as is.

Mutable tags: with ``replace_tag=False`` a destination tag that already names another image is left
alone (``tag_kept``), as IMMUTABLE repositories require. ``known_copies`` maps source digests to the
filtered index an earlier copy made of them, so a no-op resync of a filtered image needs HEADs only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from ecr_operator.registry import mediatypes
from ecr_operator.registry.client import ManifestHead, RegistryClient
from ecr_operator.registry.digests import StreamVerifier
from ecr_operator.registry.errors import (
    AuthError,
    DigestMismatch,
    InvalidReference,
    LimitExceeded,
    MalformedResponse,
    NoMatchingPlatform,
    NotFound,
    RegistryError,
)
from ecr_operator.registry.limits import Limits
from ecr_operator.registry.manifest import Descriptor, Manifest, parse_manifest
from ecr_operator.registry.platforms import Platform, PlatformFilter
from ecr_operator.registry.reference import Reference, fallback_tag
from ecr_operator.registry.results import (
    BlobDone,
    BlobProgress,
    BlobStarted,
    ImageCopyResult,
    ManifestPushed,
    ProgressCallback,
    ProgressEvent,
    ReferrerCopy,
)
from ecr_operator.registry.transport import CHUNK_SIZE, HttpResponse, retrying

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4
# Signatures of attestations of images is three levels; deeper chains are almost certainly cycles.
MAX_REFERRER_DEPTH = 8
# Manifest bytes one copy may hold at once (its plan keeps every manifest until it is pushed): real
# images need kilobytes; a hostile index of 1,000 children of 4 MiB each would need 4 GiB.
MAX_PLAN_MANIFEST_BYTES = 64 * 1024 * 1024
_UNKNOWN_PLATFORM = Platform(os="unknown", architecture="unknown")


# --- platform selection (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class ChildSelection:
    """Which children of an index to copy, which the filter drops, and the platforms involved."""

    selected: tuple[Descriptor, ...]
    dropped: tuple[Descriptor, ...]
    platforms_copied: tuple[str, ...]
    platforms_missing: tuple[str, ...]


def is_attestation(child: Descriptor) -> bool:
    return child.annotations.get(mediatypes.DOCKER_REFERENCE_TYPE) == mediatypes.DOCKER_ATTESTATION_MANIFEST


def _image_platform(child: Descriptor) -> Platform | None:
    """The platform an index entry runs on; None for artifacts, nested indexes and attestations."""
    if is_attestation(child) or child.platform is None or child.platform == _UNKNOWN_PLATFORM:
        return None
    return child.platform


def distinct_children(
    index: Manifest, limit: int, *, limit_name: str = "max_index_children"
) -> tuple[Descriptor, ...]:
    """The children of ``index``, each digest once (the first entry naming it), at most ``limit``.

    An index may list one digest many times (F8: 2,000 times); each is fetched, checked and pushed once.
    The index itself is still pushed byte-exact. Entries of one digest must agree on its size.
    """
    by_digest: dict[str, Descriptor] = {}
    for child in index.children:
        first = by_digest.setdefault(child.digest, child)
        if first.size != child.size:
            raise MalformedResponse(
                f"index {index.digest} lists {child.digest} with sizes {first.size} and {child.size}"
            )
        if len(by_digest) > limit:
            raise LimitExceeded(
                f"index {index.digest} lists more than {limit} distinct manifests (limit {limit_name})",
                limit=limit_name,
                bound=limit,
            )
    return tuple(by_digest.values())


def select_children(children: Iterable[Descriptor], platforms: PlatformFilter | None) -> ChildSelection:
    entries = tuple(children)
    images = [(child, platform) for child in entries if (platform := _image_platform(child)) is not None]
    selected: tuple[Descriptor, ...] = entries
    dropped: tuple[Descriptor, ...] = ()
    missing: tuple[str, ...] = ()
    if platforms is not None:
        chosen = {child.digest for child, platform in images if platforms.selects(platform)}
        chosen |= {
            child.digest for child in entries if _image_platform(child) is None and not is_attestation(child)
        }
        chosen |= {
            child.digest
            for child in entries
            if is_attestation(child) and child.annotations.get(mediatypes.DOCKER_REFERENCE_DIGEST) in chosen
        }
        selected = tuple(child for child in entries if child.digest in chosen)
        dropped = tuple(child for child in entries if child.digest not in chosen)
        missing = tuple(str(platform) for platform in platforms.missing(platform for _, platform in images))
    selected_digests = {child.digest for child in selected}
    copied = tuple(
        dict.fromkeys(str(platform) for child, platform in images if child.digest in selected_digests)
    )
    return ChildSelection(
        selected=selected, dropped=dropped, platforms_copied=copied, platforms_missing=missing
    )


# --- the streaming verifier ---------------------------------------------------------------------


class VerifiedStream:
    """Yields a blob's chunks while hashing them, holding back the last chunk until digest and size
    are verified. A wrong blob therefore never reaches the destination whole: the PUT (which announced
    Content-Length) is cut short and cannot complete. ``failure`` keeps the reason, because the HTTP
    library reports a body-producer failure as a generic connection error."""

    def __init__(
        self,
        source: HttpResponse,
        digest: str,
        size: int,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self._source = source
        self._verifier = StreamVerifier(digest, size)
        self._on_progress = on_progress
        self.failure: Exception | None = None
        self.sent = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        held: bytes | None = None
        try:
            async for chunk in self._source.iter_chunks(CHUNK_SIZE):
                if not chunk:
                    continue
                self._verifier.update(chunk)
                if held is not None:
                    yield self._sending(held)
                held = chunk
            self._verifier.verify()
        except Exception as exc:
            self.failure = exc
            raise
        if held is not None:
            yield self._sending(held)

    def _sending(self, chunk: bytes) -> bytes:
        self.sent += len(chunk)
        if self._on_progress is not None:
            self._on_progress(self.sent)
        return chunk


# --- the copy -----------------------------------------------------------------------------------


@dataclass
class _Counters:
    bytes_copied: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_pushed: int = 0


@dataclass
class _Plan:
    """Manifests to push (children before parents) and the blobs they need."""

    manifests: list[tuple[Manifest, str]] = field(default_factory=list)
    blobs: dict[str, Descriptor] = field(default_factory=dict)
    subjects: list[str] = field(default_factory=list)
    # Every manifest and blob of the image (also those already in the destination), by digest: its size.
    sizes: dict[str, int] = field(default_factory=dict)

    def add_manifest(self, manifest: Manifest) -> None:
        self.sizes[manifest.digest] = len(manifest.raw)
        self.sizes.update((blob.digest, blob.size) for blob in manifest.blobs)


async def copy_image(
    source: Reference,
    destination: Reference,
    *,
    source_client: RegistryClient,
    destination_client: RegistryClient | None = None,
    platforms: PlatformFilter | None = None,
    referrers: bool = False,
    replace_tag: bool = True,
    known_copies: Mapping[str, str] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: ProgressCallback | None = None,
    limits: Limits | None = None,
) -> ImageCopyResult:
    """Copy ``source`` to ``destination`` so that the destination serves the same digest.

    ``source`` may name a tag or a digest (the digest wins). The destination tag is ``destination.tag``,
    else the source tag; with neither, the image is pushed by digest only. A ``destination.digest``, if
    given, must equal the source digest. Pass different clients when source and destination need
    different credentials; blob mounting is only attempted within one client, so a mount can never
    reach content those credentials could not read anyway. ``replace_tag`` and ``known_copies``: see
    the module docstring. ``limits`` (default: the source client's) bounds index children, nesting,
    referrers and blobs; exceeding one raises LimitExceeded before anything of that image is pushed.
    """
    copier = _ImageCopier(
        source_client=source_client,
        destination_client=destination_client or source_client,
        source=source,
        destination=destination,
        platforms=platforms,
        replace_tag=replace_tag,
        known_copies=known_copies or {},
        concurrency=concurrency,
        progress=progress,
        limits=limits or source_client.limits,
    )
    return await copier.run(copy_referrers=referrers)


class _ImageCopier:
    def __init__(
        self,
        *,
        source_client: RegistryClient,
        destination_client: RegistryClient,
        source: Reference,
        destination: Reference,
        platforms: PlatformFilter | None,
        replace_tag: bool,
        known_copies: Mapping[str, str],
        concurrency: int,
        progress: ProgressCallback | None,
        limits: Limits,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.src = source_client
        self.dst = destination_client
        self.source = source
        self.destination = destination
        self.platforms = platforms
        self.replace_tag = replace_tag
        self.known_copies = known_copies
        self.progress = progress
        self.can_mount = source_client is destination_client and source.registry == destination.registry
        self.blob_slots = asyncio.Semaphore(concurrency)
        self.request_slots = asyncio.Semaphore(concurrency)
        self.counters = _Counters()
        self.blobs_present: set[str] = set()
        self.manifests_present: set[str] = set()
        self.referrers_seen: dict[str, ReferrerCopy] = {}
        self.limits = limits
        self.manifest_bytes = 0
        # Learned from the OCI-Subject header of a push: the destination lists referrers by itself.
        self.destination_lists_referrers = False

    def emit(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    async def run(self, *, copy_referrers: bool) -> ImageCopyResult:
        destination_tag = self._destination_tag()
        head, tagged = await self._heads(destination_tag)
        if head is None:
            raise NotFound(f"{self.source} not found")
        manifest, source_digest = await self._source_digest(head)
        destination_target = destination_tag or source_digest
        existing = (
            tagged if destination_tag else await self.dst.head_manifest(self.destination, source_digest)
        )
        existing_digest = existing.digest if existing is not None else None
        settled = await self._settled(
            source_digest, existing_digest, head.media_type, destination_target, copy_referrers=copy_referrers
        )
        if settled is not None:
            return settled
        if manifest is None:
            manifest = await self._get(self.src, self.source, source_digest)
        return await self._copy(
            manifest, source_digest, existing_digest, destination_target, copy_referrers=copy_referrers
        )

    async def _source_digest(self, head: ManifestHead) -> tuple[Manifest | None, str]:
        """The source image's digest, checked against the digests both references pin; with the manifest
        when learning the digest took a GET."""
        manifest: Manifest | None = None
        source_digest = head.digest
        if source_digest is None:
            # A registry that does not say the digest on HEAD leaves no choice but a GET.
            manifest = await self._get(self.src, self.source, self.source.target)
            source_digest = manifest.digest
        if self.source.digest and source_digest != self.source.digest:
            raise DigestMismatch(f"{self.source}: registry answered {source_digest}")
        if self.destination.digest and self.destination.digest != source_digest:
            raise InvalidReference(f"destination {self.destination} pins a digest other than {source_digest}")
        return manifest, source_digest

    async def _settled(
        self,
        source_digest: str,
        existing_digest: str | None,
        media_type: str | None,
        destination_target: str,
        *,
        copy_referrers: bool,
    ) -> ImageCopyResult | None:
        """The result when the destination needs no copy: it serves the image (or the filtered copy made
        of it before), or a tag that is not to be replaced; None when the image is to be copied."""
        if existing_digest is None:
            return None
        if existing_digest in (source_digest, self.known_copies.get(source_digest)):
            filtered = existing_digest != source_digest
            found = await self._copy_referrers([source_digest]) if copy_referrers and not filtered else ()
            return self._result(source_digest, existing_digest, media_type, up_to_date=True, referrers=found)
        if not self.replace_tag and destination_target != source_digest:
            return self._result(
                source_digest, existing_digest, media_type, up_to_date=False, referrers=(), tag_kept=True
            )
        return None

    async def _copy(
        self,
        manifest: Manifest,
        source_digest: str,
        existing_digest: str | None,
        destination_target: str,
        *,
        copy_referrers: bool,
    ) -> ImageCopyResult:
        """Plan the image, push what the destination lacks, then copy its referrers."""
        plan = _Plan()
        pushed, selection = await self._plan_image(manifest, plan)
        filtered = pushed.digest != manifest.digest
        if existing_digest == pushed.digest:
            # An earlier copy made this very filtered index; its children are there (it was accepted).
            return self._result(
                source_digest, pushed.digest, pushed.media_type, up_to_date=True, referrers=()
            )
        plan.manifests.append((pushed, destination_target))
        await self._execute(plan)
        subjects = plan.subjects if filtered else [manifest.digest, *plan.subjects]
        found = await self._copy_referrers(subjects) if copy_referrers else ()
        result = self._result(
            source_digest,
            pushed.digest,
            pushed.media_type,
            up_to_date=False,
            referrers=found,
            image_bytes=sum(plan.sizes.values()),
            platforms_copied=selection.platforms_copied if selection else (),
            platforms_missing=selection.platforms_missing if selection else (),
        )
        _log_copied(result)
        return result

    async def _heads(self, destination_tag: str | None) -> tuple[ManifestHead | None, ManifestHead | None]:
        """HEAD the source, and the destination tag if there is one, at once: a no-op resync then
        costs one round trip per image instead of two."""
        if destination_tag is None:
            return await self.src.head_manifest(self.source, self.source.target), None
        try:
            async with asyncio.TaskGroup() as group:
                source = group.create_task(self.src.head_manifest(self.source, self.source.target))
                destination = group.create_task(self.dst.head_manifest(self.destination, destination_tag))
        except BaseExceptionGroup as failures:
            raise _first_failure(failures) from None
        return source.result(), destination.result()

    def _destination_tag(self) -> str | None:
        if self.destination.tag is not None:
            return self.destination.tag
        if self.destination.digest is None:
            return self.source.tag
        return None

    def _result(
        self,
        source_digest: str,
        destination_digest: str,
        media_type: str | None,
        *,
        up_to_date: bool,
        referrers: Iterable[ReferrerCopy],
        tag_kept: bool = False,
        image_bytes: int = 0,
        platforms_copied: tuple[str, ...] = (),
        platforms_missing: tuple[str, ...] = (),
    ) -> ImageCopyResult:
        tag = self._destination_tag()
        destination = self.destination.with_tag(tag) if tag else self.destination
        return ImageCopyResult(
            source=self.source.with_digest(source_digest) if self.source.digest is None else self.source,
            destination=destination.with_digest(destination_digest),
            source_digest=source_digest,
            destination_digest=destination_digest,
            media_type=media_type,
            up_to_date=up_to_date,
            filtered=destination_digest != source_digest and not tag_kept,
            tag_kept=tag_kept,
            image_bytes=image_bytes,
            bytes_copied=self.counters.bytes_copied,
            blobs_copied=self.counters.blobs_copied,
            blobs_skipped=self.counters.blobs_skipped,
            blobs_mounted=self.counters.blobs_mounted,
            manifests_pushed=self.counters.manifests_pushed,
            platforms_copied=platforms_copied,
            platforms_missing=platforms_missing,
            referrers=tuple(referrers),
        )

    # --- planning -------------------------------------------------------------------------------

    async def _plan_image(self, manifest: Manifest, plan: _Plan) -> tuple[Manifest, ChildSelection | None]:
        """Collect what the image needs into ``plan``; return the manifest to push for it (the source's
        own, or a filtered index) and, for an index, which children the platform filter chose."""
        plan.add_manifest(manifest)
        if not manifest.is_index:
            self._add_blobs(manifest, plan)
            return manifest, None
        children = distinct_children(manifest, self.limits.max_index_children)
        selection = select_children(children, self.platforms)
        if not selection.selected:
            raise NoMatchingPlatform(
                f"{self.source}: the index {manifest.digest} has none of the requested platforms"
                f" ({', '.join(selection.platforms_missing)})",
                missing_platforms=selection.platforms_missing,
            )
        pushed = manifest
        if selection.dropped and not await self._all_present(selection.dropped):
            pushed = filtered_index(manifest, selection.selected)
            del plan.sizes[manifest.digest]
            plan.add_manifest(pushed)
        plan.subjects.extend(child.digest for child in selection.selected)
        await _all(self._plan_child(child, plan, 1) for child in selection.selected)
        return pushed, selection

    async def _plan(self, manifest: Manifest, plan: _Plan, depth: int = 0) -> None:
        """Collect what ``manifest`` needs into ``plan`` (its own push is the caller's). Nested indexes
        are copied whole: a filter's platforms describe images, not index levels."""
        plan.add_manifest(manifest)
        if not manifest.is_index:
            self._add_blobs(manifest, plan)
            return
        if depth >= self.limits.max_index_depth:
            raise LimitExceeded(
                f"{self.source}: indexes nested more than {self.limits.max_index_depth} deep"
                " (limit max_index_depth)",
                limit="max_index_depth",
                bound=self.limits.max_index_depth,
            )
        children = distinct_children(manifest, self.limits.max_index_children)
        await _all(self._plan_child(child, plan, depth + 1) for child in children)

    def _add_blobs(self, manifest: Manifest, plan: _Plan) -> None:
        plan.blobs.update((blob.digest, blob) for blob in manifest.blobs)
        if len(plan.blobs) > self.limits.max_blobs:
            raise LimitExceeded(
                f"{self.source}: more than {self.limits.max_blobs} distinct blobs (limit max_blobs)",
                limit="max_blobs",
                bound=self.limits.max_blobs,
            )

    async def _get(self, client: RegistryClient, repo: Reference, target: str) -> Manifest:
        """GET a manifest, counting its bytes against MAX_PLAN_MANIFEST_BYTES for this copy."""
        manifest = await client.get_manifest(repo, target)
        self.manifest_bytes += len(manifest.raw)
        if self.manifest_bytes > MAX_PLAN_MANIFEST_BYTES:
            raise LimitExceeded(
                f"{self.source}: its manifests exceed {MAX_PLAN_MANIFEST_BYTES} bytes in all",
                limit="manifest bytes",
                bound=MAX_PLAN_MANIFEST_BYTES,
            )
        return manifest

    async def _all_present(self, children: Iterable[Descriptor]) -> bool:
        present = await asyncio.gather(*(self._manifest_present(child.digest) for child in children))
        return all(present)

    async def _plan_child(self, child: Descriptor, plan: _Plan, depth: int) -> None:
        if await self._manifest_present(child.digest):
            # Only its size is still needed; the destination tells it (reading there is not a pull).
            async with self.request_slots:
                present = await self._get(self.dst, self.destination, child.digest)
            plan.add_manifest(present)
            return
        async with self.request_slots:
            manifest = await self._get(self.src, self.source, child.digest)
        if len(manifest.raw) != child.size:
            raise DigestMismatch(
                f"manifest {child.digest}: {len(manifest.raw)} bytes, index says {child.size}"
            )
        await self._plan(manifest, plan, depth)
        plan.manifests.append((manifest, manifest.digest))

    async def _manifest_present(self, digest: str) -> bool:
        if digest in self.manifests_present:
            return True
        async with self.request_slots:
            found = await self.dst.head_manifest(self.destination, digest) is not None
        if found:
            self.manifests_present.add(digest)
        return found

    # --- execution ------------------------------------------------------------------------------

    async def _execute(self, plan: _Plan) -> None:
        await _all(
            self._copy_blob(blob) for blob in plan.blobs.values() if blob.digest not in self.blobs_present
        )
        for manifest, target in plan.manifests:
            await self._push(manifest, target)

    async def _push(self, manifest: Manifest, target: str) -> None:
        pushed = await self.dst.put_manifest(self.destination, target, manifest)
        self.destination_lists_referrers |= pushed.subject is not None
        self.manifests_present.add(pushed.digest)
        self.counters.manifests_pushed += 1
        self.emit(ManifestPushed(digest=pushed.digest, media_type=manifest.media_type, target=target))

    async def _copy_blob(self, blob: Descriptor) -> None:
        async with self.blob_slots:
            if await self.dst.blob_exists(self.destination, blob.digest, for_push=True):
                self.counters.blobs_skipped += 1
                self.emit(BlobDone(digest=blob.digest, size=blob.size, outcome="skipped"))
                self.blobs_present.add(blob.digest)
                return
            mounted, offered_upload = await self._mount(blob)
            if mounted:
                self.counters.blobs_mounted += 1
                self.emit(BlobDone(digest=blob.digest, size=blob.size, outcome="mounted"))
                self.blobs_present.add(blob.digest)
                return
            uploads = [offered_upload] if offered_upload is not None else []
            await retrying(
                lambda: self._transfer(blob, uploads.pop() if uploads else None),
                self.dst.retry_policy,
                what=f"copy blob {blob.digest}",
                sleep=self.dst.sleep,
            )
            self.counters.blobs_copied += 1
            self.counters.bytes_copied += blob.size
            self.emit(BlobDone(digest=blob.digest, size=blob.size, outcome="copied"))
            self.blobs_present.add(blob.digest)

    async def _mount(self, blob: Descriptor) -> tuple[bool, URL | None]:
        """Try a cross-repository mount: (True, None) if mounted, else maybe an upload the registry
        opened instead (ECR without the mount opt-in answers that way), for the copy to use."""
        if not self.can_mount or self.source.repository == self.destination.repository:
            return False, None
        try:
            upload = await self.dst.mount_blob(self.destination, blob.digest, self.source)
        except AuthError:
            return False, None  # not allowed to read the other repository this way: copy the bytes
        return upload is None, upload

    async def _transfer(self, blob: Descriptor, upload: URL | None) -> None:
        """One attempt at streaming a blob from source to destination; retried whole by the caller."""
        self.emit(BlobStarted(digest=blob.digest, size=blob.size))
        response = await self.src.open_blob(self.source, blob.digest)
        try:
            location = upload or await self.dst.start_upload(self.destination)

            def on_progress(sent: int) -> None:
                self.emit(BlobProgress(digest=blob.digest, transferred=sent, size=blob.size))

            stream = VerifiedStream(response, blob.digest, blob.size, on_progress)
            try:
                await self.dst.upload_blob(
                    self.destination, location, blob.digest, blob.size, stream.chunks()
                )
            except RegistryError as exc:
                await self.dst.cancel_upload(self.destination, location)
                if stream.failure is not None and stream.failure is not exc:
                    raise stream.failure from exc
                raise
        finally:
            response.close()

    # --- referrers ------------------------------------------------------------------------------

    async def _copy_referrers(self, subjects: list[str], depth: int = 0) -> tuple[ReferrerCopy, ...]:
        if depth >= MAX_REFERRER_DEPTH:
            return ()
        for subject in dict.fromkeys(subjects):
            listed, source_index = await self._source_referrers(subject)
            fresh = [entry for entry in listed if entry.digest not in self.referrers_seen]
            for entry in fresh:
                await self._copy_referrer(subject, entry)
            if listed:
                await self._publish_referrers(subject, listed, source_index)
            await self._copy_referrers([entry.digest for entry in fresh], depth + 1)
        return tuple(self.referrers_seen.values())

    async def _source_referrers(self, subject: str) -> tuple[tuple[Descriptor, ...], Manifest | None]:
        listed = await self.src.list_referrers(self.source, subject)
        if listed is not None:
            return listed, None
        tag = fallback_tag(subject)
        head = await self.src.head_manifest(self.source, tag)
        if head is None:
            return (), None
        copied = await self.dst.head_manifest(self.destination, tag) if head.digest else None
        if copied is not None and copied.digest == head.digest:
            # The destination has this very listing: read it there, where a GET is not an upstream pull.
            index = await self._get(self.dst, self.destination, tag)
        else:
            index = await self._get(self.src, self.source, head.digest or tag)
        return distinct_children(index, self.limits.max_referrers, limit_name="max_referrers"), index

    async def _copy_referrer(self, subject: str, entry: Descriptor) -> None:
        if len(self.referrers_seen) >= self.limits.max_referrers:
            raise LimitExceeded(
                f"{self.source}: more than {self.limits.max_referrers} referrers in all"
                " (limit max_referrers)",
                limit="max_referrers",
                bound=self.limits.max_referrers,
            )
        self.referrers_seen[entry.digest] = ReferrerCopy(
            subject=subject,
            digest=entry.digest,
            artifact_type=entry.artifact_type,
            media_type=entry.media_type,
        )
        if await self._manifest_present(entry.digest):
            return
        manifest = await self._get(self.src, self.source, entry.digest)
        plan = _Plan()
        await self._plan(manifest, plan)
        plan.manifests.append((manifest, manifest.digest))
        await self._execute(plan)

    async def _publish_referrers(
        self, subject: str, listed: tuple[Descriptor, ...], source_index: Manifest | None
    ) -> None:
        """Make the destination list the referrers: registries with the referrers API index pushed
        manifests themselves; for the others, maintain the fallback tag index (OCI 1.1 tag schema)."""
        if self.destination_lists_referrers:
            return
        if await self.dst.list_referrers(self.destination, subject) is not None:
            self.destination_lists_referrers = True
            return
        tag = fallback_tag(subject)
        head = await self.dst.head_manifest(self.destination, tag)
        if head is None:
            index = source_index or _referrers_index(listed)
        else:
            if source_index is not None and head.digest == source_index.digest:
                return
            current = await self._get(self.dst, self.destination, tag)
            known = {child.digest for child in current.children}
            missing = [entry for entry in listed if entry.digest not in known]
            if not missing:
                return
            index = _referrers_index([*current.children, *missing])
        await self._push(index, tag)


def _log_copied(result: ImageCopyResult) -> None:
    log.info(
        "image copied",
        extra={
            "source": str(result.source),
            "destination": str(result.destination),
            "filtered": result.filtered,
            "bytes_copied": result.bytes_copied,
            "blobs_copied": result.blobs_copied,
            "blobs_skipped": result.blobs_skipped,
            "blobs_mounted": result.blobs_mounted,
            "manifests_pushed": result.manifests_pushed,
        },
    )


async def _all(work: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run concurrently; on the first failure cancel the rest and raise that failure itself (callers
    handle typed errors, not exception groups)."""
    try:
        async with asyncio.TaskGroup() as group:
            for item in work:
                group.create_task(item)
    except BaseExceptionGroup as failures:
        raise _first_failure(failures) from None


def _first_failure(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    first = failures.exceptions[0]
    return _first_failure(first) if isinstance(first, BaseExceptionGroup) else first


def filtered_index(index: Manifest, keep: Iterable[Descriptor]) -> Manifest:
    """``index`` with only the ``manifests`` entries of ``keep``, in their order and exactly as written
    there; every other field unchanged. Compact JSON with the source's key order: the same index and
    selection always serialise to the same bytes, hence the same digest."""
    kept = {child.digest for child in keep}
    document = json.loads(index.raw)
    document["manifests"] = [entry for entry in document["manifests"] if entry["digest"] in kept]
    try:
        raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        # A lone surrogate escaped in the source ("\ud800") has no UTF-8 form to keep digest-stable.
        raise MalformedResponse(f"index {index.digest} holds text that is not valid Unicode") from exc
    return parse_manifest(raw, content_type=index.media_type)


def _referrers_index(entries: Iterable[Descriptor]) -> Manifest:
    """A fallback-tag index we build (it has no source counterpart whose digest could be kept)."""
    document = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_INDEX,
        "manifests": [entry.to_json() for entry in entries],
    }
    raw = json.dumps(document, separators=(",", ":")).encode()
    return parse_manifest(raw, content_type=mediatypes.OCI_INDEX)
