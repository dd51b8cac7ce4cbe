"""Deleting an EcrRepository does to AWS what its deletionPolicy says, and removes its identity policies."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from repository_support import (
    Operator,
    apply,
    condition,
    describe,
    events,
    get,
    identity_roles_for,
    namespaces_fixture,  # noqa: F401 -- the ``namespaces`` fixture
    push_image,
    repository,
    start,
    tags_of,
    wait_for_condition,
    wait_until_gone,
)

from ecr_sandbox.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def delete(world: World, namespace: str, name: str) -> None:
    world.kubectl("delete", "ecrrepository", name, "--namespace", namespace, "--wait=false")


def test_retain_keeps_the_repository_and_its_images_but_removes_identity_policies(
    world: World, operator: Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    role = f"{namespace}-deployer"
    iam = world.boto3_client("iam")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    start(operator, [namespace], **identity_roles_for(world, namespace))
    apply(
        world,
        repository(namespace, "app", access={"identityPolicies": [{"roleName": role, "actions": "pull"}]}),
    )
    wait_for_condition(world, namespace, "app")
    push_image(world, name)
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] != []

    delete(world, namespace, "app")
    wait_until_gone(world, namespace, "app")

    found = describe(world, name)
    assert found is not None
    images = world.boto3_client("ecr").list_images(repositoryName=name)["imageIds"]
    assert [image.get("imageTag") for image in images] == ["v1"]
    # Still claimed: re-creating the object resumes management; no other object can take it over.
    assert tags_of(world, found["repositoryArn"])["ecr-operator.io/owner"] == f"default/{namespace}/app"
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == []


def test_delete_if_empty_waits_while_images_exist_and_completes_once_they_are_gone(
    world: World, operator: Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    start(operator, [namespace])
    apply(world, repository(namespace, "app", deletionPolicy="DeleteIfEmpty"))
    wait_for_condition(world, namespace, "app")
    push_image(world, name)

    delete(world, namespace, "app")
    waiting = wait_for_condition(world, namespace, "app", status="False", reason="RepositoryNotEmpty")

    assert "still holds images" in condition(waiting)["message"]
    assert "deletionTimestamp" in waiting["metadata"]
    assert describe(world, name) is not None
    assert ("Warning", "RepositoryNotEmpty") in [event[:2] for event in events(world, namespace, "app")]

    world.boto3_client("ecr").batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])
    wait_until_gone(world, namespace, "app", timeout=60)

    assert describe(world, name) is None
    assert get(world, namespace, "app") is None


def test_force_delete_removes_the_repository_with_its_images(
    world: World, operator: Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    start(operator, [namespace])
    apply(world, repository(namespace, "app", deletionPolicy="ForceDelete"))
    wait_for_condition(world, namespace, "app")
    push_image(world, name)

    delete(world, namespace, "app")
    wait_until_gone(world, namespace, "app")

    assert describe(world, name) is None
    assert ("Normal", "RepositoryDeleted") in [event[:2] for event in events(world, namespace, "app")]
