"""Deleting an EcrRepository does to AWS what its deletionPolicy says, and removes its identity policies."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import repository_support as support

from ecr_sandbox.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def delete(world: World, namespace: str, name: str) -> None:
    world.kubectl("delete", "ecrrepository", name, "--namespace", namespace, "--wait=false")


def deleted_with_an_image(
    world: World, operator: support.Operator, namespace: str, deletion_policy: str
) -> tuple[str, str]:
    """An EcrRepository ``app`` served in ``namespace``, Ready, holding an image, then deleted; returns
    the namespace and the repository name."""
    name = f"{namespace}/app"
    support.start(operator, [namespace])
    support.ready_repository(world, namespace, "app", deletionPolicy=deletion_policy)
    support.push_image(world, name)
    delete(world, namespace, "app")
    return namespace, name


def test_retain_keeps_the_repository_and_its_images_but_removes_identity_policies(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    role = f"{namespace}-deployer"
    iam = world.boto3_client("iam")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    support.start(operator, [namespace], **support.identity_roles_for(world, namespace))
    support.ready_repository(
        world, namespace, "app", access={"identityPolicies": [{"roleName": role, "actions": "pull"}]}
    )
    support.push_image(world, name)
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] != []

    delete(world, namespace, "app")
    support.wait_until_gone(world, namespace, "app")

    found = support.describe(world, name)
    assert found is not None
    images = world.boto3_client("ecr").list_images(repositoryName=name)["imageIds"]
    assert [image.get("imageTag") for image in images] == ["v1"]
    # Still claimed: re-creating the object resumes management; no other object can take it over.
    assert (
        support.tags_of(world, found["repositoryArn"])["ecr-operator.io/owner"] == f"default/{namespace}/app"
    )
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == []


def test_delete_if_empty_waits_while_images_exist_and_completes_once_they_are_gone(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace, name = deleted_with_an_image(world, operator, namespaces(), "DeleteIfEmpty")
    waiting = support.wait_for_condition(world, namespace, "app", status="False", reason="RepositoryNotEmpty")

    assert "still holds images" in support.condition(waiting)["message"]
    assert "deletionTimestamp" in waiting["metadata"]
    assert support.describe(world, name) is not None
    assert ("Warning", "RepositoryNotEmpty") in support.event_reasons(world, namespace, "app")

    world.boto3_client("ecr").batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])
    support.wait_until_gone(world, namespace, "app", timeout=60)

    assert support.describe(world, name) is None
    assert support.get(world, namespace, "app") is None


def test_force_delete_removes_the_repository_with_its_images(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace, name = deleted_with_an_image(world, operator, namespaces(), "ForceDelete")
    support.wait_until_gone(world, namespace, "app")

    assert support.describe(world, name) is None
    assert ("Normal", "RepositoryDeleted") in support.event_reasons(world, namespace, "app")
