"""The ECR and IAM adapters against the test world's moto server: batching, every action, every error path.

What is asserted is what AWS (moto) then holds, and how many requests moto served (its call log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from ecr_operator.aws.calls import AwsCallFailed
from ecr_operator.aws.ecr import (
    REPOSITORY_NOT_EMPTY,
    EcrRepositories,
    RegistryRef,
    RepositoryClaimedElsewhere,
)
from ecr_operator.aws.iam import IamRolePolicies
from ecr_operator.aws.session import AwsClients
from ecr_operator.metrics import Metrics
from ecr_operator.reconcile.identity import AwsIdentity
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
)
from ecr_operator.reconcile.repository.identity_policies import (
    ManagedPolicy,
    identity_policy_document,
    is_own_identity_policy,
)
from ecr_operator.reconcile.repository.vocabulary import ADOPTED_TAG, OWNER_TAG, identity_policy_stamp
from ecr_sandbox.world import World

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LIFECYCLE = {
    "rules": [
        {
            "rulePriority": 1,
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 3,
            },
            "action": {"type": "expire"},
        }
    ]
}
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
            "Action": "ecr:BatchGetImage",
        }
    ],
}
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + "a" * 64,
            "size": 2,
        },
        "layers": [],
    }
)


@pytest.fixture
def clients(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AwsClients, Metrics]]:
    for name, value in world.aws_env().items():
        monkeypatch.setenv(name, value)
    metrics = Metrics()
    yield AwsClients(metrics), metrics
    world.clear_aws_faults()


@pytest.fixture
def ecr(clients: tuple[AwsClients, Metrics]) -> EcrRepositories:
    return EcrRepositories(clients[0])


@pytest.fixture
def registry(world: World) -> RegistryRef:
    return RegistryRef(AwsIdentity(world.region))


def unique(prefix: str = "adapter") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def calls_since(world: World, mark: int, operation: str) -> int:
    return sum(1 for call in world.aws_calls()[mark:] if call.operation == operation)


def create_action(name: str, **changes: Any) -> CreateRepository:
    plain = CreateRepository(
        repository=name,
        image_tag_mutability="MUTABLE",
        exclusion_filters=(),
        scan_on_push=False,
        encryption_type="AES256",
        kms_key=None,
        tags=((OWNER_TAG, "default/ns/obj"),),
    )
    return dataclasses.replace(plain, **changes)


async def test_concurrent_describes_of_one_registry_share_one_call(
    world: World, clients: tuple[AwsClients, Metrics], ecr: EcrRepositories, registry: RegistryRef
) -> None:
    metrics = clients[1]
    names = [unique("batch") for _ in range(5)]
    for name in names:
        await ecr.apply(registry, create_action(name))
    mark = len(world.aws_calls())

    results = await asyncio.gather(*(ecr.describe(registry, name) for name in names))

    assert [result.name if result else None for result in results] == names
    assert calls_since(world, mark, "DescribeRepositories") == 1
    counted = metrics.registry.get_sample_value(
        "ecr_operator_aws_calls_total",
        {"service": "ecr", "operation": "DescribeRepositories", "outcome": "success"},
    )
    assert counted == 1


async def test_missing_names_cost_one_call_each_not_the_batch(
    world: World, ecr: EcrRepositories, registry: RegistryRef
) -> None:
    present = [unique("present") for _ in range(3)]
    absent = [unique("absent") for _ in range(2)]
    for name in present:
        await ecr.apply(registry, create_action(name))
    mark = len(world.aws_calls())

    results = await asyncio.gather(*(ecr.describe(registry, name) for name in [*present, *absent]))

    assert [result is not None for result in results] == [True, True, True, False, False]
    assert calls_since(world, mark, "DescribeRepositories") == 3


async def test_a_pass_over_250_repositories_takes_three_calls(
    world: World, ecr: EcrRepositories, registry: RegistryRef
) -> None:
    ecr_client = world.boto3_client("ecr")
    names = [f"{unique('pass')}-{index}" for index in range(250)]
    for name in names:
        ecr_client.create_repository(repositoryName=name)
    mark = len(world.aws_calls())

    results = await asyncio.gather(*(ecr.describe(registry, name) for name in names))

    assert all(result is not None for result in results)
    assert calls_since(world, mark, "DescribeRepositories") == 3


async def test_a_not_found_error_naming_no_batch_member_splits_the_batch(
    world: World, ecr: EcrRepositories, registry: RegistryRef
) -> None:
    names = [unique("split") for _ in range(4)]
    for name in names:
        await ecr.apply(registry, create_action(name))
    world.inject_aws_fault(
        "DescribeRepositories", service="ecr", code="RepositoryNotFoundException", message="gone", count=1
    )

    found = await ecr.describe_many(registry, names)

    assert sorted(found) == sorted(names)


async def test_observe_reads_settings_tags_and_policies(ecr: EcrRepositories, registry: RegistryRef) -> None:
    name = unique("observe")
    created = await ecr.apply(
        registry,
        create_action(
            name,
            image_tag_mutability="IMMUTABLE_WITH_EXCLUSION",
            exclusion_filters=(("WILDCARD", "latest"),),
            scan_on_push=True,
            encryption_type="KMS",
            kms_key="alias/team",
            tags=((OWNER_TAG, "default/ns/obj"), ("team", "a")),
        ),
    )
    assert created is not None

    bare = await ecr.observe(registry, name)
    await ecr.apply(registry, PutLifecyclePolicy(name, json.dumps(LIFECYCLE)))
    await ecr.apply(registry, SetRepositoryPolicy(name, json.dumps(POLICY)))
    full = await ecr.observe(registry, name)

    assert bare is not None
    assert full is not None
    assert bare.description == created
    assert (created.image_tag_mutability, created.exclusion_filters) == (
        "IMMUTABLE_WITH_EXCLUSION",
        frozenset({("WILDCARD", "latest")}),
    )
    assert (created.scan_on_push, created.encryption_type, created.kms_key) == (True, "KMS", "alias/team")
    assert bare.tags == {OWNER_TAG: "default/ns/obj", "team": "a"}
    assert (bare.lifecycle_policy, bare.repository_policy) == (None, None)
    assert full.lifecycle_policy is not None
    assert json.loads(full.lifecycle_policy) == LIFECYCLE
    assert full.repository_policy is not None
    assert json.loads(full.repository_policy) == POLICY
    assert await ecr.observe(registry, unique("never")) is None


async def test_every_action_changes_what_it_says(
    world: World, ecr: EcrRepositories, registry: RegistryRef
) -> None:
    boto = world.boto3_client("ecr")
    name = unique("actions")
    created = await ecr.apply(registry, create_action(name, tags=((OWNER_TAG, "o"), ("drop", "me"))))
    assert created is not None
    arn = created.arn

    for action in (
        PutImageTagMutability(name, "MUTABLE_WITH_EXCLUSION", (("WILDCARD", "dev-*"),)),
        PutImageScanningConfiguration(name, scan_on_push=True),
        TagRepository(arn, (("team", "b"),)),
        UntagRepository(arn, ("drop",)),
        PutLifecyclePolicy(name, json.dumps(LIFECYCLE)),
        SetRepositoryPolicy(name, json.dumps(POLICY)),
    ):
        await ecr.apply(registry, action)

    [repository] = boto.describe_repositories(repositoryNames=[name])["repositories"]
    assert repository["imageTagMutability"] == "MUTABLE_WITH_EXCLUSION"
    assert repository["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "dev-*"}]
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    tags = {tag["Key"]: tag["Value"] for tag in boto.list_tags_for_resource(resourceArn=arn)["tags"]}
    assert tags == {OWNER_TAG: "o", "team": "b"}

    # Removing twice is as good as once: a handler may crash after the call and run again.
    for _ in range(2):
        await ecr.apply(registry, DeleteLifecyclePolicy(name))
        await ecr.apply(registry, DeleteRepositoryPolicy(name))
    observed = await ecr.observe(registry, name)
    assert observed is not None
    assert (observed.lifecycle_policy, observed.repository_policy) == (None, None)


async def test_claiming_tags_the_repository_and_confirms_it(
    world: World, ecr: EcrRepositories, registry: RegistryRef
) -> None:
    name = unique("claim")
    arn = world.boto3_client("ecr").create_repository(repositoryName=name)["repository"]["repositoryArn"]

    mark = len(world.aws_calls())
    await ecr.apply(registry, ClaimRepository(arn, "default/ns/mine"))

    # One TagResource writes both: the repository never looks created by its object, not even briefly.
    assert await ecr.tags(registry, arn) == {OWNER_TAG: "default/ns/mine", ADOPTED_TAG: "true"}
    assert calls_since(world, mark, "TagResource") == 1


async def test_a_claim_lost_to_a_concurrent_claimant_is_reported(
    world: World, ecr: EcrRepositories, registry: RegistryRef
) -> None:
    boto = world.boto3_client("ecr")
    arn = boto.create_repository(repositoryName=unique("race"))["repository"]["repositoryArn"]
    # Hold the claim's read-back for a while, and let another claimant tag the repository meanwhile.
    world.inject_aws_fault("ListTagsForResource", service="ecr", status=None, delay=2.0, count=1)
    mark = len(world.aws_calls())
    claim = asyncio.create_task(ecr.apply(registry, ClaimRepository(arn, "default/ns/mine")))
    for _ in range(100):
        if calls_since(world, mark, "TagResource"):
            break
        await asyncio.sleep(0.05)
    await asyncio.to_thread(
        boto.tag_resource, resourceArn=arn, tags=[{"Key": OWNER_TAG, "Value": "other/ns/theirs"}]
    )

    with pytest.raises(RepositoryClaimedElsewhere) as raised:
        await claim

    assert raised.value.owner == "other/ns/theirs"


async def test_deleting_a_repository_with_images_needs_force(
    world: World, ecr: EcrRepositories, registry: RegistryRef
) -> None:
    boto = world.boto3_client("ecr")
    name = unique("delete")
    await ecr.apply(registry, create_action(name))
    boto.put_image(repositoryName=name, imageManifest=MANIFEST, imageTag="v1")

    with pytest.raises(AwsCallFailed) as refused:
        await ecr.apply(registry, DeleteRepository(name, force=False))
    await ecr.apply(registry, DeleteRepository(name, force=True))
    await ecr.apply(registry, DeleteRepository(name, force=True))

    assert refused.value.code == REPOSITORY_NOT_EMPTY
    assert await ecr.describe(registry, name) is None


async def test_throttling_beyond_the_sdk_retries_surfaces_as_throttled(
    world: World, clients: tuple[AwsClients, Metrics], ecr: EcrRepositories, registry: RegistryRef
) -> None:
    metrics = clients[1]
    world.inject_aws_fault("CreateRepository", service="ecr", count=4)

    with pytest.raises(AwsCallFailed) as raised:
        await ecr.apply(registry, create_action(unique("throttled")))

    assert raised.value.throttled
    assert raised.value.operation == "CreateRepository"
    throttles = metrics.registry.get_sample_value(
        "ecr_operator_aws_throttles_total", {"service": "ecr", "operation": "CreateRepository"}
    )
    assert throttles == 4


async def test_access_denied_keeps_its_code_and_message(
    world: World, ecr: EcrRepositories, registry: RegistryRef
) -> None:
    world.inject_aws_fault(
        "CreateRepository",
        service="ecr",
        code="AccessDeniedException",
        message="not authorized to perform: ecr:CreateRepository",
    )

    with pytest.raises(AwsCallFailed) as raised:
        await ecr.apply(registry, create_action(unique("denied")))

    assert (raised.value.code, raised.value.throttled) == ("AccessDeniedException", False)
    assert "ecr:CreateRepository" in raised.value.message


async def test_identity_policies_are_put_read_and_removed(
    world: World, clients: tuple[AwsClients, Metrics]
) -> None:
    iam = IamRolePolicies(clients[0])
    identity = AwsIdentity(world.region)
    role = unique("role")
    world.boto3_client("iam").create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    stamp = identity_policy_stamp("default", "ns", "obj")
    policy = ManagedPolicy(role, stamp.name)
    document = identity_policy_document(
        f"arn:aws:ecr:us-east-1:{world.account_id}:repository/x", "pull", stamp
    )

    assert await iam.document(identity, policy) is None
    await iam.apply(identity, PutRolePolicy(role, policy.policy_name, json.dumps(document)))
    assert await iam.document(identity, policy) == document
    assert is_own_identity_policy(await iam.document(identity, policy), stamp)  # the stamp survives IAM
    for _ in range(2):
        await iam.apply(identity, DeleteRolePolicy(role, policy.policy_name))
    assert await iam.document(identity, policy) is None
    assert await iam.document(identity, ManagedPolicy(unique("no-role"), "p")) is None

    with pytest.raises(AwsCallFailed) as missing_role:
        await iam.apply(identity, PutRolePolicy(unique("no-role"), "p", json.dumps(document)))
    assert missing_role.value.code == "NoSuchEntity"
