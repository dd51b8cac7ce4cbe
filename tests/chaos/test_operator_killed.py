"""Chaos: the operator is SIGKILLed mid-work, twice, while AWS fails some calls; the state still converges.

"Any handler can be killed at any line and re-run": after the kills every object is Ready, and AWS holds
exactly the repositories asked for, each with its owner tag, tags and policies.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ecr_sandbox.world import World
from waiting import first_within

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

OBJECTS = 30
OWNER_TAG = "ecr-operator.io/owner"
LIFECYCLE = {
    "rules": [{"selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 3}}]
}
GRANTS = {"grants": [{"principals": ["210987654321"], "actions": "pull"}]}


def manifest(namespace: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "ecr-operator.io/v1alpha1",
        "kind": "EcrRepository",
        "metadata": {"name": f"app-{index}", "namespace": namespace},
        "spec": {
            "repositoryName": f"{namespace}/app-{index}",
            "registry": {"region": "us-east-1"},
            "tags": {"team": "chaos", "index": str(index)},
            "lifecyclePolicy": LIFECYCLE,
            "access": GRANTS,
        },
    }


def ready_count(world: World, namespace: str) -> int:
    listing = world.kubectl("get", "ecrrepositories", "-n", namespace, "-o", "json").stdout
    return sum(
        1
        for item in json.loads(listing)["items"]
        for condition in item.get("status", {}).get("conditions", [])
        if condition["type"] == "Ready" and condition["status"] == "True"
    )


def test_killed_operators_leave_nothing_half_done(world: World, operator: Any) -> None:
    namespace = world.create_namespace("chaos-")
    env = {
        "ECR_OPERATOR_NAMESPACES": namespace,
        "ECR_OPERATOR_DRIFT_INTERVAL": "3s",
        "ECR_OPERATOR_DRIFT_JITTER": "0.3s",
    }
    world.inject_aws_fault("SetRepositoryPolicy", status=500, code="InternalFailure", message="boom", count=6)
    world.inject_aws_fault("TagResource", status=400, code="ThrottlingException", count=4)
    try:
        first = operator(**env)
        items = [manifest(namespace, index) for index in range(OBJECTS)]
        world.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )
        time.sleep(1.0)
        first.process.kill()  # SIGKILL: no cleanup, whatever line it was on
        first.process.wait()
        second = operator(**env)
        time.sleep(1.5)
        second.process.kill()
        second.process.wait()
        survivor = operator(**env)

        first_within(lambda: ready_count(world, namespace) >= OBJECTS, 120, interval=1.0)
        assert ready_count(world, namespace) == OBJECTS, survivor.describe()

        ecr = world.boto3_client("ecr")
        pages = ecr.get_paginator("describe_repositories").paginate()
        ours = [
            repo
            for page in pages
            for repo in page["repositories"]
            if repo["repositoryName"].startswith(namespace)
        ]
        assert sorted(repo["repositoryName"] for repo in ours) == sorted(
            f"{namespace}/app-{index}" for index in range(OBJECTS)
        )
        for repo in ours:
            name = repo["repositoryName"].split("/", 1)[1]
            tags = {
                tag["Key"]: tag["Value"]
                for tag in ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
            }
            assert tags[OWNER_TAG] == f"default/{namespace}/{name}"
            assert tags["team"] == "chaos"
            assert ecr.get_lifecycle_policy(repositoryName=repo["repositoryName"])["lifecyclePolicyText"]
            policy = json.loads(
                ecr.get_repository_policy(repositoryName=repo["repositoryName"])["policyText"]
            )
            assert "210987654321" in json.dumps(policy)
    finally:
        world.clear_aws_faults()
        world.kubectl(
            "delete", "ecrrepositories", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False
        )
        world.delete_namespace(namespace)
