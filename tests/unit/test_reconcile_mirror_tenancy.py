"""ImageMirror decisions that keep tenants apart and upstreams harmless: the destination recomputed from spec,
settings and AWS (never status), the hosts a destination session may reach, linear-time tag patterns,
upstream tags outside the grammar, fair slots across namespaces and sources, passes cut short."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ecr_operator.api.mirror import ImageMirrorSpec, TagSelection
from ecr_operator.api.repository import ImageTagMutability
from ecr_operator.config import Settings
from ecr_operator.controllers.mirror_slots import FairSlots
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.mirror import (
    Destination,
    DestinationPolicy,
    DestinationRefused,
    DestinationTarget,
    Failure,
    ImageOutcome,
    PassReport,
    Reason,
    SlotLimits,
    SlotRequest,
    classify_failure,
    destination_in_aws,
    destination_target,
    mirror_events,
    mirror_status_patch,
    next_admitted,
    select_tags,
    unexpected_failure,
)
from ecr_operator.reconcile.repository.vocabulary import OWNER_TAG, owner_tag_value
from ecr_operator.tag_patterns import InvalidTagPattern, compile_tag_pattern
from mirror_fakes import NOW, copied, digest

pytestmark = pytest.mark.unit

LATER = NOW + timedelta(minutes=10)
ACCOUNT = "123456789012"
HOST = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"


def _settings(**fields: Any) -> Settings:
    return Settings(**fields)


def _repository(name: str = "app", *, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"registry": {"region": "us-east-1"}, **spec},
        "status": status or {},
    }


# --- tag patterns on RE2 --------------------------------------------------------------------------


def test_a_catastrophic_include_pattern_against_redos_bait_is_instant() -> None:
    # Python's re takes ~2**30 steps here (measured: the event loop stalled ~50 s for 31 characters).
    selection = TagSelection.model_validate({"include": "^(a+)+$"})
    upstream = ["a" * 30 + "-", "aaaa", *(f"{'a' * n}-" for n in range(1, 100))]
    started = time.monotonic()
    assert select_tags(selection, upstream) == ("aaaa",)
    assert time.monotonic() - started < 0.5


def test_matching_thousands_of_tags_with_nested_patterns_stays_cheap() -> None:
    selection = TagSelection.model_validate({"include": "^(a|aa)+$", "exclude": "(x+x+)+y"})
    upstream = ["a" * 127, *(f"{'a' * (n % 120)}-{n}" for n in range(10_000))]
    started = time.monotonic()
    assert select_tags(selection, upstream) == ("a" * 127,)
    assert time.monotonic() - started < 2.0


def test_upstream_tags_outside_the_tag_grammar_are_never_selected() -> None:
    # 4,400 digits once crashed the daemon (int() refuses more than 4,300 digits) while sorting versions.
    upstream = ["9" * 4400, "-bad", ".hidden", "x" * 129, "ok", "1.2.3", "a b", "é"]
    assert select_tags(TagSelection.model_validate({"include": ".*"}), upstream) == ("1.2.3", "ok")
    assert select_tags(TagSelection.model_validate({"semver": ">=0"}), upstream) == ("1.2.3",)


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [("(?!rc)", "lookahead"), ("(?<=v)1", "lookahead"), (r"(a)\1", "backreferences"), ("v(1", "missing )")],
)
def test_patterns_re2_refuses_are_spec_errors_naming_the_field(pattern: str, hint: str) -> None:
    spec = {
        "source": {"image": "registry.example/team/app"},
        "tags": {"semver": ">=1", "exclude": pattern},
        "destination": {"repositoryRef": {"name": "app"}},
    }
    with pytest.raises(ValidationError) as raised:
        ImageMirrorSpec.model_validate(spec)
    message = str(raised.value)
    assert "tags.exclude" in message
    assert hint in message
    with pytest.raises(InvalidTagPattern):
        compile_tag_pattern(pattern)


def test_re2_speaks_the_syntax_tag_filters_use() -> None:
    assert compile_tag_pattern(r"^v?\d+\.\d+(\.\d+)?$").search("v1.27.3")
    assert compile_tag_pattern(r"(?i)^ALPINE").search("alpine3.20")
    assert not compile_tag_pattern(r"-rc[0-9]*$").search("1.0.0")
    assert compile_tag_pattern(r"[[:digit:]]+").fullmatch("123")


# --- the destination, from spec, settings and AWS only -----------------------------------------------


def test_the_destination_ignores_a_forged_status_uri() -> None:
    forged = {
        "repositoryUri": "attacker.example:8443/loot",
        "conditions": [{"type": "Ready", "status": "True", "reason": "RepositoryReady"}],
    }
    target = destination_target(
        _repository(status=forged, repositoryName="team-a/app"), namespace="team-a", settings=_settings()
    )
    assert isinstance(target, DestinationTarget)
    destination = destination_in_aws(
        target,
        registry_id=ACCOUNT,
        tags={OWNER_TAG: owner_tag_value("default", "team-a", "app")},
        mutability="IMMUTABLE",
    )
    assert isinstance(destination, Destination)
    assert destination.uri == f"{HOST}/team-a/app"
    assert destination.repository.registry == HOST
    assert destination.identity == AwsIdentity("us-east-1")
    assert destination.settings.mutability == ImageTagMutability.IMMUTABLE


def test_a_china_region_destination_gets_the_china_host() -> None:
    target = destination_target(
        _repository(registry={"region": "cn-north-1"}), namespace="team-a", settings=_settings()
    )
    assert isinstance(target, DestinationTarget)
    destination = destination_in_aws(target, registry_id=ACCOUNT, tags={OWNER_TAG: target.owner})
    assert isinstance(destination, Destination)
    assert destination.uri == f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/app"


def test_a_forged_ready_on_a_repository_another_object_owns_pushes_nothing() -> None:
    target = destination_target(
        _repository(repositoryName="shared"), namespace="team-a", settings=_settings()
    )
    assert isinstance(target, DestinationTarget)
    for tags in ({OWNER_TAG: owner_tag_value("default", "team-b", "shared")}, {}):
        refused = destination_in_aws(target, registry_id=ACCOUNT, tags=tags)
        assert isinstance(refused, Failure)
        assert refused.reason == Reason.DESTINATION_CONFLICT
        assert OWNER_TAG in refused.message
    missing = destination_in_aws(target, registry_id=None, tags=None)
    assert isinstance(missing, Failure)
    assert (missing.reason, missing.retry) == (Reason.DESTINATION_NOT_READY, "wait")


def test_a_forged_ready_on_a_name_outside_the_namespace_prefix_is_refused_before_aws() -> None:
    settings = _settings(repository_name_prefix="{namespace}/")
    refused = destination_target(
        _repository(repositoryName="team-b/app"), namespace="team-a", settings=settings
    )
    assert isinstance(refused, Failure)
    assert refused.reason == Reason.DESTINATION_NOT_ALLOWED
    assert "ECR_OPERATOR_REPOSITORY_NAME_PREFIX" in refused.message
    allowed = destination_target(
        _repository(repositoryName="team-a/app"), namespace="team-a", settings=settings
    )
    assert isinstance(allowed, DestinationTarget)


def test_a_role_outside_the_allow_list_is_refused_before_aws() -> None:
    role = "arn:aws:iam::210987654321:role/pusher"
    refused = destination_target(
        _repository(registry={"region": "us-east-1", "roleArn": role}),
        namespace="team-a",
        settings=_settings(),
    )
    assert isinstance(refused, Failure)
    assert refused.reason == Reason.ROLE_NOT_ALLOWED
    allowed = destination_target(
        _repository(registry={"region": "us-east-1", "roleArn": role}),
        namespace="team-a",
        settings=_settings(allowed_role_arns=[role]),
    )
    assert isinstance(allowed, DestinationTarget)
    assert allowed.identity == AwsIdentity("us-east-1", role)


def test_aws_answering_for_another_account_than_the_spec_names_is_refused() -> None:
    target = destination_target(
        _repository(registry={"region": "us-east-1", "accountId": "210987654321"}),
        namespace="team-a",
        settings=_settings(),
    )
    assert isinstance(target, DestinationTarget)
    refused = destination_in_aws(target, registry_id=ACCOUNT, tags={OWNER_TAG: target.owner})
    assert isinstance(refused, Failure)
    assert refused.reason == Reason.DESTINATION_CONFLICT


# --- where the destination session may connect --------------------------------------------------------


def _addresses(*texts: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(text) for text in texts]


def test_the_destination_session_reaches_ecr_at_public_addresses_and_the_admins_override_only() -> None:
    policy = DestinationPolicy.from_overrides({"*": "127.0.0.1:5000", HOST: "[::1]:5001"})
    assert policy.permits(HOST, _addresses("52.94.1.1"))
    assert policy.permits("127.0.0.1", _addresses("127.0.0.1"))
    assert policy.permits("::1", _addresses("::1"))
    assert policy.permits("[::1]", _addresses("::1"))
    for host, addresses in [
        (HOST, _addresses("169.254.169.254")),
        (HOST, _addresses("52.94.1.1", "10.0.0.1")),
        ("attacker.example", _addresses("52.94.1.1")),
        ("10.0.0.1", _addresses("10.0.0.1")),
        ("s3.amazonaws.com", _addresses("52.216.1.1")),
    ]:
        with pytest.raises(DestinationRefused) as refused:
            policy.permits(host, addresses)
        assert "ECR_OPERATOR_REGISTRY_HOST_OVERRIDES" in str(refused.value)
        assert classify_failure(refused.value).reason == Reason.DESTINATION_REFUSED


def test_without_overrides_only_public_ecr_hosts_are_reachable() -> None:
    policy = DestinationPolicy.from_overrides({})
    assert policy.permits(HOST, _addresses("3.5.1.1"))
    with pytest.raises(DestinationRefused):
        policy.permits("127.0.0.1", _addresses("127.0.0.1"))


# --- failures nobody anticipated ---------------------------------------------------------------------


def test_an_unexpected_exception_is_a_reported_failure_retried_with_backoff() -> None:
    for error in (ValueError("Exceeds the limit (4300 digits)"), KeyError("digest"), TypeError("x")):
        failure = classify_failure(error)
        assert failure == unexpected_failure(error)
        assert (failure.reason, failure.retry) == (Reason.INTERNAL_ERROR, "backoff")
        assert type(error).__name__ in failure.message


def _tag(name: str, n: int, at: datetime = NOW) -> dict[str, Any]:
    return {
        "tag": name,
        "sourceDigest": digest(n),
        "destinationDigest": digest(n),
        "syncedAt": at.isoformat().replace("+00:00", "Z"),
        "bytes": 100,
    }


def test_a_pass_cut_short_records_what_it_copied_and_keeps_what_it_did_not_reach() -> None:
    status = {"tags": [_tag("v1", 1), _tag("v3", 3)]}
    timed_out = Failure(Reason.PASS_TIMED_OUT, "The pass did not finish within 10m.", "backoff")
    report = PassReport(
        generation=2,
        repository_uri=f"{HOST}/team-a/app",
        images=(
            ImageOutcome(tag="v2", result=copied(2)),
            ImageOutcome(tag="v1", result=copied(11)),
            ImageOutcome(tag="v3", failure=timed_out),
            ImageOutcome(tag="v4", failure=timed_out),
        ),
        problem=timed_out,
    )
    patch = mirror_status_patch(status, report, now=LATER, next_sync=LATER)
    assert patch is not None
    tags = {entry["tag"]: entry for entry in patch["tags"]}
    assert tags["v2"]["destinationDigest"] == digest(2)  # copied before the deadline
    assert tags["v1"]["destinationDigest"] == digest(11)
    assert tags["v3"] == _tag("v3", 3)  # not reached: ECR still holds the last copy
    assert "v4" not in tags
    synced = next(c for c in patch["conditions"] if c["type"] == "Synced")
    assert (synced["status"], synced["reason"]) == ("False", "PassTimedOut")
    assert "lastSyncTime" not in patch
    notes = mirror_events(report, status, patch)
    assert [(n.type, str(n.reason)) for n in notes] == [
        ("Normal", "ImageCopied"),
        ("Normal", "ImageCopied"),
        ("Warning", "PassTimedOut"),
    ]


def test_a_status_nobody_can_read_is_rewritten_not_a_crash() -> None:
    report = PassReport(
        generation=1, repository_uri=f"{HOST}/a", images=(ImageOutcome(tag="v1", result=copied(1)),)
    )
    patch = mirror_status_patch(
        {"tags": [{"tag": 7}], "conditions": "nonsense", "extra": 1}, report, now=NOW, next_sync=LATER
    )
    assert patch is not None
    assert patch["extra"] is None
    assert [entry["tag"] for entry in patch["tags"]] == ["v1"]
    assert {c["type"] for c in patch["conditions"]} == {"Ready", "Synced"}


# --- fair slots ------------------------------------------------------------------------------------


def _request(namespace: str, source: str = "registry.example", arrival: int = 0) -> SlotRequest:
    return SlotRequest(namespace, source, arrival)


def test_a_namespace_at_its_share_waits_while_another_namespace_starts() -> None:
    limits = SlotLimits(total=4, per_namespace=2, per_source=4)
    running = [_request("hostile", "evil.example", 0), _request("hostile", "evil.example", 1)]
    waiting = [_request("hostile", "evil.example", 2), _request("quiet", "registry.example", 3)]
    assert next_admitted(waiting, running, limits) == waiting[1]
    assert next_admitted(waiting[:1], running, limits) is None


def test_a_source_at_its_share_waits_whatever_namespace_asks() -> None:
    limits = SlotLimits(total=4, per_namespace=4, per_source=1)
    running = [_request("a", "evil.example", 0)]
    waiting = [_request("b", "evil.example", 1), _request("c", "good.example", 2)]
    assert next_admitted(waiting, running, limits) == waiting[1]


def test_the_namespace_running_fewest_goes_first_then_first_come() -> None:
    limits = SlotLimits(total=8, per_namespace=8, per_source=8)
    running = [_request("busy", arrival=0), _request("busy", arrival=1), _request("some", arrival=2)]
    waiting = [_request("busy", arrival=3), _request("some", arrival=4), _request("idle", arrival=6)]
    assert next_admitted(waiting, running, limits) == waiting[2]
    assert next_admitted(waiting[:2], running, limits) == waiting[1]
    assert next_admitted([_request("x", arrival=9), _request("y", arrival=8)], [], limits) == _request(
        "y", arrival=8
    )


def test_nothing_starts_beyond_the_total() -> None:
    limits = SlotLimits(total=2, per_namespace=2, per_source=2)
    running = [_request("a", "s1"), _request("b", "s2")]
    assert next_admitted([_request("c", "s3")], running, limits) is None


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["s1", "s2", "s3"])), max_size=40),
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_admitting_until_nothing_fits_respects_every_limit_and_leaves_no_fitting_waiter(
    asks: list[tuple[str, str]], total: int, per_namespace: int, per_source: int
) -> None:
    limits = SlotLimits(total, per_namespace, per_source)
    waiting = [SlotRequest(namespace, source, arrival) for arrival, (namespace, source) in enumerate(asks)]
    running: list[SlotRequest] = []
    while (chosen := next_admitted(waiting, running, limits)) is not None:
        waiting.remove(chosen)
        running.append(chosen)
    assert len(running) <= total
    assert max(Counter(r.namespace for r in running).values(), default=0) <= per_namespace
    assert max(Counter(r.source for r in running).values(), default=0) <= per_source
    if len(running) < total:  # work-conserving: whoever still waits is held by its own share
        by_namespace = Counter(r.namespace for r in running)
        by_source = Counter(r.source for r in running)
        for request in waiting:
            assert by_namespace[request.namespace] >= per_namespace or by_source[request.source] >= per_source


async def test_passes_stuck_in_one_namespace_never_hold_another_namespaces_slot() -> None:
    slots = FairSlots(SlotLimits(total=2, per_namespace=1, per_source=2))
    release = asyncio.Event()
    started: list[str] = []

    async def stuck(name: str) -> None:
        async with slots.slot("hostile", "evil.example"):
            started.append(name)
            await release.wait()

    hostile = [asyncio.create_task(stuck(f"h{n}")) for n in range(5)]
    await asyncio.sleep(0)
    async with asyncio.timeout(1):
        async with slots.slot("quiet", "registry.example"):
            assert slots.running == 2
    assert started == ["h0"]
    assert slots.waiting == 4
    hostile[0].cancel()  # a deadline or a deleted mirror: the slot goes to the next waiter
    await asyncio.sleep(0.01)
    assert started == ["h0", "h1"]
    hostile[2].cancel()  # a waiter that gives up leaves the queue
    release.set()
    await asyncio.gather(*hostile, return_exceptions=True)
    assert started == ["h0", "h1", "h3", "h4"]
    assert (slots.running, slots.waiting) == (0, 0)
