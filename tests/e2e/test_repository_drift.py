"""Drift: changes made outside the operator are repaired within a pass, announced and counted; a converged
repository costs no AWS write and no Kubernetes write, pass after pass; checks are batched."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
import repository_support as support

from ecr_sandbox.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

OWNER_TAG = "ecr-operator.io/owner"
LIFECYCLE_RULES = [
    {"selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 7}}
]
GRANTS = [{"principals": ["210987654321"], "actions": "pull"}]


def test_changes_made_outside_the_operator_are_repaired_within_one_pass(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    running = support.start(
        operator, [namespace], ECR_OPERATOR_DRIFT_INTERVAL="3s", ECR_OPERATOR_DRIFT_JITTER="0.5s"
    )
    support.ready_repository(
        world,
        namespace,
        "app",
        imageTagMutability="IMMUTABLE",
        tags={"team": "a"},
        lifecyclePolicy={"rules": LIFECYCLE_RULES},
        access={"grants": GRANTS},
    )
    ecr = world.boto3_client("ecr")
    arn = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryArn"]
    wanted_policy = ecr.get_repository_policy(repositoryName=name)["policyText"]

    ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE")
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "team", "Value": "b"}, {"Key": "by-hand", "Value": "x"}])
    ecr.delete_lifecycle_policy(repositoryName=name)
    ecr.set_repository_policy(
        repositoryName=name,
        policyText=json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:*"}]}),
    )
    changed = time.monotonic()

    support.eventually(
        "the drift to be repaired",
        lambda: support.status_of(world, namespace, "app").get("driftCorrections") == 4,
        10,
    )

    assert time.monotonic() - changed < 3.5 + 2.0  # one interval plus jitter, and the pass itself
    found = support.describe(world, name)
    assert found is not None
    assert found["imageTagMutability"] == "IMMUTABLE"
    assert support.tags_of(world, arn) == {"team": "a", OWNER_TAG: f"default/{namespace}/app"}
    assert (
        json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])["rules"][0][
            "rulePriority"
        ]
        == 1
    )
    assert json.loads(ecr.get_repository_policy(repositoryName=name)["policyText"]) == json.loads(
        wanted_policy
    )
    [drift_event] = [
        event for event in support.events(world, namespace, "app") if event[1] == "DriftCorrected"
    ]
    assert drift_event == (
        "Warning",
        "DriftCorrected",
        "Repaired changes made outside the operator:"
        " image tag mutability, tags, lifecycle policy, repository policy.",
    )
    assert support.metric(running, "ecr_operator_drift_corrections_total", kind="EcrRepository") == 4


def test_a_repository_deleted_outside_the_operator_is_created_again(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    support.start(operator, [namespace])
    support.ready_repository(world, namespace, "app", tags={"team": "a"})

    world.boto3_client("ecr").delete_repository(repositoryName=name, force=True)

    support.eventually("the repository to be back", lambda: support.describe(world, name), 10)
    found = support.describe(world, name)
    assert found is not None
    assert support.tags_of(world, found["repositoryArn"])["team"] == "a"
    support.eventually(
        "the repair to be counted",
        lambda: support.status_of(world, namespace, "app").get("driftCorrections") == 1,
        10,
    )
    [(_, _, message)] = [
        event for event in support.events(world, namespace, "app") if event[1] == "DriftCorrected"
    ]
    assert "repository (re-created)" in message


@pytest.fixture
def operator_user(world: World) -> Iterator[str]:
    """A user bound to the operator's ClusterRole only, so RBAC is exercised and the audit log can tell the
    operator's requests from everyone else's. Requested before ``operator`` and ``namespaces``, so the
    binding outlives the namespaces' cleanup, which needs the operator to remove its finalizers."""
    user = f"ecr-operator-{secrets.token_hex(4)}"
    world.kubectl("apply", "--filename", support.RBAC_FILE)
    world.kubectl("create", "clusterrolebinding", user, "--clusterrole=ecr-operator-e2e", f"--user={user}")
    yield user
    world.kubectl("delete", "clusterrolebinding", user, "--wait=false", check=False)


def wait_for_passes(world: World, since: int, passes: int, objects: int = 1) -> None:
    """Each drift pass reads every object's tags once: count passes by ListTagsForResource calls. A pass
    over many objects takes seconds of its own (about 1 s per 100 objects on 2 busy cores) on top of the
    drift interval the tests set (at most 10 s)."""
    support.eventually(
        f"{passes} drift passes",
        lambda: len(support.calls_since(world, since, "ListTagsForResource")) >= passes * objects,
        timeout=passes * 10.0 + objects / 25,
    )


def quiet_mark_and_metric(world: World, running: support.Operator) -> tuple[int, float]:
    """moto's call-log mark and the operator's call counter read in the same quiet moment: a drift pass
    (every 3 s here) starting between the two reads would be counted on one side only."""

    def paired() -> tuple[int, float] | None:
        mark = support.wait_for_quiet_aws(world, quiet=1.0)
        counted = support.metric(running, "ecr_operator_aws_calls_total")
        return (mark, counted) if len(world.aws_calls()) == mark else None

    return support.eventually("a quiet moment to read both call counts in", paired, timeout=60.0)


def writes_by(world: World, user: str) -> list[str]:
    return [
        f"{event.verb} {event.request_uri} -> {event.code}"
        for event in world.audit_events(user)
        if event.is_write
    ]


def test_a_converged_repository_costs_no_aws_write_and_no_kubernetes_write(
    world: World, operator_user: str, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace, user = namespaces(), operator_user
    role = f"{namespace}-reader"
    world.boto3_client("iam").create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    kubeconfig = world.make_kubeconfig(user)
    drift = {
        "ECR_OPERATOR_DRIFT_INTERVAL": "3s",
        "ECR_OPERATOR_DRIFT_JITTER": "0.2s",
        **support.identity_roles_for(world, namespace),
    }
    running = support.start(operator, [namespace], kubeconfig=kubeconfig, **drift)
    converged = support.ready_repository(
        world,
        namespace,
        "app",
        **support.IMMUTABLE_EXCEPT_LATEST,
        scanOnPush=True,
        tags={"team": "a"},
        lifecyclePolicy={"rules": LIFECYCLE_RULES},
        access={"grants": GRANTS, "identityPolicies": [{"roleName": role, "actions": "pull"}]},
    )
    wait_for_passes(world, 0, 1)
    aws_mark, calls_counted = quiet_mark_and_metric(world, running)
    writes_mark = len(writes_by(world, user))

    wait_for_passes(world, aws_mark, 5)
    aws_end = support.wait_for_quiet_aws(world, quiet=1.0)

    during = support.calls_since(world, aws_mark)[: aws_end - aws_mark]
    assert [call.operation for call in during if support.is_mutating(call)] == []
    assert writes_by(world, user)[writes_mark:] == []
    # The operator's own count of its AWS calls agrees with what moto served.
    assert support.metric(running, "ecr_operator_aws_calls_total") - calls_counted == len(during)
    assert {call.operation for call in during} >= {
        "DescribeRepositories",
        "ListTagsForResource",
        "GetRolePolicy",
    }

    # A restart resumes every object: a full reconcile that must be just as quiet.
    assert running.terminate() == 0
    restart_mark = len(world.aws_calls())
    support.start(operator, [namespace], kubeconfig=kubeconfig, **drift)
    # Its first pass comes within a jitter of start-up, and checks every object it watches.
    wait_for_passes(world, restart_mark, 2)
    support.wait_for_quiet_aws(world, quiet=1.0)

    assert [
        call.operation for call in support.calls_since(world, restart_mark) if support.is_mutating(call)
    ] == []
    assert writes_by(world, user)[writes_mark:] == []
    final = support.status_of(world, namespace, "app")
    assert final["lastSyncTime"] == converged["status"]["lastSyncTime"]
    assert final.get("driftCorrections", 0) == 0


def test_a_drift_pass_over_250_repositories_makes_at_most_three_describe_calls(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    count = 250
    # Unpaced (as fast as the world answers), so that a pass ends well inside the interval and leaves the
    # quiet moments this test reads its marks in; the pacing has its own unit tests.
    running = support.start(
        operator,
        [namespace],
        ECR_OPERATOR_DRIFT_INTERVAL="10s",
        ECR_OPERATOR_DRIFT_JITTER="1s",
        ECR_OPERATOR_DRIFT_AWS_REQUESTS_PER_SECOND="10000",
    )

    support.apply(world, *(support.repository(namespace, f"r{index:03d}") for index in range(count)))
    listing = f"/apis/ecr-operator.io/v1alpha1/namespaces/{namespace}/ecrrepositories"

    def all_ready() -> bool:
        items = world.kube_client().call("GET", listing)["items"]
        ready = [
            item
            for item in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in item.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) == count

    support.eventually(f"{count} repositories to be ready", all_ready, timeout=180, interval=1.0)
    mark = support.wait_for_quiet_aws(world, quiet=2.0)
    describes_counted = support.metric(
        running, "ecr_operator_aws_calls_total", operation="DescribeRepositories"
    )

    wait_for_passes(world, mark, 1, objects=count)
    end = support.wait_for_quiet_aws(world, quiet=2.0)

    during = support.calls_since(world, mark)[: end - mark]
    passes = round(sum(call.operation == "ListTagsForResource" for call in during) / count)
    describes = sum(call.operation == "DescribeRepositories" for call in during)
    assert passes >= 1
    assert describes <= 3 * passes, f"{describes} DescribeRepositories calls in {passes} pass(es)"
    assert (
        support.metric(running, "ecr_operator_aws_calls_total", operation="DescribeRepositories")
        - describes_counted
        == describes
    )
    assert not [call for call in during if support.is_mutating(call)]
