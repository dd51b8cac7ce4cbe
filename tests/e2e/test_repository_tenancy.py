"""Tenants share a cluster and an AWS account: no tenant can take over or delete another's repository."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from repository_support import (
    Operator,
    apply,
    calls_since,
    condition,
    describe,
    events,
    eventually,
    namespaces_fixture,  # noqa: F401 -- the ``namespaces`` fixture
    push_image,
    repository,
    start,
    status_of,
    tags_of,
    wait_for_condition,
    wait_for_generation,
    wait_until_gone,
)

from ecr_sandbox.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

OWNER_TAG = "ecr-operator.io/owner"


def test_a_second_object_claiming_a_repository_gets_conflict_and_the_first_keeps_working(
    world: World, operator: Operator, namespaces: Callable[[], str]
) -> None:
    first, second = namespaces(), namespaces()
    shared = f"{first}/app"
    start(operator, [first, second])
    apply(world, repository(first, "app", tags={"team": "first"}))
    wait_for_condition(world, first, "app")

    apply(world, repository(second, "app", repositoryName=shared, scanOnPush=True, tags={"team": "second"}))
    refused = wait_for_condition(world, second, "app", status="False", reason="Conflict")

    assert f"belongs to EcrRepository {first}/app" in condition(refused)["message"]
    assert "repositoryUri" not in refused["status"]
    found = describe(world, shared)
    assert found is not None
    assert found["imageScanningConfiguration"] == {"scanOnPush": False}
    assert tags_of(world, found["repositoryArn"]) == {"team": "first", OWNER_TAG: f"default/{first}/app"}
    assert ("Warning", "Conflict") in [event[:2] for event in events(world, second, "app")]

    apply(world, repository(first, "app", tags={"team": "first", "still": "mine"}))
    wait_for_generation(world, first, "app", 2)
    assert tags_of(world, found["repositoryArn"])["still"] == "mine"
    assert condition(wait_for_condition(world, first, "app"))["reason"] == "RepositoryReady"


def test_a_tenant_cannot_adopt_and_force_delete_another_namespaces_repository(
    world: World, operator: Operator, namespaces: Callable[[], str]
) -> None:
    victim, attacker = namespaces(), namespaces()
    target = f"{victim}/data"
    start(operator, [victim, attacker])
    apply(world, repository(victim, "data"))
    wait_for_condition(world, victim, "data")
    push_image(world, target)

    apply(world, repository(attacker, "grab", repositoryName=target, deletionPolicy="ForceDelete"))
    wait_for_condition(world, attacker, "grab", status="False", reason="Conflict")
    world.kubectl("delete", "ecrrepository", "grab", "--namespace", attacker)
    wait_until_gone(world, attacker, "grab")
    assert ("Warning", "RepositoryNotOwned") in [event[:2] for event in events(world, attacker, "grab")]

    found = describe(world, target)
    assert found is not None
    assert world.boto3_client("ecr").list_images(repositoryName=target)["imageIds"] != []
    assert tags_of(world, found["repositoryArn"])[OWNER_TAG] == f"default/{victim}/data"
    assert condition(wait_for_condition(world, victim, "data"))["status"] == "True"


def test_a_repository_created_by_someone_else_meanwhile_is_not_taken_over(
    world: World, operator: Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    start(operator, [namespace])
    # Hold the operator's CreateRepository at the door while another cluster creates the repository.
    world.inject_aws_fault("CreateRepository", service="ecr", status=None, delay=3.0, count=1)
    mark = len(world.aws_calls())

    apply(world, repository(namespace, "app"))
    eventually(
        "the operator to look for the repository", lambda: calls_since(world, mark, "DescribeRepositories")
    )
    time.sleep(0.5)
    world.boto3_client("ecr").create_repository(
        repositoryName=name, tags=[{"Key": OWNER_TAG, "Value": f"other/{namespace}/app"}]
    )
    refused = wait_for_condition(world, namespace, "app", status="False", reason="Conflict")

    assert "of cluster 'other'" in condition(refused)["message"]
    assert [call.status for call in calls_since(world, mark, "CreateRepository")] == [200, 400]
    assert not [
        call for call in calls_since(world, mark) if call.operation in ("TagResource", "UntagResource")
    ]


def test_role_arns_are_honoured_only_where_the_admin_allows_them(
    world: World, operator: Operator, namespaces: Callable[[], str]
) -> None:
    allowed, other = namespaces(), namespaces()
    role_arn = f"arn:aws:iam::{world.account_id}:role/ecr-{allowed}"
    start(
        operator,
        [allowed, other],
        ECR_OPERATOR_ALLOWED_ROLE_ARNS=json.dumps(
            [{"pattern": f"arn:aws:iam::{world.account_id}:role/ecr-*", "namespaces": [allowed]}]
        ),
    )
    registry = {"region": world.region, "roleArn": role_arn}
    mark = len(world.aws_calls())

    apply(world, repository(other, "app", registry=registry))
    refused = wait_for_condition(world, other, "app", status="False", reason="RoleNotAllowed")
    assert (
        f"registry.roleArn {role_arn} is not allowed for namespace {other}" in condition(refused)["message"]
    )
    assert calls_since(world, mark) == []
    assert describe(world, f"{other}/app") is None

    # The first attempt to assume the role is refused by STS: the condition names that permission.
    world.inject_aws_fault(
        "AssumeRole", service="sts", status=403, code="AccessDenied", message="not authorized"
    )
    apply(world, repository(allowed, "app", registry=registry))
    denied = wait_for_condition(world, allowed, "app", status="False", reason="AccessDenied")
    assert "may not call sts:AssumeRole" in condition(denied)["message"]
    wait_for_condition(world, allowed, "app")
    assert [call.status for call in calls_since(world, mark, "AssumeRole")] == [403, 200]
    assert describe(world, f"{allowed}/app") is not None


def test_a_namespace_prefix_keeps_each_tenant_in_its_lane(
    world: World, operator: Operator, namespaces: Callable[[], str]
) -> None:
    mine, theirs = namespaces(), namespaces()
    untagged = f"{theirs}/unmanaged"
    world.boto3_client("ecr").create_repository(repositoryName=untagged)
    start(operator, [mine], ECR_OPERATOR_REPOSITORY_NAME_PREFIX="{namespace}/")
    mark = len(world.aws_calls())

    apply(world, repository(mine, "grab", repositoryName=untagged, deletionPolicy="ForceDelete"))
    refused = wait_for_condition(world, mine, "grab", status="False", reason="RepositoryNameNotAllowed")
    apply(world, repository(mine, "app"))
    wait_for_condition(world, mine, "app")

    assert f"must start with '{mine}/'" in condition(refused)["message"]
    assert not [call for call in calls_since(world, mark) if call.operation == "TagResource"]
    world.kubectl("delete", "ecrrepository", "grab", "--namespace", mine)
    wait_until_gone(world, mine, "grab")
    found = describe(world, untagged)
    assert found is not None
    assert tags_of(world, found["repositoryArn"]) == {}
    assert status_of(world, mine, "app")["repositoryUri"] == f"{world.ecr_registry_host()}/{mine}/app"
