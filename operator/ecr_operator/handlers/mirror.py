"""kopf wiring of the ImageMirror controller: a daemon per mirror syncing on its schedule, and an update
handler that makes it sync at once when the spec changes or a sync is requested.

A daemon rather than a timer: each mirror has its own interval (minutes to days, jittered), a spec change
must cut the wait short, and deleting a mirror must stop a copy in flight. The daemon writes the mirror's
status itself, and only when something a user would see changed. Each pass: take a fair share of the sync
slots (per namespace and per source registry), resolve the destination (creating the child EcrRepository
for ``create: true``; its URI recomputed from spec, settings and AWS, never read from status), read the
source credentials, list upstream tags if a filter needs them, copy each image (one failing image never
stops the others), then status, Events and metrics. Every pass runs under a deadline and the loop survives
every exception: a failure of any kind is a condition, an Event, a metric and a retry with a backoff, and
the images copied before it are recorded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from pydantic import ValidationError

from ecr_operator.api.common import GROUP, VERSION, format_duration
from ecr_operator.api.mirror import IMAGE_MIRROR, ImageMirrorSpec, ImageMirrorStatus, MirroredImage
from ecr_operator.aws.calls import AwsCallFailed
from ecr_operator.aws.ecr import RegistryRef
from ecr_operator.conditions import READY, find_condition
from ecr_operator.kubeapi import KubeApiError
from ecr_operator.reconcile.mirror import (
    Destination,
    Failure,
    ImageOutcome,
    PassReport,
    Reason,
    check_selection,
    child_repository,
    child_spec_outdated,
    classify_failure,
    destination_in_aws,
    destination_target,
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
from ecr_operator.runtime import Runtime
from ecr_operator.tag_patterns import InvalidTagPattern

KIND = IMAGE_MIRROR.kind
PLURAL = IMAGE_MIRROR.plural
# What an ImageMirror's interval defaults to, for a spec too broken to say.
DEFAULT_INTERVAL = timedelta(hours=6)
# A deleted mirror's copy in flight is cancelled after this long (aiohttp closes its connections).
CANCELLATION_TIMEOUT = 10.0
# A status write the apiserver refused is tried again this soon.
STATUS_RETRY = 5.0
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
    # A daemon kopf restarted (it never ends by itself but for stopping) syncs at once.
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
            try:
                delay = await MirrorPass(memo, body, logger).run()
            except Exception as error:
                # MirrorPass reports its own failures; this is the last line, so the daemon never dies.
                logger.exception("Mirror pass failed unexpectedly")
                failures = mirroring.failures[uid] = mirroring.failures.get(uid, 0) + 1
                spread = random.uniform(-1.0, 1.0)  # noqa: S311 -- scheduling jitter
                delay = retry_delay(failures, unexpected_failure(error), spread, DEFAULT_INTERVAL)
    finally:
        reason = stopped.reason
        if reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in reason:
            mirroring.forget(uid)
            memo.readiness.forget(KIND, uid)
            with contextlib.suppress(KeyError):
                memo.metrics.mirror_last_success.remove(namespace, name)


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
        # What the pass got to, so that a pass cut short (deadline, unexpected error) still reports it.
        self._uri: str | None = None
        self._planned: list[tuple[str | None, str | None]] | None = None
        self._outcomes: list[ImageOutcome] = []

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
                report = await self._guarded_sync(spec)
        return await self._finish(report, interval, time.monotonic() - started)

    # --- the sync --------------------------------------------------------------------------------

    async def _guarded_sync(self, spec: ImageMirrorSpec) -> PassReport:
        """The sync within a fair slot and the pass deadline; whatever goes wrong becomes a report."""
        try:
            source = parse_reference(spec.source.image)
        except InvalidReference as error:
            return PassReport(self.generation, problem=classify_failure(error))
        async with self.mirroring.slots.slot(self.namespace, source.registry):
            limit = self.settings.mirror_pass_timeout
            timer = asyncio.timeout(limit.total_seconds())
            try:
                async with timer:
                    return await self._sync(spec, source)
            except Exception as error:
                if timer.expired():
                    return self._cut_short(
                        Failure(
                            Reason.PASS_TIMED_OUT,
                            f"The pass did not finish within {format_duration(limit)}"
                            " (ECR_OPERATOR_MIRROR_PASS_TIMEOUT); the upstream registry is too slow or"
                            " does not answer. Retried with a backoff.",
                            "backoff",
                        )
                    )
                self.logger.exception("Mirror pass failed unexpectedly")
                return self._cut_short(unexpected_failure(error))

    def _cut_short(self, failure: Failure) -> PassReport:
        """The report of a pass that stopped early: images copied so far are recorded, the ones not reached
        keep their previous status entries and are named in the condition."""
        if self._planned is None:
            return PassReport(self.generation, self._uri, problem=failure)
        done = {(outcome.tag, outcome.digest) for outcome in self._outcomes}
        left = [(tag, digest) for tag, digest in self._planned if (tag, digest) not in done]
        pending = tuple(ImageOutcome(tag=tag, digest=digest, failure=failure) for tag, digest in left)
        copied = sum(1 for outcome in self._outcomes if outcome.result is not None)
        names = [tag if tag is not None else str(digest) for tag, digest in left]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        message = f"{failure.message} {copied} of {len(self._planned)} images done" + (
            f"; not done: {shown}." if shown else "."
        )
        problem = Failure(failure.reason, message, failure.retry, failure.retry_after)
        return PassReport(self.generation, self._uri, (*self._outcomes, *pending), problem=problem)

    async def _sync(self, spec: ImageMirrorSpec, source: Reference) -> PassReport:
        problem = check_selection(spec.tags)
        if problem is not None:
            return PassReport(self.generation, problem=problem)
        try:
            await self.mirroring.check_source(source.registry)
        except SourceRefused as error:
            return PassReport(self.generation, problem=classify_failure(error))
        destination = await self._destination(spec)
        if isinstance(destination, Failure):
            return PassReport(self.generation, problem=destination)
        self._uri = destination.uri
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
        try:
            # Linear-time patterns over a bounded listing; in a thread all the same, so that even a huge
            # listing never stalls the event loop (health checks, other tenants' passes).
            selected = await asyncio.to_thread(select_tags, spec.tags, upstream)
        except InvalidTagPattern as error:
            invalid = Failure(Reason.INVALID_SPEC, f"tags.include/exclude: {error}")
            return PassReport(self.generation, destination.uri, problem=invalid)
        self._planned = [(tag, None) for tag in selected] + [(None, digest) for digest in spec.digests or ()]
        previous = _previous_status(self.status)
        previous_tags = {entry.tag: entry for entry in previous.tags}
        previous_digests = {entry.digest: entry for entry in previous.digests}
        copier = _Copier(self, spec, source_client, destination_client, destination, platform_filter(spec))
        for tag, digest in self._planned:
            if tag is not None:
                outcome = await copier.copy(source.with_tag(tag), tag=tag, previous=previous_tags.get(tag))
            else:
                assert digest is not None
                outcome = await copier.copy(
                    source.with_digest(digest), digest=digest, previous=previous_digests.get(digest)
                )
            self._outcomes.append(outcome)
        outcomes = self._outcomes
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
        waiting = repository_readiness(repository)
        if waiting is not None:
            return waiting
        target = destination_target(repository, namespace=self.namespace, settings=self.settings)
        if isinstance(target, Failure):
            return target
        try:
            # Building a boto3 client costs ~0.2 s of CPU (more on a busy node); do it off the event loop,
            # so the describe below, which runs on the loop, finds it cached.
            await asyncio.to_thread(self.runtime.aws.client, "ecr", target.identity)
            observed = await self.runtime.ecr.observe_ownership(
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
                # The next pass recomputes the same patch from what is stored; Events wait for it too.
                self.logger.warning(f"Mirror status not written, retrying in {STATUS_RETRY:.0f}s: {error}")
                self._observe(report, failure, duration, None)
                return STATUS_RETRY
            self.mirroring.statuses[self.uid] = stored
        for note in mirror_events(report, self.status, patch):
            kopf.event(self.body, type=note.type, reason=str(note.reason), message=note.message)
        self._observe(report, failure, duration, patch)
        # Transient failures too are retried by this daemon's own loop (the delay grows with each
        # consecutive failure), never by kopf restarting it: a spec change still wakes it at once.
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
        except Exception as error:
            # One image's surprise (an upstream answer no parser expected) never stops the others.
            self.sync.logger.exception(f"Copying {source} failed unexpectedly")
            failure = unexpected_failure(error)
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
