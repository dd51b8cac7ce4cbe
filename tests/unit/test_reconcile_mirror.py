"""ImageMirror decisions: copy options, failures, status (written only on change), Events, the schedule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_operator.api.mirror import (
    MAX_STATUS_TAGS,
    ImageMirrorSpec,
    MirroredDigest,
    MirroredTag,
    MutableTagPolicy,
)
from ecr_operator.api.repository import EcrRepositorySpec, ImageTagMutability
from ecr_operator.reconcile.mirror import (
    INTERVAL_JITTER,
    RETRY_BASE,
    RETRY_CAP,
    STARTUP_SPREAD,
    SYNC_REQUEST_ANNOTATION,
    WAIT_CAP,
    DestinationSettings,
    Failure,
    ImageOutcome,
    PassReport,
    Reason,
    applied_mirror_status,
    child_repository,
    child_spec_outdated,
    classify_failure,
    first_sync_delay,
    image_options,
    mirror_events,
    mirror_status_patch,
    next_sync_delay,
    owned_by,
    repository_readiness,
    requests_sync,
    retry_delay,
    tag_is_immutable,
)
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
from ecr_operator.registry.platforms import PlatformFilter
from ecr_operator.registry.results import ImageCopyResult
from mirror_fakes import DESTINATION_URI, NOW, copied, digest

pytestmark = pytest.mark.unit

LATER = NOW + timedelta(hours=6)


def _tag(tag: str, result: ImageCopyResult | None = None, failure: Failure | None = None) -> ImageOutcome:
    return ImageOutcome(tag=tag, result=result, failure=failure)


def _report(*images: ImageOutcome, generation: int = 1, **fields: Any) -> PassReport:
    return PassReport(generation, DESTINATION_URI, images, **fields)


def _apply(status: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(status)
    for key, value in (patch or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(entry for entry in status["conditions"] if entry["type"] == kind)


# --- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason", "retry"),
    [
        (SourceRefused("refused"), Reason.SOURCE_REFUSED, "interval"),
        (AuthError("denied", status=401), Reason.AUTHENTICATION_FAILED, "interval"),
        (NotFound("gone", status=404), Reason.IMAGE_NOT_FOUND, "interval"),
        (
            NoMatchingPlatform("none", missing_platforms=("linux/riscv64",)),
            Reason.NO_MATCHING_PLATFORM,
            "interval",
        ),
        (UnsupportedMediaType("schema 1"), Reason.UNSUPPORTED_MEDIA_TYPE, "interval"),
        (ManifestTooLarge("5 MiB"), Reason.MANIFEST_TOO_LARGE, "interval"),
        (InvalidReference("bad tag"), Reason.INVALID_REFERENCE, "interval"),
        (RegistryError("tag immutable", status=400), Reason.REGISTRY_REJECTED, "interval"),
        (DigestMismatch("short read"), Reason.DIGEST_MISMATCH, "backoff"),
        (RegistryError("slow down", status=429, retry_after=7.0), Reason.THROTTLED, "backoff"),
        (RegistryError("bad gateway", status=502), Reason.REGISTRY_UNAVAILABLE, "backoff"),
        (ConnectionFailed("reset"), Reason.REGISTRY_UNAVAILABLE, "backoff"),
    ],
)
def test_failures_are_classified_by_whether_waiting_helps(
    error: Exception, reason: Reason, retry: str
) -> None:
    failure = classify_failure(error)
    assert (failure.reason, failure.retry) == (reason, retry)
    assert failure.retry_after == (7.0 if reason == Reason.THROTTLED else None)


# --- copy options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutability", "filters", "tag", "immutable"),
    [
        (ImageTagMutability.MUTABLE, (), "v1", False),
        (ImageTagMutability.IMMUTABLE, (), "v1", True),
        (ImageTagMutability.MUTABLE_WITH_EXCLUSION, ("release-*",), "release-1", True),
        (ImageTagMutability.MUTABLE_WITH_EXCLUSION, ("release-*",), "latest", False),
        (ImageTagMutability.IMMUTABLE_WITH_EXCLUSION, ("latest", "dev-*"), "dev-42", False),
        (ImageTagMutability.IMMUTABLE_WITH_EXCLUSION, ("latest", "dev-*"), "1.0.0", True),
    ],
)
def test_tag_mutability_follows_the_repository_setting(
    mutability: ImageTagMutability, filters: tuple[str, ...], tag: str, immutable: bool
) -> None:
    assert tag_is_immutable(tag, DestinationSettings(mutability, filters)) is immutable


def test_tags_move_only_under_follow_and_where_ecr_lets_them() -> None:
    mutable, immutable = DestinationSettings(), DestinationSettings(ImageTagMutability.IMMUTABLE)
    follow, keep = MutableTagPolicy.FOLLOW, MutableTagPolicy.KEEP
    assert image_options("v1", None, policy=follow, destination=mutable, platforms=None).replace_tag
    assert not image_options("v1", None, policy=keep, destination=mutable, platforms=None).replace_tag
    assert not image_options("v1", None, policy=follow, destination=immutable, platforms=None).replace_tag
    assert image_options(None, None, policy=keep, destination=immutable, platforms=None).replace_tag


def _entry(*, platforms: list[str], missing: list[str] | None = None, filtered: bool = True) -> MirroredTag:
    return MirroredTag.model_validate(
        {
            "tag": "v1",
            "sourceDigest": digest(1),
            "destinationDigest": digest(2 if filtered else 1),
            "syncedAt": NOW,
            "bytes": 10,
            "platforms": platforms,
            "missingPlatforms": missing,
        }
    )


@pytest.mark.parametrize(
    ("requested", "entry", "trusted"),
    [
        (["linux/amd64"], _entry(platforms=["linux/amd64"]), True),
        (
            ["linux/amd64", "linux/riscv64"],
            _entry(platforms=["linux/amd64"], missing=["linux/riscv64"]),
            True,
        ),
        (["linux/arm64/v8"], _entry(platforms=["linux/arm64"]), True),
        (["linux/amd64", "linux/arm64"], _entry(platforms=["linux/amd64"]), False),  # a platform was added
        (["linux/amd64"], _entry(platforms=["linux/amd64", "linux/arm64"]), False),  # one was removed
        (["linux/amd64"], _entry(platforms=["linux/amd64"], filtered=False), False),  # nothing to remember
    ],
)
def test_a_filtered_copy_is_trusted_only_with_the_same_platforms(
    requested: list[str], entry: MirroredTag, trusted: bool
) -> None:
    options = image_options(
        "v1",
        entry,
        policy=MutableTagPolicy.FOLLOW,
        destination=DestinationSettings(),
        platforms=PlatformFilter.parse(requested),
    )
    assert options.known_copies == ({digest(1): digest(2)} if trusted else {})


def test_a_filtered_digest_pin_is_remembered_by_its_digest() -> None:
    pin = MirroredDigest.model_validate(
        {
            "digest": digest(1),
            "destinationDigest": digest(2),
            "syncedAt": NOW,
            "bytes": 1,
            "platforms": ["linux/amd64"],
        }
    )
    options = image_options(
        None,
        pin,
        policy=MutableTagPolicy.KEEP,
        destination=DestinationSettings(),
        platforms=PlatformFilter.parse(["linux/amd64"]),
    )
    assert options.known_copies == {digest(1): digest(2)}


# --- status -----------------------------------------------------------------------------------------


def test_a_first_pass_writes_the_whole_status() -> None:
    report = _report(
        _tag("v2", copied(2)),
        _tag("v1", copied(1, 11, platforms_copied=("linux/amd64",), platforms_missing=("linux/riscv64",))),
    )
    patch = mirror_status_patch({}, report, now=NOW, next_sync=LATER)
    assert patch is not None
    assert patch["repositoryUri"] == DESTINATION_URI
    assert patch["observedGeneration"] == 1
    assert (patch["lastSyncTime"], patch["nextSyncTime"]) == ("2026-05-01T12:00:00Z", "2026-05-01T18:00:00Z")
    assert patch["tags"] == [
        {
            "tag": "v2",
            "sourceDigest": digest(2),
            "destinationDigest": digest(2),
            "syncedAt": "2026-05-01T12:00:00Z",
            "bytes": 1002,
        },
        {
            "tag": "v1",
            "sourceDigest": digest(1),
            "destinationDigest": digest(11),
            "syncedAt": "2026-05-01T12:00:00Z",
            "bytes": 1001,
            "platforms": ["linux/amd64"],
            "missingPlatforms": ["linux/riscv64"],
        },
    ]
    ready = _condition(patch, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Synced")
    assert (
        ready["message"]
        == f"2 tags mirrored to {DESTINATION_URI}. Platforms missing upstream: linux/riscv64."
    )


def test_a_pass_that_finds_nothing_new_writes_nothing() -> None:
    first = mirror_status_patch({}, _report(_tag("v1", copied(1))), now=NOW, next_sync=LATER)
    status = _apply({}, first)
    again = _report(_tag("v1", copied(1, up_to_date=True)))
    assert mirror_status_patch(status, again, now=LATER, next_sync=LATER + timedelta(hours=6)) is None


def test_a_moved_tag_updates_its_entry_and_the_sync_time() -> None:
    status = _apply({}, mirror_status_patch({}, _report(_tag("v1", copied(1))), now=NOW, next_sync=LATER))
    patch = mirror_status_patch(status, _report(_tag("v1", copied(5))), now=LATER, next_sync=LATER)
    assert patch is not None
    [entry] = patch["tags"]
    assert (entry["sourceDigest"], entry["syncedAt"]) == (digest(5), "2026-05-01T18:00:00Z")
    assert patch["lastSyncTime"] == "2026-05-01T18:00:00Z"


def test_a_kept_tag_keeps_its_record_and_is_reported() -> None:
    status = _apply({}, mirror_status_patch({}, _report(_tag("v1", copied(1))), now=NOW, next_sync=LATER))
    kept = copied(5, 1, tag_kept=True)
    patch = mirror_status_patch(status, _report(_tag("v1", kept)), now=LATER, next_sync=LATER)
    assert patch is not None
    assert patch["tags"] == status["tags"]
    assert "Kept v1: upstream moved" in _condition(patch, "Synced")["message"]
    assert _condition(patch, "Ready")["status"] == "True"


def test_a_failed_image_keeps_its_record_and_fails_the_mirror() -> None:
    status = _apply(
        {},
        mirror_status_patch(
            {}, _report(_tag("v1", copied(1)), _tag("v2", copied(2))), now=NOW, next_sync=LATER
        ),
    )
    failure = classify_failure(NotFound("v2: manifest unknown", status=404))
    patch = mirror_status_patch(
        status,
        _report(_tag("v1", copied(1, up_to_date=True)), _tag("v2", failure=failure)),
        now=LATER,
        next_sync=LATER,
    )
    assert patch is not None
    assert patch["tags"] == status["tags"]
    ready, synced = _condition(patch, "Ready"), _condition(patch, "Synced")
    assert (ready["status"], ready["reason"]) == ("False", "ImageNotFound")
    assert synced["message"] == "1 of 2 images failed: v2: v2: manifest unknown"
    assert "lastSyncTime" not in patch or patch["lastSyncTime"] == status["lastSyncTime"]


def test_a_transient_failure_leaves_a_ready_mirror_ready() -> None:
    status = _apply({}, mirror_status_patch({}, _report(_tag("v1", copied(1))), now=NOW, next_sync=LATER))
    failure = classify_failure(RegistryError("503", status=503))
    patch = mirror_status_patch(status, _report(_tag("v1", failure=failure)), now=LATER, next_sync=LATER)
    assert patch is not None
    assert _condition(patch, "Ready") == _condition(status, "Ready")
    assert (_condition(patch, "Synced")["status"], _condition(patch, "Synced")["reason"]) == (
        "False",
        "RegistryUnavailable",
    )


def test_a_problem_before_copying_keeps_the_image_records() -> None:
    status = _apply({}, mirror_status_patch({}, _report(_tag("v1", copied(1))), now=NOW, next_sync=LATER))
    problem = Failure(Reason.CREDENTIALS_NOT_FOUND, "Secret creds not found.", "wait")
    patch = mirror_status_patch(status, PassReport(1, problem=problem), now=LATER, next_sync=LATER)
    assert patch is not None
    assert patch["tags"] == status["tags"]
    assert patch["repositoryUri"] == DESTINATION_URI
    assert _condition(patch, "Ready")["reason"] == "CredentialsNotFound"


def test_the_applied_status_is_the_whole_status_without_the_cleared_fields() -> None:
    status = _apply({}, mirror_status_patch({}, _report(_tag("v1", copied(1))), now=NOW, next_sync=LATER))
    patch = mirror_status_patch(status, PassReport(1, suspended=True), now=LATER, next_sync=None)
    assert patch is not None
    applied = applied_mirror_status(status, patch)
    # Server-side apply removes what the mirror's manager leaves out: the same result as the merge patch.
    assert applied == _apply(status, patch)
    assert "nextSyncTime" not in applied
    assert applied["tags"] == status["tags"]
    assert None not in applied.values()


def test_suspending_says_so_and_drops_the_next_sync_time() -> None:
    status = _apply({}, mirror_status_patch({}, _report(_tag("v1", copied(1))), now=NOW, next_sync=LATER))
    patch = mirror_status_patch(status, PassReport(1, suspended=True), now=LATER, next_sync=None)
    assert patch is not None
    assert patch["nextSyncTime"] is None
    assert _condition(patch, "Synced")["reason"] == "Suspended"
    assert _condition(patch, "Ready") == _condition(status, "Ready")
    assert (
        mirror_status_patch(_apply(status, patch), PassReport(1, suspended=True), now=LATER, next_sync=None)
        is None
    )


def test_status_lists_at_most_the_bounded_number_of_tags() -> None:
    images = [_tag(f"v{n}", copied(n + 1)) for n in range(MAX_STATUS_TAGS + 20)]
    patch = mirror_status_patch({}, _report(*images), now=NOW, next_sync=LATER)
    assert patch is not None
    assert len(patch["tags"]) == MAX_STATUS_TAGS
    assert (
        f"{MAX_STATUS_TAGS + 20} tags ({MAX_STATUS_TAGS} listed in status)"
        in _condition(patch, "Ready")["message"]
    )


def test_tags_no_longer_selected_leave_the_status() -> None:
    status = _apply(
        {},
        mirror_status_patch(
            {}, _report(_tag("v1", copied(1)), _tag("v2", copied(2))), now=NOW, next_sync=LATER
        ),
    )
    patch = mirror_status_patch(
        status, _report(_tag("v2", copied(2, up_to_date=True)), generation=2), now=LATER, next_sync=LATER
    )
    assert patch is not None
    assert [entry["tag"] for entry in patch["tags"]] == ["v2"]
    assert patch["observedGeneration"] == 2


# --- Events -----------------------------------------------------------------------------------------


def test_events_tell_copies_missing_platforms_and_changes_of_state() -> None:
    report = _report(
        _tag("v1", copied(1, 9, platforms_copied=("linux/amd64",), platforms_missing=("linux/riscv64",)))
    )
    patch = mirror_status_patch({}, report, now=NOW, next_sync=LATER)
    notes = mirror_events(report, {}, patch)
    assert [(note.type, note.reason) for note in notes] == [
        ("Normal", Reason.IMAGE_COPIED),
        ("Warning", Reason.PLATFORMS_MISSING),
        ("Normal", "Synced"),
    ]
    assert f"to {DESTINATION_URI}:v1" in notes[0].message
    assert "pushed as index" in notes[0].message
    quiet = _report(_tag("v1", copied(1, 9, up_to_date=True)))
    assert mirror_events(quiet, _apply({}, patch), None) == []


def test_many_copies_make_one_event() -> None:
    report = _report(*[_tag(f"v{n}", copied(n + 1)) for n in range(25)])
    notes = mirror_events(report, {}, None)
    assert [note.reason for note in notes] == [Reason.IMAGES_COPIED]
    assert notes[0].message.startswith(
        "Copied 25 images (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9 and 15 more)"
    )


def test_a_failure_is_a_warning_once() -> None:
    failure = classify_failure(AuthError("401 unauthorized", status=401))
    report = _report(_tag("v1", failure=failure))
    patch = mirror_status_patch({}, report, now=NOW, next_sync=LATER)
    [note] = mirror_events(report, {}, patch)
    assert (note.type, note.reason) == ("Warning", "AuthenticationFailed")
    status = _apply({}, patch)
    again = mirror_status_patch(status, report, now=LATER, next_sync=LATER)
    assert again is None
    assert mirror_events(report, status, again) == []


# --- the destination --------------------------------------------------------------------------------


def _spec(**destination: Any) -> ImageMirrorSpec:
    return ImageMirrorSpec.model_validate(
        {"source": {"image": "ghcr.io/org/app"}, "tags": {"list": ["v1"]}, "destination": destination}
    )


def test_the_child_repository_is_owned_by_its_mirror() -> None:
    spec = _spec(
        repositoryName="team/app",
        create=True,
        registry={"region": "eu-west-1"},
        template={"scanOnPush": True},
    )
    child = child_repository(spec, namespace="team", name="app", uid="uid-1")
    assert child["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "ecr-operator.io/v1alpha1",
            "kind": "ImageMirror",
            "name": "app",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert child["metadata"]["namespace"] == "team"
    assert child["spec"]["repositoryName"] == "team/app"
    assert child["spec"]["scanOnPush"] is True
    assert owned_by(child, "uid-1")
    assert not owned_by(child, "uid-2")
    assert not owned_by({"metadata": {}}, "uid-1")


def test_defaults_the_apiserver_adds_are_no_change_of_the_child() -> None:
    spec = _spec(repositoryName="team/app", create=True, registry={"region": "eu-west-1"})
    desired = spec.destination.child_repository_spec()
    stored = {
        "repositoryName": "team/app",
        "registry": {"region": "eu-west-1"},
        "encryption": {"type": "AES256"},
    }
    assert not child_spec_outdated(stored, desired)
    assert child_spec_outdated({**stored, "scanOnPush": True}, desired)
    assert child_spec_outdated({"nonsense": 1}, desired)
    assert isinstance(desired, EcrRepositorySpec)


def test_a_repository_is_used_once_ready_and_its_status_uri_is_never_read() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "RepositoryReady"}
    # Only readiness comes from the repository's status; where it is comes from spec, settings and AWS.
    assert repository_readiness({"metadata": {"name": "r"}, "status": {"conditions": [ready]}}) is None
    assert (
        repository_readiness(
            {"metadata": {"name": "r"}, "status": {"repositoryUri": "evil.example/x", "conditions": [ready]}}
        )
        is None
    )
    pending = {"type": "Ready", "status": "False", "reason": "AccessDenied", "message": "no"}
    waiting = repository_readiness({"metadata": {"name": "r"}, "status": {"conditions": [pending]}})
    assert waiting is not None
    assert waiting.retry == "wait"
    assert "AccessDenied: no" in waiting.message
    assert repository_readiness({"metadata": {"name": "r"}, "status": {"conditions": "garbage"}}) is not None


# --- scheduling -------------------------------------------------------------------------------------


@given(st.integers(60, 7 * 86400), st.floats(-1.0, 1.0))
def test_regular_passes_are_jittered_around_the_interval(seconds: int, spread: float) -> None:
    delay = next_sync_delay(timedelta(seconds=seconds), spread)
    assert seconds * (1 - INTERVAL_JITTER) <= delay <= seconds * (1 + INTERVAL_JITTER)


@given(st.integers(1, 40), st.floats(-1.0, 1.0))
def test_retries_back_off_within_bounds(failures: int, spread: float) -> None:
    interval = timedelta(hours=6)
    transient = Failure(Reason.REGISTRY_UNAVAILABLE, "503", "backoff")
    assert 0 < retry_delay(failures, transient, spread, interval) <= RETRY_CAP * 1.2
    assert retry_delay(failures, transient, 0.0, interval) <= retry_delay(
        failures + 1, transient, 0.0, interval
    )
    waiting = Failure(Reason.DESTINATION_NOT_READY, "pending", "wait")
    assert 0 < retry_delay(failures, waiting, spread, interval) <= WAIT_CAP * 1.2
    permanent = Failure(Reason.AUTHENTICATION_FAILED, "denied")
    assert retry_delay(failures, permanent, spread, interval) == next_sync_delay(interval, spread)


def test_retry_after_is_honoured_up_to_the_interval() -> None:
    throttled = Failure(Reason.THROTTLED, "429", "backoff", retry_after=42.0)
    assert retry_delay(1, throttled, 0.5, timedelta(hours=1)) == 42.0
    assert retry_delay(1, throttled, 0.5, timedelta(seconds=30)) == 30.0
    impatient = Failure(Reason.THROTTLED, "429", "backoff", retry_after=0.0)
    assert retry_delay(1, impatient, 0.5, timedelta(hours=1)) == RETRY_BASE
    assert retry_delay(9, Failure(Reason.THROTTLED, "429", "backoff"), 0.0, timedelta(minutes=2)) == 120.0


def test_the_first_pass_after_a_start() -> None:
    status = {"observedGeneration": 3, "nextSyncTime": "2026-05-01T13:00:00Z"}
    assert first_sync_delay(status, 3, NOW, 0.5) == 3600.0
    assert first_sync_delay(status, 4, NOW, 0.5) == 0.0  # the spec changed while the operator was away
    assert first_sync_delay({}, 1, NOW, 0.5) == 0.0
    overdue = {"observedGeneration": 3, "nextSyncTime": "2026-05-01T11:00:00Z"}
    assert first_sync_delay(overdue, 3, NOW, 0.5) == STARTUP_SPREAD / 2


@pytest.mark.parametrize(
    ("diff", "wanted"),
    [
        ([("change", ("spec", "tags", "list"), ["v1"], ["v1", "v2"])], True),
        ([("add", ("spec", "platforms"), None, ["linux/amd64"])], True),
        ([("add", ("metadata",), None, {"annotations": {SYNC_REQUEST_ANNOTATION: "1"}})], True),
        ([("add", ("metadata", "annotations"), None, {SYNC_REQUEST_ANNOTATION: "1"})], True),
        ([("change", ("metadata", "annotations", SYNC_REQUEST_ANNOTATION), "1", "2")], True),
        ([("remove", ("metadata", "annotations", SYNC_REQUEST_ANNOTATION), "1", None)], False),
        ([("add", ("metadata",), None, {"labels": {"team": "a"}})], False),
        ([("change", ("metadata", "annotations", "note"), "a", "b")], False),
    ],
)
def test_a_sync_is_requested_by_spec_changes_and_the_annotation(
    diff: list[tuple[str, tuple[str, ...], object, object]], wanted: bool
) -> None:
    assert requests_sync(diff) is wanted
