"""Tenants share a cluster and an AWS account: no tenant can take over or delete another's repository."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import repository_support as support

from ecr_sandbox.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

OWNER_TAG = "ecr-operator.io/owner"


def test_a_second_object_claiming_a_repository_gets_conflict_and_the_first_keeps_working(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    first, second = namespaces(), namespaces()
    shared = f"{first}/app"
    support.start(operator, [first, second])
    support.ready_repository(world, first, "app", tags={"team": "first"})

    support.apply(
        world,
        support.repository(second, "app", repositoryName=shared, scanOnPush=True, tags={"team": "second"}),
    )
    refused = support.wait_for_condition(world, second, "app", status="False", reason="Conflict")

    assert f"belongs to EcrRepository {first}/app" in support.condition(refused)["message"]
    assert "repositoryUri" not in refused["status"]
    found = support.describe(world, shared)
    assert found is not None
    assert found["imageScanningConfiguration"] == {"scanOnPush": False}
    assert support.tags_of(world, found["repositoryArn"]) == {
        "team": "first",
        OWNER_TAG: f"default/{first}/app",
    }
    assert ("Warning", "Conflict") in support.event_reasons(world, second, "app")

    support.apply(world, support.repository(first, "app", tags={"team": "first", "still": "mine"}))
    support.wait_for_generation(world, first, "app", 2)
    assert support.tags_of(world, found["repositoryArn"])["still"] == "mine"
    assert support.condition(support.wait_for_condition(world, first, "app"))["reason"] == "RepositoryReady"


def test_a_tenant_cannot_adopt_and_force_delete_another_namespaces_repository(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    victim, attacker = namespaces(), namespaces()
    target = f"{victim}/data"
    support.start(operator, [victim, attacker])
    support.ready_repository(world, victim, "data")
    support.push_image(world, target)

    support.apply(
        world, support.repository(attacker, "grab", repositoryName=target, deletionPolicy="ForceDelete")
    )
    support.wait_for_condition(world, attacker, "grab", status="False", reason="Conflict")
    world.kubectl("delete", "ecrrepository", "grab", "--namespace", attacker)
    support.wait_until_gone(world, attacker, "grab")
    assert ("Warning", "RepositoryNotOwned") in support.event_reasons(world, attacker, "grab")

    found = support.describe(world, target)
    assert found is not None
    assert world.boto3_client("ecr").list_images(repositoryName=target)["imageIds"] != []
    assert support.tags_of(world, found["repositoryArn"])[OWNER_TAG] == f"default/{victim}/data"
    assert support.condition(support.wait_for_condition(world, victim, "data"))["status"] == "True"


def test_a_repository_created_by_someone_else_meanwhile_is_not_taken_over(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    support.start(operator, [namespace])
    # Hold the operator's CreateRepository at the door while another cluster creates the repository.
    world.inject_aws_fault("CreateRepository", service="ecr", status=None, delay=3.0, count=1)
    mark = len(world.aws_calls())

    support.apply(world, support.repository(namespace, "app"))
    # The operator takes the object on (its finalizer) and sends the held CreateRepository at once.
    support.eventually(
        "the operator's finalizer on the object",
        lambda: (support.get(world, namespace, "app") or {}).get("metadata", {}).get("finalizers"),
    )
    time.sleep(1.0)
    world.boto3_client("ecr").create_repository(
        repositoryName=name, tags=[{"Key": OWNER_TAG, "Value": f"other/{namespace}/app"}]
    )
    refused = support.wait_for_condition(world, namespace, "app", status="False", reason="Conflict")

    assert "of cluster 'other'" in support.condition(refused)["message"]
    assert [call.status for call in support.calls_since(world, mark, "CreateRepository")] == [200, 400]
    assert not [
        call
        for call in support.calls_since(world, mark)
        if call.operation in ("TagResource", "UntagResource")
    ]


def test_role_arns_are_honoured_only_where_the_admin_allows_them(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    allowed, other = namespaces(), namespaces()
    role_arn = f"arn:aws:iam::{world.account_id}:role/ecr-{allowed}"
    support.start(
        operator,
        [allowed, other],
        ECR_OPERATOR_ALLOWED_ROLE_ARNS=json.dumps(
            [{"pattern": f"arn:aws:iam::{world.account_id}:role/ecr-*", "namespaces": [allowed]}]
        ),
    )
    registry = {"region": world.region, "roleArn": role_arn}
    mark = len(world.aws_calls())

    support.apply(world, support.repository(other, "app", registry=registry))
    refused = support.wait_for_condition(world, other, "app", status="False", reason="RoleNotAllowed")
    assert (
        f"registry.roleArn {role_arn} is not allowed for namespace {other}"
        in support.condition(refused)["message"]
    )
    assert support.calls_since(world, mark) == []
    assert support.describe(world, f"{other}/app") is None

    # The first attempt to assume the role is refused by STS: the condition names that permission.
    world.inject_aws_fault(
        "AssumeRole", service="sts", status=403, code="AccessDenied", message="not authorized"
    )
    support.apply(world, support.repository(allowed, "app", registry=registry))
    denied = support.wait_for_condition(world, allowed, "app", status="False", reason="AccessDenied")
    assert "may not call sts:AssumeRole" in support.condition(denied)["message"]
    support.wait_for_condition(world, allowed, "app")
    assert [call.status for call in support.calls_since(world, mark, "AssumeRole")] == [403, 200]
    assert support.describe(world, f"{allowed}/app") is not None


def test_a_namespace_prefix_keeps_each_tenant_in_its_lane(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    mine, theirs = namespaces(), namespaces()
    untagged = f"{theirs}/unmanaged"
    world.boto3_client("ecr").create_repository(repositoryName=untagged)
    support.start(operator, [mine], ECR_OPERATOR_REPOSITORY_NAME_PREFIX="{namespace}/")
    mark = len(world.aws_calls())

    support.apply(
        world, support.repository(mine, "grab", repositoryName=untagged, deletionPolicy="ForceDelete")
    )
    refused = support.wait_for_condition(
        world, mine, "grab", status="False", reason="RepositoryNameNotAllowed"
    )
    support.ready_repository(world, mine, "app")

    assert f"must start with '{mine}/'" in support.condition(refused)["message"]
    assert not [call for call in support.calls_since(world, mark) if call.operation == "TagResource"]
    world.kubectl("delete", "ecrrepository", "grab", "--namespace", mine)
    support.wait_until_gone(world, mine, "grab")
    found = support.describe(world, untagged)
    assert found is not None
    assert support.tags_of(world, found["repositoryArn"]) == {}
    assert support.status_of(world, mine, "app")["repositoryUri"] == f"{world.ecr_registry_host()}/{mine}/app"
