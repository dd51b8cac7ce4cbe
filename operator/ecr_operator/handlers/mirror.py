"""kopf wiring of the ImageMirror controller: a daemon per mirror syncing on its schedule, and an update
handler that makes it sync at once when the spec changes or a sync is requested.

A daemon rather than a timer: each mirror has its own interval (minutes to days, jittered), a spec change
must cut the wait short, and deleting a mirror must stop a copy in flight. The daemon writes the mirror's
status itself, and only when something a user would see changed. Each pass: resolve the destination
(creating the child EcrRepository for ``create: true``), read the source credentials, list upstream tags if
a filter needs them, copy each image (one failing image never stops the others), then status, Events and
metrics. Transient registry failures end the pass with ``kopf.TemporaryError`` (kopf restarts the daemon
after the delay); problems a human must fix are reported and retried at the next regular pass.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from pydantic import ValidationError

from ecr_operator.api.common import GROUP, VERSION
from ecr_operator.api.mirror import IMAGE_MIRROR, ImageMirrorSpec, ImageMirrorStatus, MirroredImage
from ecr_operator.api.repository import EcrRepositorySpec
from ecr_operator.aws.session import AwsIdentity
from ecr_operator.conditions import READY, find_condition
from ecr_operator.kubeapi import KubeApiError
from ecr_operator.reconcile.mirror import (
    DestinationSettings,
    Failure,
    ImageOutcome,
    PassReport,
    Reason,
    check_selection,
    child_repository,
    child_spec_outdated,
    classify_failure,
    destination_settings,
    first_sync_delay,
    image_options,
    mirror_events,
    mirror_status_patch,
    needs_tag_listing,
    next_sync_delay,
    owned_by,
    platform_filter,
    repository_readiness,
    requests_sync,
    retry_delay,
    select_tags,
)
from ecr_operator.registry import (
    Anonymous,
    CredentialsProvider,
    DockerConfigCredentials,
    ImageCopyResult,
    InvalidDockerConfig,
    InvalidReference,
    PlatformFilter,
    Reference,
    RegistryClient,
    RegistryError,
    copy_image,
    parse_reference,
)
from ecr_operator.registry.guard import SourceRefused
from ecr_operator.runtime import Runtime

KIND = IMAGE_MIRROR.kind
PLURAL = IMAGE_MIRROR.plural
# What an ImageMirror's interval defaults to, for a spec too broken to say.
DEFAULT_INTERVAL = timedelta(hours=6)
# A deleted mirror's copy in flight is cancelled after this long (aiohttp closes its connections).
CANCELLATION_TIMEOUT = 10.0
DOCKER_CONFIG_KEYS = (".dockerconfigjson", ".dockercfg")


@kopf.on.update(GROUP, VERSION, PLURAL)
async def sync_on_change(uid: str, diff: kopf.Diff, memo: Runtime, **_: Any) -> None:
    """A changed spec, or a new sync-request annotation, cuts the daemon's wait short."""
    if requests_sync(diff):
        memo.mirroring.request_sync(uid)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=CANCELLATION_TIMEOUT)
async def keep_mirrored(
    body: kopf.Body,
    uid: str,
    namespace: str | None,
    name: str,
    retry: int,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    memo: Runtime,
    **_: Any,
) -> None:
    mirroring = memo.mirroring
    # kopf restarts the daemon after a TemporaryError's delay: that retry is due at once.
    delay: float | None = 0.0
    if not retry:
        now = datetime.now(UTC)
        spread = random.random()  # noqa: S311 -- scheduling jitter
        delay = first_sync_delay(body.get("status"), body.meta.get("generation"), now, spread)
    try:
        while not stopped:
            await mirroring.sleep(uid, delay, stopped)
            if stopped:
                break
            delay = await MirrorPass(memo, body, logger).run()
    finally:
        reason = stopped.reason
        if reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in reason:
            mirroring.forget(uid)
            memo.readiness.forget(KIND, uid)
            with contextlib.suppress(KeyError):
                memo.metrics.mirror_last_success.remove(namespace, name)


@dataclass(frozen=True)
class Destination:
    uri: str
    repository: Reference
    identity: AwsIdentity
    settings: DestinationSettings


class MirrorPass:
    """One sync of one mirror, from the spec as it is now to status, Events and metrics."""

    def __init__(self, runtime: Runtime, body: kopf.Body, logger: kopf.Logger) -> None:
        self.runtime = runtime
        self.mirroring = runtime.mirroring
        self.metrics = runtime.metrics
        self.settings = runtime.settings
        self.body = body
        self.logger = logger
        self.namespace = str(body.meta.namespace)
        self.name = str(body.meta.name)
        self.uid = str(body.meta.uid)
        self.generation: int | None = body.meta.get("generation")
        # What this process last wrote wins over the watched body, which may lag behind by an event.
        self.status: dict[str, Any] = self.mirroring.statuses.get(self.uid) or dict(body.get("status") or {})

    async def run(self) -> float | None:
        """Sync; returns seconds until the next pass (None: until woken, for a suspended mirror)."""
        started = time.monotonic()
        interval = DEFAULT_INTERVAL
        try:
            spec = ImageMirrorSpec.model_validate(dict(self.body.spec))
        except ValidationError as error:
            report = PassReport(
                self.generation, problem=Failure(Reason.INVALID_SPEC, _validation_message(error))
            )
        else:
            interval = spec.interval
            if spec.suspend:
                report = PassReport(self.generation, suspended=True)
            else:
                async with self.mirroring.syncs:
                    report = await self._sync(spec)
        return await self._finish(report, interval, time.monotonic() - started)

    # --- the sync --------------------------------------------------------------------------------

    async def _sync(self, spec: ImageMirrorSpec) -> PassReport:
        problem = check_selection(spec.tags)
        if problem is not None:
            return PassReport(self.generation, problem=problem)
        try:
            source = parse_reference(spec.source.image)
            await self.mirroring.check_source(source.registry)
        except (InvalidReference, SourceRefused) as error:
            return PassReport(self.generation, problem=classify_failure(error))
        destination = await self._destination(spec)
        if isinstance(destination, Failure):
            return PassReport(self.generation, problem=destination)
        credentials = await self._source_credentials(spec)
        if isinstance(credentials, Failure):
            return PassReport(self.generation, destination.uri, problem=credentials)
        source_client = self.mirroring.source_client(credentials)
        destination_client = self.mirroring.destination_client(
            destination.repository.registry, destination.identity
        )
        upstream: list[str] | None = None
        if needs_tag_listing(spec.tags):
            try:
                upstream = await source_client.list_tags(source)
            except RegistryError as error:
                return PassReport(self.generation, destination.uri, problem=classify_failure(error))
        previous = _previous_status(self.status)
        previous_tags = {entry.tag: entry for entry in previous.tags}
        previous_digests = {entry.digest: entry for entry in previous.digests}
        copier = _Copier(self, spec, source_client, destination_client, destination, platform_filter(spec))
        outcomes = [
            await copier.copy(source.with_tag(tag), tag=tag, previous=previous_tags.get(tag))
            for tag in select_tags(spec.tags, upstream)
        ]
        outcomes += [
            await copier.copy(
                source.with_digest(digest), digest=digest, previous=previous_digests.get(digest)
            )
            for digest in spec.digests or ()
        ]
        if any(o.failure is not None and o.failure.reason == Reason.AUTHENTICATION_FAILED for o in outcomes):
            self.mirroring.forget_token(destination.identity)  # it may be ECR's token that was refused
        return PassReport(self.generation, destination.uri, tuple(outcomes))

    async def _destination(self, spec: ImageMirrorSpec) -> Destination | Failure:
        objects = self.mirroring.objects
        try:
            if spec.destination.repository_ref is not None:
                name = spec.destination.repository_ref.name
                found = await objects.repository(self.namespace, name)
                if found is None:
                    return Failure(
                        Reason.DESTINATION_NOT_FOUND,
                        f"EcrRepository {name} not found in namespace {self.namespace}.",
                        "wait",
                    )
                repository: Mapping[str, Any] | Failure = found
            else:
                repository = await self._child_repository(spec)
        except KubeApiError as error:
            return Failure(Reason.KUBERNETES_API_ERROR, str(error), "backoff")
        if isinstance(repository, Failure):
            return repository
        uri, waiting = repository_readiness(repository)
        if waiting is not None or uri is None:
            return waiting or Failure(Reason.DESTINATION_NOT_READY, "No repository URI yet.", "wait")
        try:
            repository_spec = EcrRepositorySpec.model_validate(repository.get("spec") or {})
            reference = parse_reference(uri)
        except (ValidationError, InvalidReference) as error:
            return Failure(
                Reason.DESTINATION_NOT_READY, f"Cannot use EcrRepository at {uri}: {error}", "wait"
            )
        registry = repository_spec.registry
        if registry.role_arn is not None and not self.settings.role_arn_allowed(
            registry.role_arn, self.namespace
        ):
            return Failure(
                Reason.ROLE_NOT_ALLOWED,
                f"The destination's registry.roleArn {registry.role_arn} is not allowed in namespace"
                f" {self.namespace} (the operator's allowed role ARNs).",
            )
        return Destination(
            uri=uri,
            repository=reference,
            identity=AwsIdentity(region=registry.region, role_arn=registry.role_arn),
            settings=destination_settings(
                repository_spec.image_tag_mutability, repository_spec.image_tag_mutability_exclusion_filters
            ),
        )

    async def _child_repository(self, spec: ImageMirrorSpec) -> Mapping[str, Any] | Failure:
        """The EcrRepository this mirror owns, created (through the Kubernetes API) or updated as needed."""
        objects = self.mirroring.objects
        existing = await objects.repository(self.namespace, self.name)
        if existing is None:
            body = child_repository(spec, namespace=self.namespace, name=self.name, uid=self.uid)
            try:
                created = await objects.create_repository(self.namespace, body)
            except KubeApiError as error:
                if not error.conflict:
                    raise
                existing = await objects.repository(self.namespace, self.name)
                if existing is None:
                    raise
            else:
                repository_name = spec.destination.repository_name
                message = f"Created EcrRepository {self.name} for ECR repository {repository_name}."
                self.logger.info(message)
                kopf.info(self.body, reason="DestinationCreated", message=message)
                return created
        if not owned_by(existing, self.uid):
            return Failure(
                Reason.DESTINATION_CONFLICT,
                f"EcrRepository {self.name} already exists and is not owned by this ImageMirror; delete it,"
                " rename the mirror, or point destination.repositoryRef at it.",
            )
        desired = spec.destination.child_repository_spec()
        if child_spec_outdated(existing.get("spec"), desired):
            try:
                existing = await objects.replace_repository_spec(self.namespace, self.name, desired.to_wire())
            except KubeApiError as error:
                if error.status in (400, 422):  # the apiserver's validation, e.g. an immutable field
                    return Failure(Reason.DESTINATION_CONFLICT, f"destination.template: {error}")
                raise
            self.logger.info(f"Updated EcrRepository {self.name} from destination.template.")
        return existing

    async def _source_credentials(self, spec: ImageMirrorSpec) -> CredentialsProvider | Failure:
        reference = spec.source.credentials_secret_ref
        if reference is None:
            return Anonymous()
        try:
            found = await self.mirroring.objects.secret_data(self.namespace, reference.name)
        except KubeApiError as error:
            return Failure(Reason.KUBERNETES_API_ERROR, str(error), "backoff")
        if found is None:
            return Failure(
                Reason.CREDENTIALS_NOT_FOUND,
                f"Secret {reference.name} (source.credentialsSecretRef) not found in namespace"
                f" {self.namespace}.",
                "wait",
            )
        _, data = found
        key = next((key for key in DOCKER_CONFIG_KEYS if key in data), None)
        if key is None:
            return Failure(
                Reason.INVALID_CREDENTIALS,
                f"Secret {reference.name} has no .dockerconfigjson: it must be of type"
                " kubernetes.io/dockerconfigjson.",
            )
        try:
            return DockerConfigCredentials.from_json(base64.b64decode(data[key], validate=True))
        except (binascii.Error, InvalidDockerConfig) as error:
            # InvalidDockerConfig messages never quote a credential.
            return Failure(Reason.INVALID_CREDENTIALS, f"Secret {reference.name}: {error}")

    # --- reporting -------------------------------------------------------------------------------

    async def _finish(self, report: PassReport, interval: timedelta, duration: float) -> float | None:
        now = datetime.now(UTC)
        failure = report.worst_failure()
        spread = random.uniform(-1.0, 1.0)  # noqa: S311 -- scheduling jitter
        delay: float | None
        if report.suspended:
            delay = None
            self.mirroring.failures.pop(self.uid, None)
        elif failure is None:
            delay = next_sync_delay(interval, spread)
            self.mirroring.failures.pop(self.uid, None)
        else:
            failures = self.mirroring.failures[self.uid] = self.mirroring.failures.get(self.uid, 0) + 1
            delay = retry_delay(failures, failure, spread, interval)
        next_sync = now + timedelta(seconds=delay) if delay is not None else None
        patch = mirror_status_patch(self.status, report, now=now, next_sync=next_sync)
        if patch is not None:
            try:
                stored = await self.mirroring.objects.patch_mirror_status(self.namespace, self.name, patch)
            except KubeApiError as error:
                raise kopf.TemporaryError(f"status not written: {error}", delay=5.0) from None
            self.mirroring.statuses[self.uid] = stored
        for note in mirror_events(report, self.status, patch):
            kopf.event(self.body, type=note.type, reason=str(note.reason), message=note.message)
        self._observe(report, failure, duration, patch)
        if failure is not None and failure.transient:
            raise kopf.TemporaryError(failure.message, delay=delay or 0.0)
        return delay

    def _observe(
        self, report: PassReport, failure: Failure | None, duration: float, patch: Mapping[str, Any] | None
    ) -> None:
        metrics = self.metrics
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
        conditions = (patch or self.mirroring.statuses.get(self.uid) or self.status).get("conditions") or []
        ready = find_condition(conditions, READY)
        self.runtime.readiness.set(KIND, self.uid, str(ready.get("status")) if ready else "Unknown")
        copied = [image for image in report.images or () if image.copied]
        log = self.logger.warning if failure is not None else self.logger.info
        if copied or patch is not None:
            log(
                f"Mirror pass: {len(copied)} images copied"
                + (f"; {failure.reason}: {failure.message}" if failure is not None else ""),
                extra={
                    "copied": [image.name for image in copied],
                    "failed": [image.name for image in report.failures],
                    "seconds": round(duration, 3),
                },
            )


class _Copier:
    """Copies the images of one pass with the same clients and options, counting what each copy did."""

    def __init__(
        self,
        sync: MirrorPass,
        spec: ImageMirrorSpec,
        source_client: RegistryClient,
        destination_client: RegistryClient,
        destination: Destination,
        platforms: PlatformFilter | None,
    ) -> None:
        self.sync = sync
        self.spec = spec
        self.source_client = source_client
        self.destination_client = destination_client
        self.destination = destination
        self.platforms = platforms

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
                source_client=self.source_client,
                destination_client=self.destination_client,
                platforms=self.platforms,
                referrers=self.spec.referrers,
                replace_tag=options.replace_tag,
                known_copies=options.known_copies,
                concurrency=self.sync.settings.mirror_blob_concurrency,
            )
        except (RegistryError, InvalidReference) as error:
            failure = classify_failure(error)
            self.sync.metrics.mirror_errors.labels(reason=str(failure.reason)).inc()
            return ImageOutcome(tag=tag, digest=digest, failure=failure)
        self._count(result)
        return ImageOutcome(tag=tag, digest=digest, result=result)

    def _count(self, result: ImageCopyResult) -> None:
        metrics = self.sync.metrics
        metrics.mirror_bytes.inc(result.bytes_copied)
        metrics.mirror_blobs.labels(result="copied").inc(result.blobs_copied)
        metrics.mirror_blobs.labels(result="skipped").inc(result.blobs_skipped)
        metrics.mirror_blobs.labels(result="mounted").inc(result.blobs_mounted)
        metrics.mirror_manifests.labels(result="copied").inc(result.manifests_pushed)
        if result.up_to_date or result.tag_kept:
            metrics.mirror_manifests.labels(result="skipped").inc()


def _previous_status(status: Mapping[str, Any]) -> ImageMirrorStatus:
    try:
        return ImageMirrorStatus.model_validate(status)
    except ValidationError:
        return ImageMirrorStatus()


def _validation_message(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']}" for detail in error.errors()[:5]
    )
