"""Pure decisions of the ImageMirror controller: the tags to copy and how, status and Events, the schedule.

The handler lists upstream tags (only when a filter needs them), asks ``select_tags`` what to copy, calls the
copy engine once per image with the options ``image_options`` gives, and hands the outcomes to
``mirror_status_patch`` and ``mirror_events``. Nothing here does I/O or knows kopf.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import ValidationError

from ecr_operator.api.common import API_VERSION, GROUP
from ecr_operator.api.mirror import (
    IMAGE_MIRROR,
    MAX_STATUS_TAGS,
    ImageMirrorSpec,
    ImageMirrorStatus,
    MirroredDigest,
    MirroredImage,
    MirroredTag,
    MutableTagPolicy,
    TagSelection,
)
from ecr_operator.api.repository import (
    ECR_REPOSITORY,
    EcrRepositorySpec,
    ImageTagMutability,
    ImageTagMutabilityExclusionFilter,
)
from ecr_operator.conditions import (
    READY,
    SYNCED,
    DesiredCondition,
    EventNote,
    find_condition,
    format_time,
    set_conditions,
)
from ecr_operator.config import IPAddress, MirrorSourcePolicy, Settings
from ecr_operator.ecr_hosts import ecr_host, is_ecr_host
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.repository.desired import tenancy_refusal
from ecr_operator.reconcile.repository.vocabulary import OWNER_TAG, owner_tag_value
from ecr_operator.reconcile.semver import InvalidRange, parse_range, tag_order_key
from ecr_operator.registry.errors import (
    AuthError,
    ConnectionFailed,
    DigestMismatch,
    InvalidReference,
    ManifestTooLarge,
    NoMatchingPlatform,
    NotFound,
    RegistryError,
    SourceRefused,
    UnsupportedMediaType,
)
from ecr_operator.registry.platforms import Platform, PlatformFilter
from ecr_operator.registry.reference import Reference, parse_reference
from ecr_operator.registry.results import ImageCopyResult
from ecr_operator.tag_patterns import compile_tag_pattern

# The schedule: each pass is ``interval`` ± this fraction after the previous one, so mirrors created together
# drift apart instead of hitting registries in lockstep.
INTERVAL_JITTER = 0.1
# After an operator restart, mirrors whose next sync is overdue start within this many seconds, spread out.
STARTUP_SPREAD = 60.0
# Transient registry failures are retried after RETRY_BASE seconds, doubling up to RETRY_CAP (± 20 %).
RETRY_BASE = 15.0
RETRY_CAP = 600.0
RETRY_SPREAD = 0.2
# A Retry-After longer than this is not waited for in full: the next regular pass is due anyway.
MAX_RETRY_AFTER = 3600.0
# Waiting for the destination repository (or a Secret) to appear: polled from WAIT_BASE up to WAIT_CAP.
WAIT_BASE = 1.0
WAIT_CAP = 60.0
# Conditions and Events list at most this many failing images by name.
MAX_LISTED = 10
MAX_MESSAGE = 400


class Reason(StrEnum):
    """Condition and Event reasons (CamelCase, stable: alerts and scripts match on them)."""

    SYNCED = "Synced"
    SUSPENDED = "Suspended"
    INVALID_SPEC = "InvalidSpec"
    SOURCE_REFUSED = "SourceRefused"
    CREDENTIALS_NOT_FOUND = "CredentialsNotFound"
    INVALID_CREDENTIALS = "InvalidCredentials"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    DESTINATION_NOT_FOUND = "DestinationNotFound"
    DESTINATION_NOT_READY = "DestinationNotReady"
    DESTINATION_CONFLICT = "DestinationConflict"
    ROLE_NOT_ALLOWED = "RoleNotAllowed"
    DESTINATION_NOT_ALLOWED = "DestinationNotAllowed"
    DESTINATION_REFUSED = "DestinationRefused"
    IMAGE_NOT_FOUND = "ImageNotFound"
    NO_MATCHING_PLATFORM = "NoMatchingPlatform"
    UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"
    MANIFEST_TOO_LARGE = "ManifestTooLarge"
    INVALID_REFERENCE = "InvalidReference"
    DIGEST_MISMATCH = "DigestMismatch"
    THROTTLED = "Throttled"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    REGISTRY_REJECTED = "RegistryRejected"
    KUBERNETES_API_ERROR = "KubernetesApiError"
    AWS_API_ERROR = "AwsApiError"
    PASS_TIMED_OUT = "PassTimedOut"  # noqa: S105 -- a reason, not a credential
    INTERNAL_ERROR = "InternalError"
    SYNC_FAILED = "SyncFailed"
    # Events only
    IMAGE_COPIED = "ImageCopied"
    IMAGES_COPIED = "ImagesCopied"
    PLATFORMS_MISSING = "PlatformsMissing"
    TAG_KEPT = "TagKept"


Retry = Literal["backoff", "wait", "interval"]
"""How a failure is retried: ``backoff`` soon and growing (transient), ``wait`` polling for something in the
cluster to appear, ``interval`` at the next regular pass (a human must act; never a hot loop)."""


@dataclass(frozen=True)
class Failure:
    """Why an image, or the whole pass, failed. The message is safe for status and Events: no credential."""

    reason: Reason
    message: str
    retry: Retry = "interval"
    retry_after: float | None = None

    @property
    def transient(self) -> bool:
        return self.retry == "backoff"


def classify_failure(error: Exception) -> Failure:
    """Map a copy-engine error to a reason and how it is retried."""
    message = _shorten(str(error))
    permanent: tuple[tuple[type[Exception], Reason], ...] = (
        (DestinationRefused, Reason.DESTINATION_REFUSED),
        (SourceRefused, Reason.SOURCE_REFUSED),
        (AuthError, Reason.AUTHENTICATION_FAILED),
        (NotFound, Reason.IMAGE_NOT_FOUND),
        (NoMatchingPlatform, Reason.NO_MATCHING_PLATFORM),
        (UnsupportedMediaType, Reason.UNSUPPORTED_MEDIA_TYPE),
        (ManifestTooLarge, Reason.MANIFEST_TOO_LARGE),
        (InvalidReference, Reason.INVALID_REFERENCE),
    )
    for error_type, reason in permanent:
        if isinstance(error, error_type):
            return Failure(reason, message)
    if isinstance(error, DigestMismatch):
        # Usually a stream cut short; a blob that really is corrupt upstream keeps failing, slowly.
        return Failure(Reason.DIGEST_MISMATCH, message, "backoff")
    if isinstance(error, RegistryError):
        if error.status == 429:
            return Failure(Reason.THROTTLED, message, "backoff", error.retry_after)
        if isinstance(error, ConnectionFailed) or error.retryable:
            return Failure(Reason.REGISTRY_UNAVAILABLE, message, "backoff", error.retry_after)
        return Failure(Reason.REGISTRY_REJECTED, message)
    return unexpected_failure(error)


def unexpected_failure(error: BaseException) -> Failure:
    """An exception nobody anticipated (a bug, or an upstream answer no parser expected): reported like
    any failure and retried with a backoff, never a dead daemon. The log has the traceback."""
    return Failure(
        Reason.INTERNAL_ERROR,
        _shorten(f"unexpected {type(error).__name__}: {error} (the operator log has the details)"),
        "backoff",
    )


def _shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- tag selection ----------------------------------------------------------------------------------


def needs_tag_listing(tags: TagSelection | None) -> bool:
    """Whether selecting needs the upstream tag list (a GET of tags/list): only include and semver do."""
    return tags is not None and (tags.include is not None or tags.semver is not None)


def newest_first(tags: Iterable[str]) -> list[str]:
    """Versions by precedence, highest first; then the other tags, by name, last first."""
    return sorted(tags, key=tag_order_key, reverse=True)


# A tag as OCI defines it. Upstream "tags" outside this grammar (4,400 digits, "-bad") are never selected:
# no client could pull them, and parsing them as versions would be work for nothing.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def select_tags(tags: TagSelection | None, upstream: Sequence[str] | None) -> tuple[str, ...]:
    """The tags to copy, newest first: the listed ones, plus the upstream tags every filter accepts
    (include searched, semver satisfied, exclude not searched), cut to the ``keepLatest`` highest.

    ``upstream`` is needed only when ``needs_tag_listing``. Patterns run on RE2 (linear time in the tag),
    so the cost is linear in the listing whatever the patterns. Raises InvalidRange for a malformed semver
    and InvalidTagPattern for a pattern RE2 refuses (the spec's validation catches both first).
    """
    if tags is None:
        return ()
    chosen = dict.fromkeys(tags.names or ())
    if needs_tag_listing(tags):
        include = compile_tag_pattern(tags.include) if tags.include is not None else None
        exclude = compile_tag_pattern(tags.exclude) if tags.exclude is not None else None
        semver = parse_range(tags.semver) if tags.semver is not None else None
        matched = [
            tag
            for tag in dict.fromkeys(upstream or ())
            if isinstance(tag, str)
            and _TAG.fullmatch(tag)
            and (include is None or include.search(tag))
            and (semver is None or semver.matches_tag(tag))
            and (exclude is None or not exclude.search(tag))
        ]
        if tags.keep_latest is not None:
            matched = newest_first(matched)[: tags.keep_latest]
        chosen.update(dict.fromkeys(matched))
    return tuple(newest_first(chosen))


def check_selection(tags: TagSelection | None) -> Failure | None:
    """A spec problem the schema cannot catch (a semver range it accepts but this parser does not)."""
    if tags is not None and tags.semver is not None:
        try:
            parse_range(tags.semver)
        except InvalidRange as error:
            return Failure(Reason.INVALID_SPEC, f"tags.semver: {error}")
    return None


# --- the destination --------------------------------------------------------------------------------

MIRROR_LABEL = f"{GROUP}/image-mirror"


def child_repository(spec: ImageMirrorSpec, *, namespace: str, name: str, uid: str) -> dict[str, Any]:
    """The EcrRepository a ``create: true`` mirror owns: named like the mirror, deleted with it by the
    garbage collector (what happens to the ECR repository then is its deletionPolicy's business)."""
    return {
        "apiVersion": API_VERSION,
        "kind": ECR_REPOSITORY.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "ecr-operator", MIRROR_LABEL: name},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": IMAGE_MIRROR.kind,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec.destination.child_repository_spec().to_wire(),
    }


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(reference.get("uid") == uid and reference.get("controller") for reference in references)


def child_spec_outdated(current: Mapping[str, Any] | None, desired: EcrRepositorySpec) -> bool:
    """Whether an owned child's spec differs from what the mirror's template asks (compared as models, so
    the defaults the apiserver filled in are no difference)."""
    try:
        return EcrRepositorySpec.model_validate(current or {}) != desired
    except ValidationError:
        return True


def repository_readiness(obj: Mapping[str, Any]) -> Failure | None:
    """Why the mirror must wait for the repository, or None once its Ready condition is True.

    Only readiness is read from the repository's status, never where it is: status is writable by whoever
    may patch ``ecrrepositories/status``. A forged Ready only makes the mirror look sooner; the destination
    itself is recomputed from spec, settings and AWS (``destination_target``, ``destination_in_aws``)."""
    name = (obj.get("metadata") or {}).get("name")
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    ready = find_condition(conditions if isinstance(conditions, list) else [], READY)
    if ready is not None and ready.get("status") == "True":
        return None
    why = f" ({ready.get('reason')}: {ready.get('message')})" if ready is not None else ""
    return Failure(
        Reason.DESTINATION_NOT_READY, _shorten(f"Waiting for EcrRepository {name} to be Ready{why}."), "wait"
    )


@dataclass(frozen=True)
class DestinationTarget:
    """The ECR repository an EcrRepository stands for, from its spec and the admin's settings only."""

    object_name: str
    repository_name: str
    identity: AwsIdentity
    account_id: str | None
    owner: str
    """The owner tag the repository carries when this EcrRepository created or adopted it."""
    spec: EcrRepositorySpec


def destination_target(
    repository: Mapping[str, Any], *, namespace: str, settings: Settings
) -> DestinationTarget | Failure:
    """Where a mirror into this EcrRepository pushes, decided from its spec and the settings as its own
    controller decides (same name rules, same role allow-list), so a forged status changes nothing."""
    metadata = repository.get("metadata") or {}
    object_name = str(metadata.get("name") or "")
    try:
        spec = EcrRepositorySpec.model_validate(repository.get("spec") or {})
        repository_name = spec.effective_repository_name(object_name)
    except (ValidationError, ValueError) as error:
        return Failure(
            Reason.DESTINATION_NOT_READY,
            _shorten(f"EcrRepository {object_name} has a spec its controller refuses: {error}"),
            "wait",
        )
    refusal = tenancy_refusal(spec, repository_name, namespace, settings)
    if refusal is not None:
        role = str(refusal.reason) == Reason.ROLE_NOT_ALLOWED
        return Failure(
            Reason.ROLE_NOT_ALLOWED if role else Reason.DESTINATION_NOT_ALLOWED,
            f"EcrRepository {object_name}: {refusal.message}",
        )
    registry = spec.registry
    return DestinationTarget(
        object_name=object_name,
        repository_name=repository_name,
        identity=AwsIdentity(region=registry.region, role_arn=registry.role_arn),
        account_id=registry.account_id,
        owner=owner_tag_value(settings.cluster_id, namespace, object_name),
        spec=spec,
    )


@dataclass(frozen=True)
class Destination:
    """Where a pass pushes: the repository's URI recomputed from AWS's answer, and how tags behave there."""

    uri: str
    repository: Reference
    identity: AwsIdentity
    settings: DestinationSettings


def destination_in_aws(
    target: DestinationTarget,
    *,
    registry_id: str | None,
    tags: Mapping[str, str] | None,
    mutability: str | None = None,
    exclusion_filters: Iterable[tuple[str, str]] = (),
) -> Destination | Failure:
    """The destination once AWS described the repository (``registry_id`` None: it does not exist) and
    listed its tags: it must carry this EcrRepository's owner tag, or the mirror would push into a
    repository someone else owns. The host is built from the account AWS named and the region."""
    where = f"ECR repository {target.repository_name}"
    if registry_id is None or tags is None:
        return Failure(
            Reason.DESTINATION_NOT_READY,
            f"{where} does not exist yet (EcrRepository {target.object_name} is not in effect).",
            "wait",
        )
    owner = tags.get(OWNER_TAG)
    if owner != target.owner:
        return Failure(
            Reason.DESTINATION_CONFLICT,
            f"{where} is not EcrRepository {target.object_name}'s: its owner tag {OWNER_TAG} is"
            f" {owner or 'missing'}; the mirror pushes only into repositories its namespace owns.",
            "wait",
        )
    if target.account_id is not None and registry_id != target.account_id:
        return Failure(
            Reason.DESTINATION_CONFLICT,
            f"{where}: AWS answered for account {registry_id}, not registry.accountId {target.account_id}.",
        )
    host = ecr_host(registry_id, target.identity.region)
    if not is_ecr_host(host):
        return Failure(Reason.DESTINATION_REFUSED, f"{where}: {host} is not an ECR registry host.")
    uri = f"{host}/{target.repository_name}"
    try:
        reference = parse_reference(uri)
    except InvalidReference as error:
        return Failure(Reason.DESTINATION_REFUSED, f"{where}: {error}")
    try:
        actual = ImageTagMutability(mutability) if mutability else target.spec.image_tag_mutability
    except ValueError:
        actual = target.spec.image_tag_mutability
    filters = tuple(value for _, value in exclusion_filters)
    if not filters and mutability is None:
        filters = tuple(f.filter for f in target.spec.image_tag_mutability_exclusion_filters or ())
    return Destination(
        uri=uri,
        repository=reference,
        identity=target.identity,
        settings=DestinationSettings(actual, filters),
    )


# The built-in deny list of sources, without the admin's allowances: an ECR host must resolve to public
# addresses only.
_PUBLIC_ONLY = MirrorSourcePolicy(allowed=(), denied=())


class DestinationRefused(SourceRefused):
    """A destination connection to a host that is neither an ECR registry nor the admin's override."""


@dataclass(frozen=True)
class DestinationPolicy:
    """Which hosts the destination session may connect to: ECR registry hosts at public addresses, and the
    hosts the admin's registry host overrides name (a stand-in, or an in-cluster proxy: any address).

    Refusing raises DestinationRefused rather than returning False, so the message names this rule and
    not the source allow-list."""

    override_hosts: frozenset[str]

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, str]) -> DestinationPolicy:
        return cls(frozenset(_host_of(target) for target in overrides.values()))

    def permits(self, host: str, addresses: Sequence[IPAddress]) -> bool:
        bare = host.strip("[]").rstrip(".").lower()
        if bare in self.override_hosts:
            return True
        if is_ecr_host(bare):
            if _PUBLIC_ONLY.permits(bare, addresses):
                return True
            shown = ", ".join(sorted({str(address) for address in addresses}))
            raise DestinationRefused(
                f"{host} resolves to {shown}, not a public address: an ECR registry served elsewhere needs"
                " the admin's ECR_OPERATOR_REGISTRY_HOST_OVERRIDES"
            )
        raise DestinationRefused(
            f"{host} is not an ECR registry host (<account>.dkr.ecr.<region>.amazonaws.com) nor a registry"
            " host override target (ECR_OPERATOR_REGISTRY_HOST_OVERRIDES): mirrors push nowhere else"
        )


def _host_of(target: str) -> str:
    """The host of an override's ``host:port`` (``[v6]:port`` too), as connections name it."""
    host = target.rpartition(":")[0] if ":" in target else target
    return host.strip("[]").rstrip(".").lower()


# --- fair scheduling --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotRequest:
    """A pass asking to run: its namespace and source registry, and when it asked (order of arrival)."""

    namespace: str
    source: str
    arrival: int


@dataclass(frozen=True)
class SlotLimits:
    """Passes at once: in all, per namespace, per source registry."""

    total: int
    per_namespace: int
    per_source: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SlotLimits:
        return cls(
            total=settings.mirror_concurrency,
            per_namespace=settings.mirror_namespace_concurrency,
            per_source=settings.mirror_source_concurrency,
        )


def next_admitted(
    waiting: Sequence[SlotRequest], running: Sequence[SlotRequest], limits: SlotLimits
) -> SlotRequest | None:
    """The waiting pass to start now, or None: within every limit, from the namespace with the fewest
    passes running (then first come, first served). A namespace or source that holds its share waits,
    however many mirrors it has, so a stuck upstream never delays another tenant beyond its share."""
    if len(running) >= limits.total:
        return None
    by_namespace = Counter(request.namespace for request in running)
    by_source = Counter(request.source for request in running)
    eligible = [
        request
        for request in waiting
        if by_namespace[request.namespace] < limits.per_namespace
        and by_source[request.source] < limits.per_source
    ]
    if not eligible:
        return None
    return min(eligible, key=lambda request: (by_namespace[request.namespace], request.arrival))


# --- how each image is copied -----------------------------------------------------------------------


@dataclass(frozen=True)
class DestinationSettings:
    """What of the destination repository decides whether a tag may move."""

    mutability: ImageTagMutability = ImageTagMutability.MUTABLE
    exclusion_filters: tuple[str, ...] = ()


def destination_settings(
    mutability: ImageTagMutability, filters: Sequence[ImageTagMutabilityExclusionFilter] | None
) -> DestinationSettings:
    return DestinationSettings(mutability, tuple(entry.filter for entry in filters or ()))


def tag_is_immutable(tag: str, destination: DestinationSettings) -> bool:
    """Whether ECR refuses to move ``tag`` (exclusion filters are wildcards where ``*`` is any text)."""
    excluded = any(fnmatch.fnmatchcase(tag, pattern) for pattern in destination.exclusion_filters)
    match destination.mutability:
        case ImageTagMutability.MUTABLE:
            return False
        case ImageTagMutability.IMMUTABLE:
            return True
        case ImageTagMutability.MUTABLE_WITH_EXCLUSION:
            return excluded
        case ImageTagMutability.IMMUTABLE_WITH_EXCLUSION:
            return not excluded


@dataclass(frozen=True)
class ImageOptions:
    """Options of one copy: may the destination tag move, and what earlier filtered copies made."""

    replace_tag: bool
    known_copies: Mapping[str, str]


def platform_filter(spec: ImageMirrorSpec) -> PlatformFilter | None:
    wanted = spec.wanted_platforms
    return PlatformFilter.parse(sorted(wanted)) if wanted is not None else None


def image_options(
    tag: str | None,
    previous: MirroredImage | None,
    *,
    policy: MutableTagPolicy,
    destination: DestinationSettings,
    platforms: PlatformFilter | None,
) -> ImageOptions:
    """Tags move only under Follow and where ECR lets them. A previous filtered copy is trusted to be
    current (no GET upstream) only if it was made with the platforms asked for now."""
    replace = tag is None or (policy == MutableTagPolicy.FOLLOW and not tag_is_immutable(tag, destination))
    known: dict[str, str] = {}
    if previous is not None and platforms is not None and _made_with(previous, platforms):
        source = previous.source_digest if isinstance(previous, MirroredTag) else _pinned(previous)
        if source is not None and source != previous.destination_digest:
            known[source] = previous.destination_digest
    return ImageOptions(replace_tag=replace, known_copies=known)


def _pinned(previous: MirroredImage) -> str | None:
    return previous.digest if isinstance(previous, MirroredDigest) else None


def _made_with(previous: MirroredImage, platforms: PlatformFilter) -> bool:
    """Whether a copy that took ``previous.platforms`` and missed ``previous.missing_platforms`` is what
    ``platforms`` asks for: every platform copied is wanted, and every wanted one was copied or missing."""
    try:
        copied = [Platform.parse(text) for text in previous.platforms or ()]
        missing = {str(Platform.parse(text)) for text in previous.missing_platforms or ()}
    except InvalidReference:
        return False
    return all(platforms.selects(platform) for platform in copied) and all(
        str(wanted) in missing or any(wanted.selects(platform) for platform in copied)
        for wanted in platforms.requested
    )


# --- outcomes, status, Events -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImageOutcome:
    """One image of a pass, a tag or a digest pin, and what its copy did or why it failed."""

    tag: str | None = None
    digest: str | None = None
    result: ImageCopyResult | None = None
    failure: Failure | None = None

    @property
    def name(self) -> str:
        return self.tag if self.tag is not None else str(self.digest)

    @property
    def copied(self) -> bool:
        return self.result is not None and not self.result.up_to_date and not self.result.tag_kept


@dataclass(frozen=True)
class PassReport:
    """What one sync pass found. ``images`` None: the pass stopped before copying (``problem`` says why),
    so the status keeps its image lists."""

    generation: int | None
    repository_uri: str | None = None
    images: tuple[ImageOutcome, ...] | None = None
    problem: Failure | None = None
    suspended: bool = False

    @property
    def failures(self) -> list[ImageOutcome]:
        return [image for image in self.images or () if image.failure is not None]

    @property
    def kept(self) -> list[ImageOutcome]:
        return [image for image in self.images or () if image.result is not None and image.result.tag_kept]

    @property
    def clean(self) -> bool:
        return self.problem is None and not self.failures and not self.suspended

    def worst_failure(self) -> Failure | None:
        """The failure that decides the retry: a transient one (retried soonest), else the first."""
        failures = [self.problem] if self.problem else [image.failure for image in self.failures]
        found = [failure for failure in failures if failure is not None]
        transient = [failure for failure in found if failure.transient]
        waiting = [failure for failure in found if failure.retry == "wait"]
        chosen = transient or waiting or found
        return chosen[0] if chosen else None


def _tag_entry(outcome: ImageOutcome, previous: MirroredImage | None, now: datetime) -> dict[str, Any] | None:
    """The status entry of one image after this pass (wire form, without the tag/digest key)."""
    result = outcome.result
    kept = previous.to_wire() if previous is not None else None
    if kept is not None:
        for key in ("tag", "digest"):
            kept.pop(key, None)
    if result is None:
        return kept  # failed: ECR still holds what the last copy put there
    unchanged = previous is not None and previous.destination_digest == result.destination_digest
    if (result.up_to_date or result.tag_kept) and unchanged:
        return kept
    # Copied now, or found in ECR without a record (bytes unknown then: 0).
    entry: dict[str, Any] = {
        "destinationDigest": result.destination_digest,
        "syncedAt": format_time(now),
        "bytes": result.image_bytes,
    }
    if outcome.tag is not None:
        entry["sourceDigest"] = result.source_digest
    if result.platforms_copied:
        entry["platforms"] = list(result.platforms_copied)[:64]
    if result.platforms_missing:
        entry["missingPlatforms"] = list(result.platforms_missing)[:64]
    return entry


def _status_images(status: ImageMirrorStatus, report: PassReport, now: datetime) -> dict[str, Any]:
    if report.images is None:
        return {
            "tags": [entry.to_wire() for entry in status.tags],
            "digests": [entry.to_wire() for entry in status.digests],
        }
    previous_tags = {entry.tag: entry for entry in status.tags}
    previous_digests = {entry.digest: entry for entry in status.digests}
    tags: list[dict[str, Any]] = []
    digests: list[dict[str, Any]] = []
    for outcome in report.images:
        if outcome.tag is not None:
            entry = _tag_entry(outcome, previous_tags.get(outcome.tag), now)
            if entry is not None and len(tags) < MAX_STATUS_TAGS:
                tags.append({"tag": outcome.tag, **entry})
        elif outcome.digest is not None:
            entry = _tag_entry(outcome, previous_digests.get(outcome.digest), now)
            if entry is not None:
                digests.append({"digest": outcome.digest, **entry})
    return {"tags": tags, "digests": digests}


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _summary(report: PassReport, images: Mapping[str, Any]) -> str:
    tags, digests = len(images["tags"]), len(images["digests"])
    selected_tags = sum(1 for image in report.images or () if image.tag is not None)
    parts = [f"{selected_tags} tag{'s' if selected_tags != 1 else ''}"]
    if tags < selected_tags:
        parts[0] += f" ({tags} listed in status)"
    if digests:
        parts.append(f"{digests} digest{'s' if digests != 1 else ''}")
    text = f"{' and '.join(parts)} mirrored to {report.repository_uri}."
    missing = sorted(
        {
            platform
            for entry in (*images["tags"], *images["digests"])
            for platform in entry.get("missingPlatforms", ())
        }
    )
    if missing:
        text += f" Platforms missing upstream: {', '.join(missing)}."
    kept = [image.name for image in report.kept]
    if kept:
        text += (
            f" Kept {_listing(kept)}: upstream moved, but mutableTags is Keep or the tag is immutable in ECR."
        )
    return text


def mirror_conditions(
    report: PassReport, images: Mapping[str, Any], status: Mapping[str, Any] | None
) -> list[DesiredCondition]:
    """Ready: the destination holds every selected image. Synced: the last pass finished without error.
    A transient failure leaves a Ready=True alone (the mirrored images still serve); a suspended mirror
    only says so in Synced."""
    generation = report.generation
    if report.suspended:
        synced = DesiredCondition(
            SYNCED, "Unknown", Reason.SUSPENDED, "Syncing is suspended (spec.suspend).", generation
        )
        ready_before = find_condition((status or {}).get("conditions") or [], READY)
        if ready_before is not None:
            return [synced]
        return [DesiredCondition(READY, "Unknown", Reason.SUSPENDED, synced.message, generation), synced]
    failure = report.problem
    message = failure.message if failure is not None else ""
    failures = report.failures
    if failure is None and failures:
        reasons = {image.failure.reason for image in failures if image.failure is not None}
        reason = reasons.pop() if len(reasons) == 1 else Reason.SYNC_FAILED
        details = "; ".join(
            f"{image.name}: {image.failure.message}" for image in failures[:MAX_LISTED] if image.failure
        )
        total = len(report.images or ())
        message = f"{len(failures)} of {total} images failed: {details}"
        transient = any(image.failure is not None and image.failure.transient for image in failures)
        failure = Failure(reason, message, "backoff" if transient else "interval")
    if failure is None:
        text = _summary(report, images)
        return [
            DesiredCondition(READY, "True", Reason.SYNCED, text, generation),
            DesiredCondition(SYNCED, "True", Reason.SYNCED, text, generation),
        ]
    synced = DesiredCondition(SYNCED, "False", failure.reason, _shorten(message, 4000), generation)
    ready_before = find_condition((status or {}).get("conditions") or [], READY)
    if failure.transient and ready_before is not None and ready_before.get("status") == "True":
        return [synced]
    return [DesiredCondition(READY, "False", failure.reason, synced.message, generation), synced]


_TIMES = ("lastSyncTime", "nextSyncTime")


def mirror_status_patch(
    status: Mapping[str, Any] | None, report: PassReport, *, now: datetime, next_sync: datetime | None
) -> dict[str, Any] | None:
    """The merge patch of ``status`` after a pass, or None when nothing a user sees has changed.

    A pass that finds nothing new writes nothing: not even its time (``lastSyncTime`` moves when a pass
    changed something, ``nextSyncTime`` is written with those changes or when the schedule changed).
    """
    current = dict(status or {})
    unreadable: dict[str, None] = {}
    try:
        parsed = ImageMirrorStatus.model_validate(current)
    except ValidationError:
        # Status is anyone's to patch who may patch imagemirrors/status: what cannot be read is rewritten.
        unreadable = dict.fromkeys(current)
        parsed, current = ImageMirrorStatus(), {}
    images = _status_images(parsed, report, now)
    conditions = set_conditions(
        current.get("conditions") or [], mirror_conditions(report, images, current), now
    )
    desired: dict[str, Any] = {
        "conditions": conditions,
        "observedGeneration": report.generation,
        "repositoryUri": report.repository_uri or current.get("repositoryUri"),
        **images,
    }
    before = {key: value for key, value in parsed.to_wire().items() if key not in _TIMES}
    after = ImageMirrorStatus.model_validate(desired).to_wire()
    next_text = format_time(next_sync) if next_sync is not None and not report.suspended else None
    recorded = current.get("nextSyncTime")
    schedule_missing = (next_text is None) != (recorded is None)
    if before == after and not schedule_missing:
        return None
    patch: dict[str, Any] = unreadable | {key: after.get(key) for key in {*before, *after}}
    patch["nextSyncTime"] = next_text
    if report.clean and before != after:
        patch["lastSyncTime"] = format_time(now)
    return patch


def applied_mirror_status(status: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> dict[str, Any]:
    """The whole status after ``patch`` (from ``mirror_status_patch``), as the mirror controller applies it
    server-side: it owns every field, and a field it leaves out is removed, so what the patch clears
    (``None``) is simply left out."""
    merged = {**(status or {}), **patch}
    return {key: value for key, value in merged.items() if value is not None}


def mirror_events(
    report: PassReport, status: Mapping[str, Any] | None, patch: Mapping[str, Any] | None
) -> list[EventNote]:
    """Events for what a user should notice: copies (one summary beyond a few), platforms missing upstream,
    and every change of the Synced condition: failures, kept tags, recovery. A pass that changed nothing
    posts nothing."""
    notes: list[EventNote] = []
    copied = [image for image in report.images or () if image.copied]
    if 0 < len(copied) <= MAX_LISTED:
        for image in copied:
            notes.append(
                EventNote("Normal", Reason.IMAGE_COPIED, _copied_message(image, report.repository_uri))
            )
    elif copied:
        total = sum(image.result.bytes_copied for image in copied if image.result)
        notes.append(
            EventNote(
                "Normal",
                Reason.IMAGES_COPIED,
                f"Copied {len(copied)} images ({_listing([i.name for i in copied])}) to"
                f" {report.repository_uri}, {_size(total)} transferred.",
            )
        )
    for image in copied:
        if image.result is not None and image.result.platforms_missing:
            notes.append(
                EventNote(
                    "Warning",
                    Reason.PLATFORMS_MISSING,
                    f"{image.name}: requested platforms missing upstream:"
                    f" {', '.join(image.result.platforms_missing)}; copied the others.",
                )
            )
    before = find_condition((status or {}).get("conditions") or [], SYNCED)
    after = find_condition((patch or {}).get("conditions") or [], SYNCED)
    fields = ("status", "reason", "message")
    if after is not None and (before is None or any(before.get(f) != after.get(f) for f in fields)):
        event_type: Literal["Normal", "Warning"] = "Warning" if after.get("status") == "False" else "Normal"
        notes.append(EventNote(event_type, str(after.get("reason")), str(after.get("message"))))
    return notes


def _copied_message(image: ImageOutcome, uri: str | None) -> str:
    result = image.result
    assert result is not None
    where = f"{uri}:{image.tag}" if image.tag is not None else f"{uri}@{result.destination_digest}"
    text = (
        f"Copied {image.name} ({result.source_digest}) to {where}, {_size(result.bytes_copied)} transferred."
    )
    if result.filtered:
        text += (
            f" Platforms {', '.join(result.platforms_copied)} of the upstream index are pushed as index"
            f" {result.destination_digest}."
        )
    return text


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# --- the schedule -----------------------------------------------------------------------------------

# Setting or changing this annotation (to any value) makes a mirror sync now, as Flux's
# reconcile.fluxcd.io/requestedAt does. Not under "ecr-operator.io/": kopf ignores changes to annotations
# under its own storage prefix.
SYNC_REQUEST_ANNOTATION = f"reconcile.{GROUP}/requestedAt"
_SYNC_REQUEST_PATH = ("metadata", "annotations", SYNC_REQUEST_ANNOTATION)


def requests_sync(diff: Iterable[tuple[str, Sequence[str], object, object]]) -> bool:
    """Whether an update (kopf's diff: operation, path, old, new) changes the spec or sets the sync-request
    annotation. kopf reports a change at the highest level that changed: ``metadata`` itself when the
    first annotation appears."""
    for _, path, _, new in diff:
        if tuple(path[:1]) == ("spec",):
            return True
        if tuple(path) != _SYNC_REQUEST_PATH[: len(path)]:
            continue
        value = new
        for key in _SYNC_REQUEST_PATH[len(path) :]:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None:
            return True
    return False


def next_sync_delay(interval: timedelta, spread: float) -> float:
    """Seconds to the next regular pass; ``spread`` in [-1, 1] picks the point in the jitter window."""
    return interval.total_seconds() * (1 + INTERVAL_JITTER * spread)


def retry_delay(failures: int, failure: Failure, spread: float, interval: timedelta) -> float:
    """Seconds until a failed pass is tried again; ``failures`` counts consecutive failed passes (≥ 1)."""
    if failure.retry == "interval":
        return next_sync_delay(interval, spread)
    if failure.retry == "wait":
        return min(WAIT_CAP, WAIT_BASE * 2.0 ** max(failures - 1, 0)) * (1 + RETRY_SPREAD * spread)
    if failure.retry_after is not None:
        # Never sooner than RETRY_BASE: a registry saying "Retry-After: 0" forever must not cause a hot loop.
        return max(RETRY_BASE, min(failure.retry_after, MAX_RETRY_AFTER, interval.total_seconds()))
    ceiling = min(RETRY_CAP, RETRY_BASE * 2.0 ** min(max(failures - 1, 0), 16), interval.total_seconds())
    return ceiling * (1 + RETRY_SPREAD * spread)


def first_sync_delay(
    status: Mapping[str, Any] | None, generation: int | None, now: datetime, spread: float
) -> float:
    """Seconds until the first pass after the operator (re)starts: now for a new or changed spec, the
    recorded next sync if still ahead, else a moment within STARTUP_SPREAD (``spread`` in [0, 1])."""
    status = status or {}
    if generation is None or status.get("observedGeneration") != generation:
        return 0.0
    recorded = status.get("nextSyncTime")
    if isinstance(recorded, str):
        try:
            due = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
        except ValueError:
            due = now
        if due > now:
            return (due - now).total_seconds()
    return STARTUP_SPREAD * spread
