"""The EcrRepository planner: spec -> desired AWS state, desired vs observed -> actions, result -> status.

Pure functions only; "AWS" here is the data the adapters would have observed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ecr_fakes import ACCOUNT, repository_description
from ecr_operator.api.repository import AdoptionPolicy, DeletionPolicy, EcrRepositorySpec
from ecr_operator.config import Settings
from ecr_operator.reconcile.backoff import backoff_delay
from ecr_operator.reconcile.policy import PULL_ACTIONS, render_policy
from ecr_operator.reconcile.repository.actions import (
    ClaimRepository,
    CreateRepository,
    DeleteLifecyclePolicy,
    DeleteRepository,
    DeleteRepositoryPolicy,
    DeleteRolePolicy,
    PutImageScanningConfiguration,
    PutImageTagMutability,
    PutLifecyclePolicy,
    PutRolePolicy,
    SetRepositoryPolicy,
    TagRepository,
    UntagRepository,
    changed_aspects,
)
from ecr_operator.reconcile.repository.deletion import DeletionPlan, plan_deletion
from ecr_operator.reconcile.repository.desired import (
    DesiredRepository,
    IdentityRole,
    Refusal,
    SpecError,
    desired_repository,
    identity_roles,
    tenancy_refusal,
)
from ecr_operator.reconcile.repository.failures import Problem, classify_aws_failure
from ecr_operator.reconcile.repository.identity_policies import (
    IdentityPlan,
    ManagedPolicy,
    identity_policy_document,
    identity_roles_in_status,
    is_own_identity_policy,
    plan_identity_policies,
    roles_after,
)
from ecr_operator.reconcile.repository.observed import ObservedRepository, RepositoryDescription
from ecr_operator.reconcile.repository.plan import plan_repository
from ecr_operator.reconcile.repository.status import (
    SyncResult,
    deletion_status,
    owned_status,
    repository_conditions,
    repository_events,
    repository_status,
    was_converged,
)
from ecr_operator.reconcile.repository.vocabulary import (
    ADOPTED_TAG,
    OWNER_TAG,
    Reason,
    identity_policy_name,
    identity_policy_stamp,
    owner_tag_value,
    partition_of,
)

pytestmark = pytest.mark.unit

NAME = "team/app"
ARN = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{NAME}"
URI = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{NAME}"
OWNER = owner_tag_value("default", "team", "app")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LIFECYCLE_RULES = [
    {
        "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 7},
        "description": "old untagged",
    },
    {
        "selection": {
            "tagStatus": "tagged",
            "tagPrefixes": ["v", "release-"],
            "countType": "imageCountMoreThan",
            "countNumber": 20,
        }
    },
]


def spec(**fields: Any) -> EcrRepositorySpec:
    return EcrRepositorySpec.model_validate({"registry": {"region": "us-east-1"}, **fields})


def desired(**fields: Any) -> DesiredRepository:
    return desired_repository(spec(**fields), repository_name=NAME, owner=OWNER, namespace="team")


def description(**changes: Any) -> RepositoryDescription:
    return repository_description(NAME, **changes)


def observed_as(wanted: DesiredRepository, **changes: Any) -> ObservedRepository:
    """What AWS holds when it matches ``wanted`` exactly, with ``changes`` applied."""
    settings = {
        "image_tag_mutability": wanted.image_tag_mutability,
        "exclusion_filters": wanted.exclusion_filters,
        "scan_on_push": wanted.scan_on_push,
        "encryption_type": wanted.encryption_type,
        "kms_key": wanted.kms_key,
    }
    fields: dict[str, Any] = {
        "description": description(
            **{key: changes.pop(key) if key in changes else settings[key] for key in settings}
        ),
        "tags": dict(wanted.tags),
        "lifecycle_policy": json.dumps(wanted.lifecycle_policy) if wanted.lifecycle_policy else None,
        "repository_policy": json.dumps(wanted.repository_policy) if wanted.repository_policy else None,
    }
    return ObservedRepository(**(fields | changes))


# --- spec -> desired --------------------------------------------------------------------------------


def test_defaults_ask_for_a_plain_repository_owned_by_the_object() -> None:
    wanted = desired()

    assert (wanted.image_tag_mutability, wanted.scan_on_push, wanted.encryption_type) == (
        "MUTABLE",
        False,
        "AES256",
    )
    assert wanted.tags == {OWNER_TAG: OWNER}
    assert wanted.lifecycle_policy is None
    assert wanted.repository_policy is None
    assert wanted.identity_roles == ()
    assert wanted.adoption is AdoptionPolicy.ADOPT
    assert wanted.deletion_policy is DeletionPolicy.RETAIN


def test_structured_lifecycle_rules_compile_to_an_ecr_policy_in_list_order() -> None:
    wanted = desired(lifecyclePolicy={"rules": LIFECYCLE_RULES})

    assert wanted.lifecycle_policy == {
        "rules": [
            {
                "rulePriority": 1,
                "description": "old untagged",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 7,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "selection": {
                    "tagStatus": "tagged",
                    "tagPrefixList": ["v", "release-"],
                    "countType": "imageCountMoreThan",
                    "countNumber": 20,
                },
                "action": {"type": "expire"},
            },
        ]
    }


def test_explicit_priorities_and_tag_patterns_are_kept() -> None:
    wanted = desired(
        lifecyclePolicy={
            "rules": [
                {
                    "priority": 10,
                    "selection": {
                        "tagStatus": "tagged",
                        "tagPatterns": ["prod-*"],
                        "countType": "imageCountMoreThan",
                        "countNumber": 3,
                    },
                },
                {
                    "priority": 20,
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 50},
                },
            ]
        }
    )

    assert wanted.lifecycle_policy is not None
    rules = wanted.lifecycle_policy["rules"]
    assert [rule["rulePriority"] for rule in rules] == [10, 20]
    assert rules[0]["selection"]["tagPatternList"] == ["prod-*"]


def test_raw_lifecycle_policy_is_validated_before_anything_is_sent() -> None:
    raw = json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 3},
                    "action": {"type": "expire"},
                }
            ]
        }
    )

    with pytest.raises(SpecError, match=r"lifecyclePolicy\.raw\.rules\[0\]\.selection\.countUnit"):
        desired(lifecyclePolicy={"raw": raw})


def test_raw_repository_policy_that_is_not_a_policy_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError, match=r"access\.policy\.Statement must be"):
        desired(access={"policy": json.dumps({"Statement": []})})


def test_grants_compile_to_a_policy_in_the_region_partition() -> None:
    grants = {"grants": [{"principals": ["210987654321"], "actions": "pull"}]}

    china = desired_repository(
        EcrRepositorySpec.model_validate({"registry": {"region": "cn-north-1"}, "access": grants}),
        repository_name=NAME,
        owner=OWNER,
        partition=partition_of("cn-north-1"),
    )

    assert china.repository_policy is not None
    assert china.repository_policy["Statement"][0]["Principal"] == {
        "AWS": ["arn:aws-cn:iam::210987654321:root"]
    }
    assert [partition_of(region) for region in ("us-east-1", "us-gov-west-1", "cn-north-1")] == [
        "aws",
        "aws-us-gov",
        "aws-cn",
    ]


def test_identity_policies_only_is_no_repository_policy() -> None:
    wanted = desired(access={"identityPolicies": [{"roleName": "ci", "actions": "push"}]})

    assert wanted.repository_policy is None
    assert wanted.identity_roles == (IdentityRole("ci", "push"),)


def test_a_role_named_twice_gets_the_union_of_its_access() -> None:
    wanted = desired(
        registry={"region": "us-east-1", "accountId": ACCOUNT},
        access={
            "identityPolicies": [
                {"roleName": "deployer", "actions": "pull"},
                {"roleArn": f"arn:aws:iam::{ACCOUNT}:role/teams/deployer", "actions": "push"},
                {"roleName": "reader", "actions": "pull"},
            ]
        },
    )

    assert wanted.identity_roles == (
        IdentityRole("deployer", "pullPush", ACCOUNT),
        IdentityRole("reader", "pull"),
    )


def test_a_repository_policy_longer_than_ecr_allows_is_refused() -> None:
    principals = [f"arn:aws:iam::{ACCOUNT}:role/{'r' * 200}-{index}" for index in range(50)]

    with pytest.raises(SpecError, match="longer than ECR's limit"):
        desired(access={"grants": [{"principals": principals, "actions": "pull"}]})


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("ecrrepository-*.yaml")), ids=lambda path: path.name)
def test_every_example_translates_into_what_aws_accepts(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    example = EcrRepositorySpec.model_validate(document["spec"])
    name = example.effective_repository_name(document["metadata"]["name"])

    wanted = desired_repository(example, repository_name=name, owner=OWNER)

    assert wanted.tags[OWNER_TAG] == OWNER
    assert plan_repository(wanted, observed_as(wanted)).actions == ()


# --- tenancy ----------------------------------------------------------------------------------------


def test_a_role_outside_the_allow_list_is_refused_before_any_aws_call() -> None:
    settings = Settings(
        allowed_role_arns=({"pattern": "arn:aws:iam::*:role/ecr-*", "namespaces": ["team-*"]},)
    )
    role = {"region": "us-east-1", "roleArn": f"arn:aws:iam::{ACCOUNT}:role/ecr-admin"}

    allowed = tenancy_refusal(spec(registry=role), NAME, "team-a", settings)
    other_namespace = tenancy_refusal(spec(registry=role), NAME, "sandbox", settings)
    other_role = tenancy_refusal(
        spec(registry={**role, "roleArn": f"arn:aws:iam::{ACCOUNT}:role/admin"}), NAME, "team-a", settings
    )

    assert allowed is None
    assert other_namespace is not None
    assert other_namespace.reason is Reason.ROLE_NOT_ALLOWED
    assert "sandbox" in other_namespace.message
    assert other_role is not None
    assert other_role.reason is Reason.ROLE_NOT_ALLOWED


def test_the_namespace_prefix_keeps_tenants_in_their_lane() -> None:
    settings = Settings(repository_name_prefix="{namespace}/")

    refused = tenancy_refusal(spec(), "billing/app", "team", settings)

    assert tenancy_refusal(spec(), "team/app", "team", settings) is None
    assert refused == Refusal(
        Reason.NAME_NOT_ALLOWED,
        "repository name 'billing/app' must start with 'team/' in namespace team: set spec.repositoryName"
        " to team/<name> (the cluster admin's ECR_OPERATOR_REPOSITORY_NAME_PREFIX).",
    )


def test_the_prefix_is_whole_segments_so_a_namespace_never_claims_a_longer_namespaces_names() -> None:
    settings = Settings(repository_name_prefix="{namespace}/")

    # F5: with "{namespace}-", namespace "team" could claim "team-a-app"; with "/" it cannot.
    assert tenancy_refusal(spec(), "team-a-app", "team", settings) is not None
    assert tenancy_refusal(spec(), "team-a/app", "team", settings) is not None
    assert tenancy_refusal(spec(), "team-a/app", "team-a", settings) is None
    assert tenancy_refusal(spec(), "team/a/app", "team", settings) is None


NAMESPACE_NAMES = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")


@given(
    first=NAMESPACE_NAMES,
    second=NAMESPACE_NAMES,
    template=st.sampled_from(
        ["{namespace}/", "teams/{namespace}/", "{cluster_id}/{namespace}/", "ns-{namespace}/"]
    ),
    rest=st.from_regex(r"\A[a-z0-9]+([._/-][a-z0-9]+)*\Z"),
)
def test_no_repository_name_is_allowed_to_two_namespaces(
    first: str, second: str, template: str, rest: str
) -> None:
    settings = Settings(repository_name_prefix=template)
    name = settings.repository_prefix(second) + rest

    assert settings.repository_name_allowed(name, second)
    assert settings.repository_name_allowed(name, first) == (first == second)


def test_owner_tag_values_are_unambiguous_and_fit_a_tag_value() -> None:
    long_name = "a" * 253
    first = owner_tag_value("cluster", "ns", long_name)
    second = owner_tag_value("cluster", "ns", long_name[:-1] + "b")

    assert owner_tag_value("default", "team", "app") == "default/team/app"
    assert len(first) == 256
    assert first != second


def test_identity_policy_names_never_collide_and_fit_iam() -> None:
    assert identity_policy_name("default", "a-b", "c") != identity_policy_name("default", "a", "b-c")
    assert identity_policy_name("prod", "team", "app") == "ecr-operator.team.app@prod"
    assert len(identity_policy_name("c" * 128, "n" * 63, "x" * 253)) == 128


# --- plan_repository --------------------------------------------------------------------------------


def test_an_absent_repository_is_created_with_every_setting_and_its_owner_tag_at_once() -> None:
    wanted = desired(
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filter": "latest"}, {"filter": "dev-*"}],
        scanOnPush=True,
        encryption={"type": "KMS", "kmsKey": "alias/ecr"},
        tags={"team": "a"},
        lifecyclePolicy={"rules": LIFECYCLE_RULES},
        access={"grants": [{"principals": ["210987654321"], "actions": "pull"}]},
    )

    plan = plan_repository(wanted, None)

    assert plan.refusal is None
    create, put_lifecycle, set_policy = plan.actions
    assert create == CreateRepository(
        repository=NAME,
        image_tag_mutability="IMMUTABLE_WITH_EXCLUSION",
        exclusion_filters=(("WILDCARD", "dev-*"), ("WILDCARD", "latest")),
        scan_on_push=True,
        encryption_type="KMS",
        kms_key="alias/ecr",
        tags=((OWNER_TAG, OWNER), ("team", "a")),
    )
    assert isinstance(put_lifecycle, PutLifecyclePolicy)
    assert isinstance(set_policy, SetRepositoryPolicy)


def test_a_new_repository_without_policies_needs_no_policy_calls() -> None:
    [create] = plan_repository(desired(), None).actions

    assert isinstance(create, CreateRepository)


def test_a_converged_repository_plans_nothing() -> None:
    wanted = desired(
        imageTagMutability="MUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filter": "latest"}],
        scanOnPush=True,
        tags={"team": "a"},
        lifecyclePolicy={"rules": LIFECYCLE_RULES},
        access={"grants": [{"principals": ["210987654321"], "actions": "pull"}]},
    )

    assert plan_repository(wanted, observed_as(wanted)).actions == ()


def test_another_objects_repository_is_a_conflict_and_nothing_is_touched() -> None:
    wanted = desired(tags={"team": "a"})
    taken = observed_as(wanted, tags={OWNER_TAG: "default/other/app"}, scan_on_push=True)

    plan = plan_repository(wanted, taken)

    assert plan.actions == ()
    assert plan.refusal is not None
    assert plan.refusal.reason is Reason.CONFLICT
    assert "EcrRepository other/app of cluster 'default'" in plan.refusal.message


def test_the_same_object_name_in_another_cluster_is_a_conflict() -> None:
    wanted = desired()
    plan = plan_repository(wanted, observed_as(wanted, tags={OWNER_TAG: "prod/team/app"}))

    assert plan.refusal is not None
    assert plan.refusal.reason is Reason.CONFLICT


def test_an_unowned_repository_is_claimed_first_then_converged_where_the_admin_allows_adoption() -> None:
    wanted = desired(tags={"team": "a"}, scanOnPush=True)
    unowned = observed_as(wanted, tags={"legacy": "yes"}, scan_on_push=False)

    plan = plan_repository(wanted, unowned, adoption_allowed=True)

    assert plan.actions == (
        ClaimRepository(ARN, OWNER),
        PutImageScanningConfiguration(NAME, scan_on_push=True),
        TagRepository(ARN, (("team", "a"),)),
        UntagRepository(ARN, ("legacy",)),
    )


@pytest.mark.parametrize("allowed", [True, False])
def test_adoption_fail_refuses_an_existing_unowned_repository(allowed: bool) -> None:
    wanted = desired(adoption="Fail")

    plan = plan_repository(wanted, observed_as(wanted, tags={}), adoption_allowed=allowed)

    assert plan.actions == ()
    assert plan.refusal is not None
    assert plan.refusal.reason is Reason.ADOPTION_REFUSED


def test_an_unowned_repository_is_adopted_only_where_the_admin_allows_it_naming_the_setting() -> None:
    wanted = desired(access={"grants": [{"principals": ["210987654321"], "actions": "pull"}]})
    unowned = observed_as(wanted, tags={}, repository_policy=None)

    plan = plan_repository(wanted, unowned)

    assert plan.actions == ()
    assert plan.refusal is not None
    assert plan.refusal.reason is Reason.ADOPTION_NOT_ALLOWED
    assert "ECR_OPERATOR_ADOPTION_NAMESPACES" in plan.refusal.message
    assert "namespace team" in plan.refusal.message


def test_an_owner_tag_removed_outside_the_operator_makes_the_repository_unowned() -> None:
    # Status once said "this object manages it"; status is no proof, so this is adoption like any other.
    wanted = desired()

    refused = plan_repository(wanted, observed_as(wanted, tags={}))
    readopted = plan_repository(wanted, observed_as(wanted, tags={}), adoption_allowed=True)

    assert refused.refusal is not None
    assert refused.refusal.reason is Reason.ADOPTION_NOT_ALLOWED
    assert f"put back the tag {OWNER_TAG}={OWNER}" in refused.refusal.message
    assert readopted.actions == (ClaimRepository(ARN, OWNER),)


def test_an_adopted_repository_keeps_its_adopted_tag_and_never_loses_it() -> None:
    wanted = desired(tags={"team": "a"})
    claimed = plan_repository(wanted, observed_as(wanted, tags={}), adoption_allowed=True)
    adopted = observed_as(wanted, tags={**wanted.tags, ADOPTED_TAG: "true"})
    untagged_by_hand = observed_as(wanted, tags={OWNER_TAG: OWNER, ADOPTED_TAG: "true"})

    # The claim writes the owner and adopted tags at once; the tag delta then only adds the user tag.
    assert claimed.actions == (ClaimRepository(ARN, OWNER), TagRepository(ARN, (("team", "a"),)))
    assert plan_repository(wanted, adopted).actions == ()
    assert plan_repository(wanted, untagged_by_hand).actions == (TagRepository(ARN, (("team", "a"),)),)
    assert adopted.adopted
    assert not observed_as(wanted).adopted


@pytest.mark.parametrize(
    ("encryption", "actual", "mismatch"),
    [
        ({}, {"encryption_type": "KMS", "kms_key": "arn:aws:kms:us-east-1:1:key/x"}, True),
        (
            {"type": "KMS"},
            {"encryption_type": "KMS", "kms_key": "arn:aws:kms:us-east-1:1:key/managed"},
            False,
        ),
        (
            {"type": "KMS", "kmsKey": "alias/team"},
            {"encryption_type": "KMS", "kms_key": "arn:aws:kms:r:1:key/k"},
            False,
        ),
        (
            {"type": "KMS", "kmsKey": "0e4d7f3c-0000-4000-8000-000000000000"},
            {"encryption_type": "KMS", "kms_key": "arn:aws:kms:r:1:key/0e4d7f3c-0000-4000-8000-000000000000"},
            False,
        ),
        (
            {"type": "KMS", "kmsKey": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/wanted"},
            {"encryption_type": "KMS", "kms_key": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/other"},
            True,
        ),
        ({"type": "KMS_DSSE"}, {"encryption_type": "KMS"}, True),
    ],
)
def test_encryption_that_cannot_be_changed_is_reported_not_touched(
    encryption: dict[str, str], actual: dict[str, str], mismatch: bool
) -> None:
    wanted = desired(encryption=encryption)

    plan = plan_repository(wanted, observed_as(wanted, **actual))

    if mismatch:
        assert plan.actions == ()
        assert plan.refusal is not None
        assert plan.refusal.reason is Reason.ENCRYPTION_MISMATCH
    else:
        assert plan == plan_repository(wanted, observed_as(wanted))


def test_tag_mutability_and_its_filters_converge_in_one_call() -> None:
    wanted = desired(
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filter": "latest"}, {"filter": "dev-*"}],
    )
    filters_reordered = observed_as(
        wanted, exclusion_filters=frozenset({("WILDCARD", "dev-*"), ("WILDCARD", "latest")})
    )
    filter_changed = observed_as(wanted, exclusion_filters=frozenset({("WILDCARD", "latest")}))
    was_mutable = observed_as(wanted, image_tag_mutability="MUTABLE", exclusion_filters=frozenset())

    assert plan_repository(wanted, filters_reordered).actions == ()
    expected = PutImageTagMutability(
        NAME, "IMMUTABLE_WITH_EXCLUSION", (("WILDCARD", "dev-*"), ("WILDCARD", "latest"))
    )
    assert plan_repository(wanted, filter_changed).actions == (expected,)
    assert plan_repository(wanted, was_mutable).actions == (expected,)


def test_leaving_an_exclusion_mode_drops_the_filters() -> None:
    wanted = desired(imageTagMutability="IMMUTABLE")
    with_filters = observed_as(
        wanted,
        image_tag_mutability="IMMUTABLE_WITH_EXCLUSION",
        exclusion_filters=frozenset({("WILDCARD", "x")}),
    )

    assert plan_repository(wanted, with_filters).actions == (PutImageTagMutability(NAME, "IMMUTABLE", ()),)


def test_tags_change_by_delta_only() -> None:
    wanted = desired(tags={"team": "a", "env": "prod", "cost": "1"})
    current = {
        OWNER_TAG: OWNER,
        "team": "a",
        "env": "dev",
        "added-by-hand": "x",
        "aws:cloudformation:stack-name": "s",
    }

    actions = plan_repository(wanted, observed_as(wanted, tags=current)).actions

    assert actions == (
        TagRepository(ARN, (("cost", "1"), ("env", "prod"))),
        UntagRepository(ARN, ("added-by-hand",)),
    )


def test_tag_order_is_not_a_difference() -> None:
    wanted = desired(tags={"b": "2", "a": "1"})
    reordered = dict(reversed(list(wanted.tags.items())))

    assert plan_repository(wanted, observed_as(wanted, tags=reordered)).actions == ()


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.sampled_from("xyz"), max_size=6),
    st.dictionaries(st.sampled_from("abcdefgh"), st.sampled_from("xyz"), max_size=8),
)
def test_applying_the_tag_delta_gives_exactly_the_wanted_tags(
    wanted_tags: dict[str, str], current_tags: dict[str, str]
) -> None:
    wanted = desired(tags=wanted_tags)
    current = {**current_tags, OWNER_TAG: OWNER}

    tags = dict(current)
    for action in plan_repository(wanted, observed_as(wanted, tags=current)).actions:
        if isinstance(action, TagRepository):
            tags.update(action.tags)
        elif isinstance(action, UntagRepository):
            for key in action.keys:
                del tags[key]

    assert tags == dict(wanted.tags)


def test_no_lifecycle_policy_in_the_spec_removes_the_one_in_aws() -> None:
    wanted = desired()
    stray = observed_as(wanted, lifecycle_policy=json.dumps({"rules": []}))

    assert plan_repository(wanted, stray).actions == (DeleteLifecyclePolicy(NAME),)


def test_lifecycle_policies_are_compared_semantically() -> None:
    wanted = desired(lifecyclePolicy={"rules": LIFECYCLE_RULES})
    assert wanted.lifecycle_policy is not None
    rules = wanted.lifecycle_policy["rules"]
    reshaped = {
        "rules": [
            {**rules[1], "selection": {**rules[1]["selection"], "tagPrefixList": ["release-", "v"]}},
            {**rules[0], "description": rules[0]["description"]},
        ]
    }
    changed = {"rules": [rules[0], {**rules[1], "selection": {**rules[1]["selection"], "countNumber": 21}}]}

    assert (
        plan_repository(wanted, observed_as(wanted, lifecycle_policy=json.dumps(reshaped, indent=2))).actions
        == ()
    )
    [action] = plan_repository(wanted, observed_as(wanted, lifecycle_policy=json.dumps(changed))).actions
    assert isinstance(action, PutLifecyclePolicy)
    assert json.loads(action.text) == wanted.lifecycle_policy


def test_a_lifecycle_policy_aws_holds_that_is_not_one_is_replaced() -> None:
    wanted = desired(lifecyclePolicy={"rules": LIFECYCLE_RULES})

    [action] = plan_repository(wanted, observed_as(wanted, lifecycle_policy="not json")).actions

    assert isinstance(action, PutLifecyclePolicy)


def test_no_access_in_the_spec_removes_the_repository_policy_in_aws() -> None:
    wanted = desired()
    stray = observed_as(wanted, repository_policy=json.dumps({"Statement": [{"Effect": "Allow"}]}))

    assert plan_repository(wanted, stray).actions == (DeleteRepositoryPolicy(NAME),)


# The shapes AWS (or a human with the console) returns for the same policy: statements re-ordered,
# one-element lists collapsed, accounts spelled as root ARNs, Version defaulted, whitespace.
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Pull",
            "Effect": "Allow",
            "Principal": {"AWS": ["111122223333", "arn:aws:iam::444455556666:role/r"]},
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
        },
        {
            "Sid": "Org",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "ecr:BatchGetImage",
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": ["o-aaaaaaaaaa", "o-bbbbbbbbbb"]}},
        },
    ],
}
EQUIVALENT_POLICIES = {
    "statements-reordered": {**POLICY, "Statement": list(reversed(POLICY["Statement"]))},
    "account-as-root-arn": {
        **POLICY,
        "Statement": [
            {
                **POLICY["Statement"][0],
                "Principal": {"AWS": ["arn:aws:iam::444455556666:role/r", "arn:aws:iam::111122223333:root"]},
            },
            POLICY["Statement"][1],
        ],
    },
    "single-values-as-lists": {
        **POLICY,
        "Statement": [POLICY["Statement"][0], {**POLICY["Statement"][1], "Action": ["ecr:BatchGetImage"]}],
    },
    "list-order": {
        **POLICY,
        "Statement": [
            {**POLICY["Statement"][0], "Action": ["ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]},
            {
                **POLICY["Statement"][1],
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": ["o-bbbbbbbbbb", "o-aaaaaaaaaa"]}},
            },
        ],
    },
    "star-principal-as-aws-star": {
        **POLICY,
        "Statement": [POLICY["Statement"][0], {**POLICY["Statement"][1], "Principal": {"AWS": "*"}}],
    },
    "version-left-out": {"Statement": POLICY["Statement"]},
}
DIFFERENT_POLICIES = {
    "principal-removed": {
        **POLICY,
        "Statement": [
            {**POLICY["Statement"][0], "Principal": {"AWS": ["111122223333"]}},
            POLICY["Statement"][1],
        ],
    },
    "action-added": {
        **POLICY,
        "Statement": [
            POLICY["Statement"][0],
            {**POLICY["Statement"][1], "Action": ["ecr:BatchGetImage", "ecr:PutImage"]},
        ],
    },
    "effect-flipped": {
        **POLICY,
        "Statement": [POLICY["Statement"][0], {**POLICY["Statement"][1], "Effect": "Deny"}],
    },
    "old-version": {**POLICY, "Version": "2008-10-17"},
    "statement-dropped": {**POLICY, "Statement": POLICY["Statement"][:1]},
}


@pytest.mark.parametrize("shape", sorted(EQUIVALENT_POLICIES))
def test_a_policy_aws_reshaped_is_not_rewritten(shape: str) -> None:
    wanted = desired(access={"policy": json.dumps(POLICY)})
    text = json.dumps(EQUIVALENT_POLICIES[shape], indent=4)

    assert plan_repository(wanted, observed_as(wanted, repository_policy=text)).actions == ()


@pytest.mark.parametrize("change", sorted(DIFFERENT_POLICIES))
def test_a_policy_changed_in_meaning_is_put_back(change: str) -> None:
    wanted = desired(access={"policy": json.dumps(POLICY)})
    text = json.dumps(DIFFERENT_POLICIES[change])

    [action] = plan_repository(wanted, observed_as(wanted, repository_policy=text)).actions

    assert action == SetRepositoryPolicy(NAME, render_policy(POLICY))


def test_compiled_grants_are_not_rewritten_when_aws_returns_them_reshaped() -> None:
    wanted = desired(access={"grants": [{"principals": ["210987654321", "o-abcdefghij"], "actions": "pull"}]})
    assert wanted.repository_policy is not None
    statements = wanted.repository_policy["Statement"]
    as_aws_returns = {
        "Version": "2012-10-17",
        "Statement": [
            {**statements[1], "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}}},
            {**statements[0], "Principal": {"AWS": "arn:aws:iam::210987654321:root"}},
        ],
    }

    assert (
        plan_repository(wanted, observed_as(wanted, repository_policy=json.dumps(as_aws_returns))).actions
        == ()
    )


def test_a_repository_policy_aws_holds_that_is_not_json_is_replaced() -> None:
    wanted = desired(access={"policy": json.dumps(POLICY)})

    assert plan_repository(wanted, observed_as(wanted, repository_policy="{")).actions == (
        SetRepositoryPolicy(NAME, render_policy(POLICY)),
    )


def test_actions_come_in_a_stable_order_and_name_what_they_change() -> None:
    wanted = desired(
        scanOnPush=True,
        imageTagMutability="IMMUTABLE",
        tags={"a": "1"},
        access={"policy": json.dumps(POLICY)},
    )
    everything_off = observed_as(
        wanted, tags={}, scan_on_push=False, image_tag_mutability="MUTABLE", repository_policy=None
    )

    actions = plan_repository(wanted, everything_off, adoption_allowed=True).actions

    assert changed_aspects(actions) == (
        "ownership",
        "image tag mutability",
        "scan on push",
        "tags",
        "repository policy",
    )


# --- identity policies ------------------------------------------------------------------------------

STAMP = identity_policy_stamp("default", "team", "app")
POLICY_NAME = STAMP.name


def allow(*names: str) -> Any:
    """A role allow-list admitting these role names of the test account."""
    return lambda arn: arn in {f"arn:aws:iam::{ACCOUNT}:role/{name}" for name in names}


def identity_plan(roles: Sequence[IdentityRole], **arguments: Any) -> IdentityPlan:
    """``plan_identity_policies`` for this module's repository and stamp."""
    return plan_identity_policies(roles, stamp=STAMP, repository=description(), **arguments)


def test_identity_policies_are_put_where_missing_or_different_and_removed_where_no_longer_wanted() -> None:
    roles = (IdentityRole("reader", "pull"), IdentityRole("writer", "push"))
    observed = {
        "reader": identity_policy_document(ARN, "pull", STAMP),
        "writer": identity_policy_document(ARN, "pull", STAMP),  # someone downgraded it
        "gone": identity_policy_document(ARN, "pull", STAMP),  # left the spec; status hinted at it
    }

    plan = identity_plan(roles, observed=observed, role_allowed=allow("reader", "writer"))

    assert plan.refusal is None
    assert plan.actions == (
        PutRolePolicy("writer", POLICY_NAME, render_policy(identity_policy_document(ARN, "push", STAMP))),
        DeleteRolePolicy("gone", POLICY_NAME),
    )
    assert plan.in_place == ("gone", "reader", "writer")
    assert roles_after(plan.in_place, plan.actions) == ("reader", "writer")


def test_a_policy_is_deleted_only_when_iam_shows_it_is_this_objects() -> None:
    # F3: status named roles the object never wrote to. Only what IAM holds under this object's name
    # *and* stamped with its Sid prefix is deleted; the rest is left alone or was never there.
    other = identity_policy_stamp("default", "team", "other")
    observed = {
        "victim-role": None,  # no policy of this object's name
        "human-made": {"Statement": [{"Sid": "Prod", "Effect": "Allow", "Action": "*", "Resource": "*"}]},
        "unstamped": identity_policy_document(ARN, "pull", other),
        "mine": identity_policy_document(ARN, "pull", STAMP),
    }

    plan = identity_plan((), observed=observed)

    assert plan.actions == (DeleteRolePolicy("mine", POLICY_NAME),)
    assert plan.left_alone == ("human-made", "unstamped")
    assert roles_after(plan.in_place, plan.actions) == ()


def test_the_stamp_recognises_only_documents_every_statement_of_which_carries_it() -> None:
    mine = identity_policy_document(ARN, "pull", STAMP)
    widened = {**mine, "Statement": [*mine["Statement"], {"Effect": "Allow", "Action": "*", "Resource": "*"}]}

    assert is_own_identity_policy(mine, STAMP)
    assert is_own_identity_policy({**mine, "Statement": mine["Statement"][0]}, STAMP)
    assert not is_own_identity_policy(widened, STAMP)
    assert not is_own_identity_policy(
        identity_policy_document(ARN, "pull", identity_policy_stamp("x", "team", "app")), STAMP
    )
    assert not is_own_identity_policy({"Statement": []}, STAMP)
    assert not is_own_identity_policy(None, STAMP)


def test_policy_names_and_stamps_are_derived_from_cluster_namespace_and_name() -> None:
    assert identity_policy_stamp("default", "team", "app") == STAMP
    assert STAMP.name == "ecr-operator.team.app@default"
    assert STAMP.sid_prefix.startswith("EcrOperator")
    assert STAMP.sid_prefix.isalnum()  # IAM's Sid grammar
    assert STAMP.sid_prefix != identity_policy_stamp("default", "team", "app2").sid_prefix
    assert STAMP.sid_prefix != identity_policy_stamp("prod", "team", "app").sid_prefix


def test_a_role_the_admin_does_not_allow_is_refused_and_nothing_is_changed() -> None:
    # F13: roleName naming another team's role.
    roles = (IdentityRole("team-deployer", "pull"), IdentityRole("other-teams-role", "pullPush"))
    observed = {
        "team-deployer": None,
        "other-teams-role": None,
        "gone": identity_policy_document(ARN, "pull", STAMP),
    }

    plan = identity_plan(roles, observed=observed, role_allowed=allow("team-deployer"), namespace="team")

    assert plan.actions == ()
    assert plan.refusal is not None
    assert plan.refusal.reason is Reason.IDENTITY_ROLE_NOT_ALLOWED
    assert f"arn:aws:iam::{ACCOUNT}:role/other-teams-role" in plan.refusal.message
    assert "team-deployer" not in plan.refusal.message
    assert "ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES" in plan.refusal.message
    assert plan.in_place == ("gone",)


def test_by_default_no_role_may_carry_an_identity_policy() -> None:
    plan = identity_plan((IdentityRole("deployer", "pull"),), observed={"deployer": None})

    assert plan.refusal is not None
    assert plan.refusal.reason is Reason.IDENTITY_ROLE_NOT_ALLOWED


def test_the_allow_list_matches_the_roles_name_in_the_registry_account_whatever_path_roleArn_claims() -> None:
    settings = Settings(
        allowed_identity_policy_roles=(
            {"pattern": f"arn:aws:iam::{ACCOUNT}:role/team-*", "namespaces": ["team"]},
        )
    )
    seen: list[str] = []

    def allowed(arn: str) -> bool:
        seen.append(arn)
        return settings.identity_role_allowed(arn, "team")

    roles = identity_roles(
        spec(
            access={
                "identityPolicies": [
                    {"roleArn": f"arn:aws:iam::{ACCOUNT}:role/team-x/victim", "actions": "pull"},
                    {"roleName": "team-ci", "actions": "push"},
                ]
            }
        ).access
    )
    plan = identity_plan(roles, observed={}, role_allowed=allowed, namespace="team")

    assert sorted(seen) == [f"arn:aws:iam::{ACCOUNT}:role/team-ci", f"arn:aws:iam::{ACCOUNT}:role/victim"]
    assert plan.refusal is not None
    assert plan.refusal.message.count("arn:") == 1
    assert not settings.identity_role_allowed(f"arn:aws:iam::{ACCOUNT}:role/team-ci", "other")


def test_an_identity_policy_iam_returns_reshaped_is_not_rewritten() -> None:
    document = identity_policy_document(ARN, "pull", STAMP)
    reshaped = {"Version": document["Version"], "Statement": list(reversed(document["Statement"]))}
    reshaped["Statement"][0] = {**reshaped["Statement"][0], "Action": [document["Statement"][1]["Action"]]}

    plan = identity_plan(
        (IdentityRole("reader", "pull"),), observed={"reader": reshaped}, role_allowed=allow("reader")
    )

    assert plan.actions == ()


def test_an_unstamped_policy_of_an_earlier_version_is_rewritten_on_a_wanted_role() -> None:
    legacy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EcrOperatorRepositoryAccess",
                "Effect": "Allow",
                "Action": list(PULL_ACTIONS),
                "Resource": ARN,
            }
        ],
    }

    plan = identity_plan(
        (IdentityRole("reader", "pull"),), observed={"reader": legacy}, role_allowed=allow("reader")
    )

    assert plan.actions == (
        PutRolePolicy("reader", POLICY_NAME, render_policy(identity_policy_document(ARN, "pull", STAMP))),
    )


def test_the_identity_policy_grants_the_repository_and_the_registry_login_only() -> None:
    document = identity_policy_document(ARN, "pull", STAMP)

    assert document["Statement"] == [
        {
            "Sid": f"{STAMP.sid_prefix}RepositoryAccess",
            "Effect": "Allow",
            "Action": list(PULL_ACTIONS),
            "Resource": ARN,
        },
        {
            "Sid": f"{STAMP.sid_prefix}AuthorizationToken",
            "Effect": "Allow",
            "Action": "ecr:GetAuthorizationToken",
            "Resource": "*",
        },
    ]


def test_a_role_of_another_account_is_refused() -> None:
    plan = identity_plan(
        (IdentityRole("deployer", "pull", "999999999999"),), observed={}, role_allowed=lambda _arn: True
    )

    assert plan.actions == ()
    assert plan.refusal is not None
    assert plan.refusal.reason is Reason.INVALID_SPEC
    assert "deployer" in plan.refusal.message


def test_status_gives_role_names_only_as_a_bounded_hint() -> None:
    status = {
        "identityPolicies": [
            {"roleName": "b", "policyName": "p"},
            {"roleName": "a", "policyName": "prod-access"},
            {"bogus": 1},
            {"roleName": "x" * 65},
            *({"roleName": f"r{index}"} for index in range(100)),
        ]
    }

    hinted = identity_roles_in_status(status)

    assert hinted[:2] == ("a", "b")
    assert len(hinted) == 2 + 64 - 4
    assert identity_roles_in_status(None) == ()
    assert identity_roles_in_status({"identityPolicies": "victim-role"}) == ()


# --- deletion ---------------------------------------------------------------------------------------


def owned(tags: dict[str, str] | None = None) -> ObservedRepository:
    return ObservedRepository(description(), {OWNER_TAG: OWNER} if tags is None else tags)


MINE = {"r": identity_policy_document(ARN, "pull", STAMP)}


def deletion_plan(**arguments: Any) -> DeletionPlan:
    """``plan_deletion`` for this module's object (its name, owner and stamp)."""
    return plan_deletion(repository_name=NAME, owner=OWNER, stamp=STAMP, **arguments)


@pytest.mark.parametrize(
    ("policy", "outcome", "repository_action"),
    [
        (DeletionPolicy.RETAIN, "retain", None),
        (DeletionPolicy.DELETE_IF_EMPTY, "delete", DeleteRepository(NAME, force=False)),
        (DeletionPolicy.FORCE_DELETE, "delete", DeleteRepository(NAME, force=True)),
    ],
)
def test_deletion_follows_the_deletion_policy_and_always_removes_identity_policies(
    policy: DeletionPolicy, outcome: str, repository_action: DeleteRepository | None
) -> None:
    plan = deletion_plan(
        deletion_policy=policy,
        observed=owned(),
        identity_policies=MINE,
    )

    assert plan.outcome == outcome
    assert plan.actions[0] == DeleteRolePolicy("r", POLICY_NAME)
    assert plan.actions[1:] == ((repository_action,) if repository_action else ())


def test_deletion_removes_only_policies_iam_shows_are_this_objects() -> None:
    # F3 at deletion: status said {victim-role, prod-access}; the operator looked under its own name.
    plan = deletion_plan(
        deletion_policy=DeletionPolicy.RETAIN,
        observed=None,
        identity_policies={
            "victim-role": None,
            "renamed-by-hand": {
                "Statement": [{"Sid": "X", "Effect": "Allow", "Action": "*", "Resource": "*"}]
            },
            **MINE,
        },
    )

    assert plan.actions == (DeleteRolePolicy("r", POLICY_NAME),)
    assert plan.left_alone == ("renamed-by-hand",)


@pytest.mark.parametrize("tags", [{OWNER_TAG: "default/other/app"}, {}], ids=["other-owner", "no-owner-tag"])
def test_force_delete_never_deletes_a_repository_that_is_not_provably_the_objects(
    tags: dict[str, str],
) -> None:
    plan = deletion_plan(
        deletion_policy=DeletionPolicy.FORCE_DELETE,
        observed=owned(tags),
        identity_policies={},
    )

    assert plan.outcome == "not-owned"
    assert plan.actions == ()


@pytest.mark.parametrize("policy", [DeletionPolicy.FORCE_DELETE, DeletionPolicy.DELETE_IF_EMPTY])
def test_an_adopted_repository_is_retained_unless_the_admin_allows_deleting_adopted_ones(
    policy: DeletionPolicy,
) -> None:
    adopted = owned({OWNER_TAG: OWNER, ADOPTED_TAG: "true"})

    kept = deletion_plan(
        deletion_policy=policy,
        observed=adopted,
        identity_policies=MINE,
        namespace="team",
    )
    allowed = deletion_plan(
        deletion_policy=policy,
        observed=adopted,
        identity_policies=MINE,
        adopted_deletion_allowed=True,
    )

    assert kept.outcome == "adopted"
    assert kept.actions == (DeleteRolePolicy("r", POLICY_NAME),)
    assert "ECR_OPERATOR_ADOPTED_DELETION_NAMESPACES" in kept.message
    assert "namespace team" in kept.message
    assert allowed.outcome == "delete"
    assert allowed.actions[-1] == DeleteRepository(NAME, force=policy is DeletionPolicy.FORCE_DELETE)


@pytest.mark.parametrize(
    ("policy", "outcome"),
    [(DeletionPolicy.RETAIN, "retain"), (DeletionPolicy.FORCE_DELETE, "gone")],
    ids=["retain-needs-no-look-at-the-repository", "a-gone-repository-only-removes-its-policies"],
)
def test_without_a_repository_deletion_has_nothing_to_do(policy: DeletionPolicy, outcome: str) -> None:
    plan = deletion_plan(deletion_policy=policy, observed=None, identity_policies={})

    assert (plan.outcome, plan.actions) == (outcome, ())


# --- failures ---------------------------------------------------------------------------------------


def test_throttling_and_outages_are_transient() -> None:
    throttled = classify_aws_failure(
        "ecr", "CreateRepository", "ThrottlingException", "Rate exceeded", throttled=True
    )
    unavailable = classify_aws_failure("ecr", "CreateRepository", "InternalFailure", "oops", http_status=500)
    network = classify_aws_failure("ecr", "CreateRepository", "NetworkError", "connection reset")

    assert (throttled.reason, throttled.kind) == (Reason.THROTTLED, "transient")
    assert (unavailable.reason, unavailable.kind) == (Reason.AWS_UNAVAILABLE, "transient")
    assert network.kind == "transient"


def test_access_denied_names_the_missing_permission() -> None:
    denied = classify_aws_failure(
        "ecr", "PutLifecyclePolicy", "AccessDeniedException", "User: arn:aws:iam::1:role/op is not authorized"
    )
    create = classify_aws_failure("ecr", "CreateRepository", "AccessDeniedException", "no")
    iam = classify_aws_failure("iam", "PutRolePolicy", "AccessDenied", "no")

    assert denied.reason is Reason.ACCESS_DENIED
    assert denied.kind == "failed"
    assert "may not call ecr:PutLifecyclePolicy" in denied.message
    assert "is not authorized" in denied.message
    assert "ecr:TagResource" in create.message
    assert "iam:PutRolePolicy" in iam.message


@pytest.mark.parametrize(
    ("operation", "code", "reason"),
    [
        ("CreateRepository", "KmsException", Reason.KMS_KEY_INVALID),
        ("SetRepositoryPolicy", "InvalidParameterException", Reason.POLICY_REJECTED),
        ("PutRolePolicy", "MalformedPolicyDocument", Reason.POLICY_REJECTED),
        ("PutLifecyclePolicy", "InvalidParameterException", Reason.LIFECYCLE_POLICY_REJECTED),
        ("CreateRepository", "InvalidParameterException", Reason.INVALID_PARAMETER),
        ("PutRolePolicy", "NoSuchEntity", Reason.ROLE_NOT_FOUND),
        ("PutRolePolicy", "LimitExceeded", Reason.LIMIT_EXCEEDED),
        ("TagResource", "TooManyTagsException", Reason.LIMIT_EXCEEDED),
        ("CreateRepository", "SomethingNew", Reason.AWS_ERROR),
    ],
)
def test_user_actionable_failures_get_their_own_reason(operation: str, code: str, reason: Reason) -> None:
    problem = classify_aws_failure("ecr", operation, code, "details")

    assert (problem.reason, problem.kind) == (reason, "failed")
    assert "details" in problem.message


def test_long_aws_messages_are_shortened() -> None:
    problem = classify_aws_failure("ecr", "SetRepositoryPolicy", "InvalidParameterException", "x" * 5000)

    assert len(problem.message) < 700


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap() -> None:
    low, high = (lambda: 0.0), (lambda: 0.999)

    assert [backoff_delay(retry, low) for retry in range(4)] == [2.5, 5.0, 10.0, 20.0]
    assert backoff_delay(0, high) < 5.0
    assert backoff_delay(50, high) <= 300.0
    assert backoff_delay(50, low) == 150.0
    delays = {round(backoff_delay(3, random.Random(seed).random), 3) for seed in range(20)}
    assert len(delays) > 10


# --- status and Events ------------------------------------------------------------------------------

CREATED = SyncResult(
    repository=description(),
    applied=(plan_repository(desired(), None).actions[0],),
    managed_policies=(),
)


def repository_status_patch(status: dict[str, Any], result: SyncResult, **when: Any) -> dict[str, Any] | None:
    """What the whole status a reconcile computes changes on the object, as a merge patch (None: nothing;
    a None value: the field goes): the write the controller makes, or skips."""
    before = owned_status(status)
    after = repository_status(status, result, **when)
    changed = {key: value for key, value in after.items() if before.get(key) != value}
    changed |= {key: None for key in before if key not in after}
    return changed or None


def conditions_of(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {entry["type"]: (entry["status"], entry["reason"]) for entry in status["conditions"]}


def test_a_created_repository_reports_ready_with_uri_and_sync_time() -> None:
    patch = repository_status_patch({}, CREATED, generation=1, now=NOW, drift=False)

    assert patch is not None
    assert conditions_of(patch) == {"Ready": ("True", "RepositoryReady"), "Synced": ("True", "UpToDate")}
    assert patch["repositoryUri"] == URI
    assert patch["repositoryArn"] == ARN
    assert patch["registryId"] == ACCOUNT
    assert patch["observedGeneration"] == 1
    assert patch["lastSyncTime"] == "2026-01-02T03:04:05Z"
    assert "driftCorrections" not in patch
    assert "identityPolicies" not in patch


def test_an_idle_pass_writes_nothing_and_moves_no_timestamp() -> None:
    status = repository_status_patch({}, CREATED, generation=1, now=NOW, drift=False)
    assert status is not None

    idle = SyncResult(repository=description(), managed_policies=())

    assert (
        repository_status_patch(status, idle, generation=1, now=NOW + timedelta(hours=1), drift=True) is None
    )


def test_drift_repairs_are_counted_per_aspect() -> None:
    status = {"driftCorrections": 2, "observedGeneration": 1}
    repaired = SyncResult(
        repository=description(),
        applied=(
            TagRepository(ARN, (("a", "1"),)),
            UntagRepository(ARN, ("b",)),
            DeleteLifecyclePolicy(NAME),
        ),
    )

    patch = repository_status_patch(status, repaired, generation=1, now=NOW, drift=True)

    assert patch is not None
    assert patch["driftCorrections"] == 4


def test_a_refused_object_advertises_no_repository() -> None:
    status = repository_status_patch({}, CREATED, generation=1, now=NOW, drift=False)
    assert status is not None
    conflict = SyncResult(problem=Problem(Reason.CONFLICT, "taken", "refused"))

    patch = repository_status_patch(status, conflict, generation=2, now=NOW, drift=False)

    assert patch is not None
    assert conditions_of(patch) == {"Ready": ("False", "Conflict"), "Synced": ("False", "Conflict")}
    assert (patch["repositoryUri"], patch["repositoryArn"], patch["registryId"]) == (None, None, None)


def test_a_transient_error_leaves_a_working_repository_ready() -> None:
    status = repository_status_patch({}, CREATED, generation=1, now=NOW, drift=False)
    assert status is not None
    throttled = SyncResult(
        repository=description(), problem=Problem(Reason.THROTTLED, "slow down", "transient")
    )

    patch = repository_status_patch(status, throttled, generation=1, now=NOW, drift=True)

    assert patch is not None
    assert conditions_of(patch) == {"Ready": ("True", "RepositoryReady"), "Synced": ("False", "Throttled")}


def test_a_transient_error_does_not_mark_the_generation_reconciled() -> None:
    status = repository_status_patch({}, CREATED, generation=1, now=NOW, drift=False)
    assert status is not None
    throttled = SyncResult(
        repository=description(), problem=Problem(Reason.THROTTLED, "slow down", "transient")
    )
    denied = SyncResult(repository=description(), problem=Problem(Reason.ACCESS_DENIED, "no", "failed"))

    assert "observedGeneration" not in (
        repository_status_patch(status, throttled, generation=2, now=NOW, drift=False) or {}
    )
    assert (repository_status_patch(status, denied, generation=2, now=NOW, drift=False) or {})[
        "observedGeneration"
    ] == 2


def test_a_transient_error_before_the_repository_exists_is_not_ready() -> None:
    throttled = SyncResult(problem=Problem(Reason.THROTTLED, "slow down", "transient"))

    conditions = repository_conditions(throttled, 1, {})

    assert [(c.type, c.status, c.reason) for c in conditions] == [
        ("Ready", "False", "Throttled"),
        ("Synced", "False", "Throttled"),
    ]


def test_identity_policies_in_status_change_only_when_they_do() -> None:
    put = SyncResult(repository=description(), managed_policies=(ManagedPolicy("r", "p"),))
    status: dict[str, Any] = {"identityPolicies": [{"roleName": "r", "policyName": "p"}]}

    assert repository_status_patch({}, put, generation=1, now=NOW, drift=False)["identityPolicies"] == [
        {"roleName": "r", "policyName": "p"}
    ]
    assert "identityPolicies" not in (
        repository_status_patch(status, put, generation=1, now=NOW, drift=False) or {}
    )
    removed = SyncResult(repository=description(), managed_policies=())
    assert (
        repository_status_patch(status, removed, generation=1, now=NOW, drift=False)["identityPolicies"]
        is None
    )


def test_converged_means_this_generation_synced() -> None:
    status = repository_status_patch({}, CREATED, generation=3, now=NOW, drift=False)

    assert was_converged(status, 3)
    assert not was_converged(status, 4)
    assert not was_converged({}, 1)


def test_events_announce_real_changes_once() -> None:
    updated = SyncResult(repository=description(), applied=(PutImageScanningConfiguration(NAME, True),))
    adopted = SyncResult(
        repository=description(), applied=(ClaimRepository(ARN, OWNER), TagRepository(ARN, ()))
    )
    idle = SyncResult(repository=description())

    assert [(e.type, e.reason) for e in repository_events({}, CREATED, drift=False)] == [
        ("Normal", "RepositoryCreated")
    ]
    assert repository_events({}, updated, drift=False)[0].message == f"Updated scan on push of {URI}."
    assert (
        repository_events({}, adopted, drift=False)[0].message
        == f"Adopted ECR repository {URI} and updated tags."
    )
    [drift] = repository_events({}, updated, drift=True)
    assert (drift.type, drift.reason) == ("Warning", "DriftCorrected")
    assert "scan on push" in drift.message
    assert repository_events({}, idle, drift=True) == []


def test_a_failure_is_announced_when_it_starts_not_on_every_retry() -> None:
    denied = SyncResult(problem=Problem(Reason.ACCESS_DENIED, "no", "failed"))
    status = {
        "conditions": repository_status_patch({}, denied, generation=1, now=NOW, drift=False)["conditions"]
    }

    assert [(e.type, e.reason) for e in repository_events({}, denied, drift=False)] == [
        ("Warning", "AccessDenied")
    ]
    assert repository_events(status, denied, drift=False) == []
    assert [
        (e.type, e.reason)
        for e in repository_events(status, SyncResult(repository=description()), drift=False)
    ] == [("Normal", "RepositoryRecovered")]


def test_the_whole_status_holds_only_what_this_controller_owns() -> None:
    pull_secret_ready = {"type": "PullSecretReady", "status": "True", "reason": "SecretsWritten"}
    created = repository_status({}, CREATED, generation=1, now=NOW, drift=False)
    on_the_object = {**created, "conditions": [*created["conditions"], pull_secret_ready]}

    assert [entry["type"] for entry in owned_status(on_the_object)["conditions"]] == ["Ready", "Synced"]
    idle = SyncResult(repository=description(), managed_policies=())
    assert repository_status(on_the_object, idle, generation=1, now=NOW, drift=True) == owned_status(
        on_the_object
    )


def test_a_deletion_that_cannot_finish_says_why_and_which_policies_remain() -> None:
    created = repository_status(
        {},
        SyncResult(repository=description(), managed_policies=(ManagedPolicy("a", "p"),)),
        generation=1,
        now=NOW,
        drift=False,
    )
    not_empty = Problem(Reason.REPOSITORY_NOT_EMPTY, "still holds images", "failed")

    status = deletion_status(created, not_empty, generation=1, now=NOW, managed_policies=())

    assert conditions_of(status) == {
        "Ready": ("False", "RepositoryNotEmpty"),
        "Synced": ("False", "RepositoryNotEmpty"),
    }
    assert "identityPolicies" not in status
    assert status["repositoryUri"] == URI
    untouched = deletion_status(created, not_empty, generation=1, now=NOW, managed_policies=None)
    assert untouched["identityPolicies"] == [{"roleName": "a", "policyName": "p"}]
