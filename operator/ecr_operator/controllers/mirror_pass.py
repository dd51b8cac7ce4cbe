"""One sync pass of one ImageMirror, from the spec as it is now to status, Events and metrics.

Each pass: take a fair share of the sync slots (per namespace and per source registry), resolve the
destination (creating the child EcrRepository for ``create: true``; its URI recomputed from spec, settings
and AWS, never read from status), read the source credentials, list upstream tags if a filter needs them,
copy each image (one failing image never stops the others), then status, Events and metrics. Every pass
runs under a deadline: a failure of any kind is a condition, an Event, a metric and a retry with a backoff,
and the images copied before it are recorded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ecr_operator.api.common import API_VERSION, format_duration, validation_problems
from ecr_operator.api.mirror import IMAGE_MIRROR, ImageMirrorSpec, ImageMirrorStatus, MirroredImage
from ecr_operator.api.repository import ECR_REPOSITORY
from ecr_operator.aws.calls import AwsCallFailed
from ecr_operator.aws.ecr import EcrRepositories, RegistryRef
from ecr_operator.aws.session import AwsClients
from ecr_operator.aws.tokens import EcrTokenCache
from ecr_operator.conditions import READY, EventNote, find_condition
from ecr_operator.config import Settings
from ecr_operator.controllers.mirror_registries import MirrorRegistries
from ecr_operator.controllers.mirror_slots import FairSlots
from ecr_operator.kube import Kube, KubeApiError, ObjectReference
from ecr_operator.metrics import Metrics, ObjectReadiness
from ecr_operator.reconcile.mirror import (
    Destination,
    DestinationTarget,
    Failure,
    ImageOutcome,
    PassReport,
    Reason,
    applied_mirror_status,
    check_selection,
    child_repository,
    child_spec_outdated,
    classify_failure,
    destination_in_aws,
    destination_target,
    image_options,
    mirror_events,
    mirror_status_patch,
    needs_tag_listing,
    next_sync_delay,
    owned_by,
    platform_filter,
    repository_readiness,
    retry_delay,
    select_tags,
    unexpected_failure,
)
from ecr_operator.registry.auth import (
    Anonymous,
    CredentialsProvider,
    DockerConfigCredentials,
    InvalidDockerConfig,
)
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.copy import copy_image
from ecr_operator.registry.errors import InvalidReference, RegistryError, SourceRefused
from ecr_operator.registry.platforms import PlatformFilter
from ecr_operator.registry.reference import Reference, parse_reference
from ecr_operator.registry.results import ImageCopyResult
from ecr_operator.tag_patterns import InvalidTagPattern

Logger = logging.Logger | logging.LoggerAdapter[Any]

KIND = IMAGE_MIRROR.kind
# The field manager owning all of ImageMirror status (server-side apply).
STATUS_MANAGER = "mirror"
# What an ImageMirror's interval defaults to, for a spec too broken to say.
DEFAULT_INTERVAL = timedelta(hours=6)
# A status write the apiserver refused is tried again this soon.
STATUS_RETRY = 5.0
DOCKER_CONFIG_KEYS = (".dockerconfigjson", ".dockercfg")
# A condition names at most this many images a pass cut short did not reach.
MAX_NOT_DONE = 10


@dataclass(frozen=True)
class MirrorObject:
    """The ImageMirror as the pass reads it: identity, generation, spec and status as watched."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @property
    def reference(self) -> ObjectReference:
        return ObjectReference(API_VERSION, KIND, self.name, self.namespace, self.uid)


@dataclass(eq=False)
class MirrorServices:
    """What every pass shares: settings, adapters, the fair slots, and per-mirror bookkeeping."""

    settings: Settings
    metrics: Metrics
    readiness: ObjectReadiness
    aws: AwsClients
    ecr: EcrRepositories
    kube: Kube
    registries: MirrorRegistries
    tokens: EcrTokenCache
    slots: FairSlots
    failures: dict[str, int] = field(default_factory=dict)
    """Consecutive failed passes per mirror (uid): the backoff grows with them."""
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The status last written per mirror (uid): the watched body may lag behind by an event."""

    def count_failure(self, uid: str) -> int:
        failures = self.failures[uid] = self.failures.get(uid, 0) + 1
        return failures


@dataclass(frozen=True)
class SourceCredentials:
    provider: CredentialsProvider
    fingerprint: str
    """Tells credentials apart in the client cache ("" for anonymous access); never the credentials."""


@dataclass(frozen=True)
class PassClients:
    source: RegistryClient
    destination: RegistryClient


class MirrorPass:
    """One sync of one mirror, from the spec as it is now to status, Events and metrics."""

    def __init__(self, services: MirrorServices, mirror: MirrorObject, logger: Logger) -> None:
        self.services = services
        self.mirror = mirror
        self.logger = logger
        self.namespace = mirror.namespace
        self.name = mirror.name
        self.uid = mirror.uid
        self.generation = mirror.generation
        # What this process last wrote wins over the watched body, which may lag behind by an event.
        self.status: dict[str, Any] = services.statuses.get(self.uid) or dict(mirror.status)
        # What the pass got to, so that a pass cut short (deadline, unexpected error) still reports it.
        self._uri: str | None = None
        self._planned: list[tuple[str | None, str | None]] | None = None
        self._outcomes: list[ImageOutcome] = []

    async def run(self) -> float | None:
        """Sync; returns seconds until the next pass (None: until woken, for a suspended mirror)."""
        started = time.monotonic()
        interval = DEFAULT_INTERVAL
        try:
            spec = ImageMirrorSpec.model_validate(dict(self.mirror.spec))
        except ValidationError as error:
            report = PassReport(
                self.generation, problem=Failure(Reason.INVALID_SPEC, validation_problems(error))
            )
        else:
            interval = spec.interval
            if spec.suspend:
                report = PassReport(self.generation, suspended=True)
            else:
                report = await self._guarded_sync(spec)
        return await self._finish(report, interval, time.monotonic() - started)

    # --- the sync --------------------------------------------------------------------------------

    async def _guarded_sync(self, spec: ImageMirrorSpec) -> PassReport:
        """The sync within a fair slot and the pass deadline; whatever goes wrong becomes a report."""
        try:
            source = parse_reference(spec.source.image)
        except InvalidReference as error:
            return PassReport(self.generation, problem=classify_failure(error))
        async with self.services.slots.slot(self.namespace, source.registry):
            limit = self.services.settings.mirror_pass_timeout
            timer = asyncio.timeout(limit.total_seconds())
            try:
                async with timer:
                    return await self._sync(spec, source)
            except Exception as error:
                if timer.expired():
                    return self._cut_short(_timed_out(limit))
                self.logger.exception("Mirror pass failed unexpectedly")
                return self._cut_short(unexpected_failure(error))

    def _cut_short(self, failure: Failure) -> PassReport:
        """The report of a pass that stopped early: images copied so far are recorded, the ones not reached
        keep their previous status entries and are named in the condition."""
        if self._planned is None:
            return self._stopped(failure)
        done = {(outcome.tag, outcome.digest) for outcome in self._outcomes}
        left = [(tag, digest) for tag, digest in self._planned if (tag, digest) not in done]
        pending = tuple(ImageOutcome(tag=tag, digest=digest, failure=failure) for tag, digest in left)
        copied = sum(1 for outcome in self._outcomes if outcome.result is not None)
        names = [tag if tag is not None else str(digest) for tag, digest in left]
        shown = ", ".join(names[:MAX_NOT_DONE])
        if len(names) > MAX_NOT_DONE:
            shown += f" and {len(names) - MAX_NOT_DONE} more"
        message = f"{failure.message} {copied} of {len(self._planned)} images done" + (
            f"; not done: {shown}." if shown else "."
        )
        problem = Failure(failure.reason, message, failure.retry, failure.retry_after)
        return PassReport(self.generation, self._uri, (*self._outcomes, *pending), problem=problem)

    def _stopped(self, problem: Failure) -> PassReport:
        """The report of a pass that stopped before copying (the destination, if known, is recorded)."""
        return PassReport(self.generation, self._uri, problem=problem)

    async def _sync(self, spec: ImageMirrorSpec, source: Reference) -> PassReport:
        problem = check_selection(spec.tags) or await self._refused_source(source)
        if problem is not None:
            return self._stopped(problem)
        destination = await self._destination(spec)
        if isinstance(destination, Failure):
            return self._stopped(destination)
        self._uri = destination.uri
        clients = await self._clients(spec, source, destination)
        if isinstance(clients, Failure):
            return self._stopped(clients)
        selected = await self._selected_tags(spec, source, clients.source)
        if isinstance(selected, Failure):
            return self._stopped(selected)
        self._planned = [(tag, None) for tag in selected] + [(None, digest) for digest in spec.digests or ()]
        await self._copy_planned(spec, source, clients, destination)
        self._forget_refused_token(destination)
        return PassReport(self.generation, destination.uri, tuple(self._outcomes))

    async def _refused_source(self, source: Reference) -> Failure | None:
        try:
            await self.services.registries.check_source(source.registry)
        except SourceRefused as error:
            return classify_failure(error)
        return None

    async def _clients(
        self, spec: ImageMirrorSpec, source: Reference, destination: Destination
    ) -> PassClients | Failure:
        """The registry clients of this pass, kept across passes with the authentication they learned."""
        credentials = await self._source_credentials(spec)
        if isinstance(credentials, Failure):
            return credentials
        registries = self.services.registries
        return PassClients(
            source=registries.source_client(
                self.namespace, source.registry, credentials.provider, credentials.fingerprint
            ),
            destination=registries.destination_client(
                destination.repository.registry, destination.identity, self.services.tokens
            ),
        )

    async def _selected_tags(
        self, spec: ImageMirrorSpec, source: Reference, client: RegistryClient
    ) -> tuple[str, ...] | Failure:
        upstream: list[str] | None = None
        if needs_tag_listing(spec.tags):
            try:
                upstream = await client.list_tags(source)
            except RegistryError as error:
                return classify_failure(error)
        try:
            # Linear-time patterns over a bounded listing; in a thread all the same, so that even a huge
            # listing never stalls the event loop (health checks, other tenants' passes).
            return await asyncio.to_thread(select_tags, spec.tags, upstream)
        except InvalidTagPattern as error:
            return Failure(Reason.INVALID_SPEC, f"tags.include/exclude: {error}")

    async def _copy_planned(
        self, spec: ImageMirrorSpec, source: Reference, clients: PassClients, destination: Destination
    ) -> None:
        assert self._planned is not None
        previous = _previous_status(self.status)
        previous_tags = {entry.tag: entry for entry in previous.tags}
        previous_digests = {entry.digest: entry for entry in previous.digests}
        copier = ImageCopier(self, spec, clients, destination, platform_filter(spec))
        for tag, digest in self._planned:
            if tag is not None:
                outcome = await copier.copy(source.with_tag(tag), tag=tag, previous=previous_tags.get(tag))
            else:
                assert digest is not None
                outcome = await copier.copy(
                    source.with_digest(digest), digest=digest, previous=previous_digests.get(digest)
                )
            self._outcomes.append(outcome)

    def _forget_refused_token(self, destination: Destination) -> None:
        """It may be ECR's token that was refused: the next pass fetches a new one, with new clients."""
        if any(
            o.failure is not None and o.failure.reason == Reason.AUTHENTICATION_FAILED for o in self._outcomes
        ):
            self.services.tokens.forget(destination.identity)
            self.services.registries.forget_identity(destination.identity)

    # --- the destination -------------------------------------------------------------------------

    async def _destination(self, spec: ImageMirrorSpec) -> Destination | Failure:
        repository = await self._destination_repository(spec)
        if isinstance(repository, Failure):
            return repository
        waiting = repository_readiness(repository)
        if waiting is not None:
            return waiting
        target = destination_target(repository, namespace=self.namespace, settings=self.services.settings)
        if isinstance(target, Failure):
            return target
        return await self._destination_in_aws(target)

    async def _destination_repository(self, spec: ImageMirrorSpec) -> Mapping[str, Any] | Failure:
        """The EcrRepository the mirror pushes into: the one it names, or the child it owns."""
        try:
            if spec.destination.repository_ref is not None:
                return await self._referenced_repository(spec.destination.repository_ref.name)
            return await self._child_repository(spec)
        except KubeApiError as error:
            return Failure(Reason.KUBERNETES_API_ERROR, str(error), "backoff")

    async def _referenced_repository(self, name: str) -> Mapping[str, Any] | Failure:
        found = await self.services.kube.read_object(ECR_REPOSITORY, self.namespace, name)
        if found is None:
            return Failure(
                Reason.DESTINATION_NOT_FOUND,
                f"EcrRepository {name} not found in namespace {self.namespace}.",
                "wait",
            )
        return found

    async def _destination_in_aws(self, target: DestinationTarget) -> Destination | Failure:
        """The destination as AWS describes it: it must exist and carry the EcrRepository's owner tag."""
        try:
            # Building a boto3 client costs ~0.2 s of CPU (more on a busy node); do it off the event loop,
            # so the describe below, which runs on the loop, finds it cached.
            await asyncio.to_thread(self.services.aws.client, "ecr", target.identity)
            observed = await self.services.ecr.observe_ownership(
                RegistryRef(target.identity, target.account_id), target.repository_name
            )
        except AwsCallFailed as error:
            transient = error.throttled or error.http_status == 0 or error.http_status >= 500
            return Failure(
                Reason.AWS_API_ERROR,
                f"Describing ECR repository {target.repository_name} failed: {error}",
                "backoff" if transient else "interval",
            )
        if observed is None:
            return destination_in_aws(target, registry_id=None, tags=None)
        description = observed.description
        return destination_in_aws(
            target,
            registry_id=description.registry_id,
            tags=observed.tags,
            mutability=description.image_tag_mutability,
            exclusion_filters=description.exclusion_filters,
        )

    # --- the child EcrRepository (destination.create) --------------------------------------------

    async def _child_repository(self, spec: ImageMirrorSpec) -> Mapping[str, Any] | Failure:
        """The EcrRepository this mirror owns, created (through the Kubernetes API) or updated as needed."""
        existing = await self.services.kube.read_object(ECR_REPOSITORY, self.namespace, self.name)
        if existing is None:
            try:
                return await self._create_child(spec)
            except KubeApiError as error:
                if not error.conflict:
                    raise
                # Created by another writer between the read and the create (and maybe gone again).
                existing = await self.services.kube.read_object(ECR_REPOSITORY, self.namespace, self.name)
                if existing is None:
                    raise
        if not owned_by(existing, self.uid):
            return Failure(
                Reason.DESTINATION_CONFLICT,
                f"EcrRepository {self.name} already exists and is not owned by this ImageMirror; delete it,"
                " rename the mirror, or point destination.repositoryRef at it.",
            )
        return await self._updated_child(spec, existing)

    async def _create_child(self, spec: ImageMirrorSpec) -> dict[str, Any]:
        body = child_repository(spec, namespace=self.namespace, name=self.name, uid=self.uid)
        created = await self.services.kube.create_object(ECR_REPOSITORY, self.namespace, body)
        message = f"Created EcrRepository {self.name} for ECR repository {spec.destination.repository_name}."
        self.logger.info(message)
        await self._post(EventNote("Normal", "DestinationCreated", message))
        return created

    async def _updated_child(
        self, spec: ImageMirrorSpec, existing: dict[str, Any]
    ) -> Mapping[str, Any] | Failure:
        desired = spec.destination.child_repository_spec()
        if not child_spec_outdated(existing.get("spec"), desired):
            return existing
        try:
            updated = await self.services.kube.replace_spec(
                ECR_REPOSITORY, self.namespace, self.name, desired.to_wire()
            )
        except KubeApiError as error:
            if error.status in (400, 422):  # the apiserver's validation, e.g. an immutable field
                return Failure(Reason.DESTINATION_CONFLICT, f"destination.template: {error}")
            raise
        self.logger.info(f"Updated EcrRepository {self.name} from destination.template.")
        return updated

    # --- source credentials ----------------------------------------------------------------------

    async def _source_credentials(self, spec: ImageMirrorSpec) -> SourceCredentials | Failure:
        reference = spec.source.credentials_secret_ref
        if reference is None:
            return SourceCredentials(Anonymous(), "")
        document = await self._docker_config(reference.name)
        if isinstance(document, Failure):
            return document
        try:
            provider = DockerConfigCredentials.from_json(document)
        except InvalidDockerConfig as error:
            # InvalidDockerConfig messages never quote a credential.
            return Failure(Reason.INVALID_CREDENTIALS, f"Secret {reference.name}: {error}")
        return SourceCredentials(provider, hashlib.sha256(document).hexdigest())

    async def _docker_config(self, secret: str) -> bytes | Failure:
        """The dockerconfigjson document of the mirror's credentials Secret."""
        try:
            found = await self.services.kube.read_secret(self.namespace, secret)
        except KubeApiError as error:
            return Failure(Reason.KUBERNETES_API_ERROR, str(error), "backoff")
        if found is None:
            return Failure(
                Reason.CREDENTIALS_NOT_FOUND,
                f"Secret {secret} (source.credentialsSecretRef) not found in namespace {self.namespace}.",
                "wait",
            )
        key = next((key for key in DOCKER_CONFIG_KEYS if key in found.data), None)
        if key is None:
            return Failure(
                Reason.INVALID_CREDENTIALS,
                f"Secret {secret} has no .dockerconfigjson: it must be of type"
                " kubernetes.io/dockerconfigjson.",
            )
        try:
            return base64.b64decode(found.data[key], validate=True)
        except binascii.Error as error:
            return Failure(Reason.INVALID_CREDENTIALS, f"Secret {secret}: {error}")

    # --- reporting -------------------------------------------------------------------------------

    async def _finish(self, report: PassReport, interval: timedelta, duration: float) -> float | None:
        now = datetime.now(UTC)
        failure = report.worst_failure()
        delay = self._next_delay(report, failure, interval)
        next_sync = now + timedelta(seconds=delay) if delay is not None else None
        patch = mirror_status_patch(self.status, report, now=now, next_sync=next_sync)
        if patch is not None and not await self._write_status(patch):
            # The next pass recomputes the same status from what is stored; Events wait for it too.
            self._observe(report, failure, duration, None)
            return STATUS_RETRY
        for note in mirror_events(report, self.status, patch):
            await self._post(note)
        self._observe(report, failure, duration, patch)
        # Transient failures too are retried by the daemon's own loop (the delay grows with each
        # consecutive failure), never by kopf restarting it: a spec change still wakes it at once.
        return delay

    def _next_delay(self, report: PassReport, failure: Failure | None, interval: timedelta) -> float | None:
        spread = random.uniform(-1.0, 1.0)  # noqa: S311 -- scheduling jitter
        if report.suspended or failure is None:
            self.services.failures.pop(self.uid, None)
            return None if report.suspended else next_sync_delay(interval, spread)
        return retry_delay(self.services.count_failure(self.uid), failure, spread, interval)

    async def _write_status(self, patch: Mapping[str, Any]) -> bool:
        """Apply the whole status this controller owns; False when the apiserver refused it."""
        status = applied_mirror_status(self.status, patch)
        try:
            stored = await self.services.kube.apply_status(
                IMAGE_MIRROR, self.namespace, self.name, STATUS_MANAGER, status
            )
        except KubeApiError as error:
            self.logger.warning(f"Mirror status not written, retrying in {STATUS_RETRY:.0f}s: {error}")
            return False
        self.services.statuses[self.uid] = stored
        return True

    async def _post(self, note: EventNote) -> None:
        try:
            await self.services.kube.post_event(
                self.mirror.reference, note.type, str(note.reason), note.message
            )
        except KubeApiError as error:
            # An Event is a courtesy: status and metrics already tell the same.
            self.logger.warning(f"Event {note.reason} not posted: {error}")

    def _observe(
        self, report: PassReport, failure: Failure | None, duration: float, patch: Mapping[str, Any] | None
    ) -> None:
        metrics = self.services.metrics
        if not report.suspended:
            metrics.mirror_duration.observe(duration)
        if report.problem is not None and report.problem.retry != "wait":
            metrics.mirror_errors.labels(reason=str(report.problem.reason)).inc()
        result = (
            "success" if failure is None else "temporary_error" if failure.transient else "permanent_error"
        )
        metrics.reconciles.labels(kind=KIND, result=result).inc()
        if report.clean:
            metrics.mirror_last_success.labels(namespace=self.namespace, name=self.name).set(time.time())
        conditions = (patch or self.services.statuses.get(self.uid) or self.status).get("conditions") or []
        ready = find_condition(conditions, READY)
        self.services.readiness.set(KIND, self.uid, str(ready.get("status")) if ready else "Unknown")
        self._log(report, failure, duration, changed=patch is not None)

    def _log(self, report: PassReport, failure: Failure | None, duration: float, *, changed: bool) -> None:
        copied = [image for image in report.images or () if image.copied]
        if not copied and not changed:
            return
        log = self.logger.warning if failure is not None else self.logger.info
        log(
            f"Mirror pass: {len(copied)} images copied"
            + (f"; {failure.reason}: {failure.message}" if failure is not None else ""),
            extra={
                "copied": [image.name for image in copied],
                "failed": [image.name for image in report.failures],
                "seconds": round(duration, 3),
            },
        )


@dataclass(frozen=True, eq=False)
class ImageCopier:
    """Copies the images of one pass with the same clients and options, counting what each copy did."""

    sync: MirrorPass
    spec: ImageMirrorSpec
    clients: PassClients
    destination: Destination
    platforms: PlatformFilter | None

    @property
    def metrics(self) -> Metrics:
        return self.sync.services.metrics

    async def copy(
        self,
        source: Reference,
        *,
        tag: str | None = None,
        digest: str | None = None,
        previous: MirroredImage | None,
    ) -> ImageOutcome:
        options = image_options(
            tag,
            previous,
            policy=self.spec.mutable_tags,
            destination=self.destination.settings,
            platforms=self.platforms,
        )
        repository = self.destination.repository
        try:
            result = await copy_image(
                source,
                repository.with_tag(tag) if tag is not None else repository,
                source_client=self.clients.source,
                destination_client=self.clients.destination,
                platforms=self.platforms,
                referrers=self.spec.referrers,
                replace_tag=options.replace_tag,
                known_copies=options.known_copies,
                concurrency=self.sync.services.settings.mirror_blob_concurrency,
            )
        except (RegistryError, InvalidReference) as error:
            return self._failed(tag, digest, classify_failure(error))
        except Exception as error:
            # One image's surprise (an upstream answer no parser expected) never stops the others.
            self.sync.logger.exception(f"Copying {source} failed unexpectedly")
            return self._failed(tag, digest, unexpected_failure(error))
        self._count(result)
        return ImageOutcome(tag=tag, digest=digest, result=result)

    def _failed(self, tag: str | None, digest: str | None, failure: Failure) -> ImageOutcome:
        self.metrics.mirror_errors.labels(reason=str(failure.reason)).inc()
        return ImageOutcome(tag=tag, digest=digest, failure=failure)

    def _count(self, result: ImageCopyResult) -> None:
        metrics = self.metrics
        metrics.mirror_bytes.inc(result.bytes_copied)
        metrics.mirror_blobs.labels(result="copied").inc(result.blobs_copied)
        metrics.mirror_blobs.labels(result="skipped").inc(result.blobs_skipped)
        metrics.mirror_blobs.labels(result="mounted").inc(result.blobs_mounted)
        metrics.mirror_manifests.labels(result="copied").inc(result.manifests_pushed)
        if result.up_to_date or result.tag_kept:
            metrics.mirror_manifests.labels(result="skipped").inc()


def _timed_out(limit: timedelta) -> Failure:
    return Failure(
        Reason.PASS_TIMED_OUT,
        f"The pass did not finish within {format_duration(limit)} (ECR_OPERATOR_MIRROR_PASS_TIMEOUT); the"
        " upstream registry is too slow or does not answer. Retried with a backoff.",
        "backoff",
    )


def _previous_status(status: Mapping[str, Any]) -> ImageMirrorStatus:
    try:
        return ImageMirrorStatus.model_validate(status)
    except ValidationError:
        return ImageMirrorStatus()
