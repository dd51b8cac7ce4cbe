"""EcrRepository, driven with kubectl as a user would: create or adopt, update with the fewest AWS calls,
identity policies, and errors a user can act on. AWS state is checked through boto3 against moto."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest
import repository_support as support

from ecr_operator.reconcile.repository.vocabulary import identity_policy_stamp
from ecr_sandbox.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

OWNER_TAG = "ecr-operator.io/owner"
LIFECYCLE_RULES = [
    {"selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 7}},
    {
        "selection": {
            "tagStatus": "tagged",
            "tagPrefixes": ["v"],
            "countType": "imageCountMoreThan",
            "countNumber": 20,
        }
    },
]
RAW_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Pull",
            "Effect": "Allow",
            "Principal": {"AWS": ["210987654321", "arn:aws:iam::123456789012:role/reader"]},
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
        },
        {"Sid": "Push", "Effect": "Allow", "Principal": {"AWS": "123456789012"}, "Action": "ecr:PutImage"},
    ],
}


def test_a_repository_is_created_with_every_setting(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    running = support.start(operator, [namespace])
    name = f"{namespace}/app"

    document = support.ready_repository(
        world,
        namespace,
        "app",
        **support.IMMUTABLE_EXCEPT_LATEST,
        scanOnPush=True,
        encryption={"type": "KMS", "kmsKey": "alias/team"},
        tags={"team": "payments", "cost-center": "4711"},
        lifecyclePolicy={"rules": LIFECYCLE_RULES},
        access={"grants": [{"principals": ["210987654321", "o-a1b2c3d4e5"], "actions": "pull"}]},
    )

    found = support.describe(world, name)
    assert found is not None
    assert found["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert found["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest"}]
    assert found["imageScanningConfiguration"] == {"scanOnPush": True}
    assert found["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": "alias/team"}
    assert support.tags_of(world, found["repositoryArn"]) == {
        "team": "payments",
        "cost-center": "4711",
        OWNER_TAG: f"default/{namespace}/app",
    }
    ecr = world.boto3_client("ecr")
    lifecycle = json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])
    assert [rule["selection"]["tagStatus"] for rule in lifecycle["rules"]] == ["untagged", "tagged"]
    policy = json.loads(ecr.get_repository_policy(repositoryName=name)["policyText"])
    assert policy["Statement"][0]["Principal"] == {"AWS": ["arn:aws:iam::210987654321:root"]}
    assert policy["Statement"][1]["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": ["o-a1b2c3d4e5"]}}

    status = document["status"]
    assert status["repositoryUri"] == found["repositoryUri"]
    assert status["repositoryArn"] == found["repositoryArn"]
    assert status["registryId"] == world.account_id
    assert status["observedGeneration"] == document["metadata"]["generation"]
    assert "lastSyncTime" in status
    assert support.condition(document, "Synced")["reason"] == "UpToDate"
    assert all(
        entry.get("observedGeneration") == 1
        for entry in status["conditions"]
        if entry["type"] in ("Ready", "Synced")
    )
    columns = world.kubectl("get", "ecrrepo", "app", "--namespace", namespace, "--no-headers").stdout.split()
    assert columns[:4] == ["app", found["repositoryUri"], "True", "RepositoryReady"]
    assert (
        "Normal",
        "RepositoryCreated",
        f"Created ECR repository {found['repositoryUri']}.",
    ) in support.events(world, namespace, "app")
    assert support.metric(running, "ecr_operator_objects", kind="EcrRepository", ready="True") == 1
    assert (
        support.metric(running, "ecr_operator_reconciles_total", kind="EcrRepository", result="success") >= 1
    )
    assert support.metric(running, "ecr_operator_reconcile_duration_seconds_count", kind="EcrRepository") >= 1
    assert (
        support.metric(
            running, "ecr_operator_aws_calls_total", operation="CreateRepository", outcome="success"
        )
        == 1
    )


def test_an_existing_repository_is_adopted_and_converged(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/legacy"
    ecr = world.boto3_client("ecr")
    arn = ecr.create_repository(
        repositoryName=name,
        imageScanningConfiguration={"scanOnPush": True},
        tags=[{"Key": "made-by", "Value": "hand"}],
    )["repository"]["repositoryArn"]
    ecr.put_lifecycle_policy(
        repositoryName=name,
        lifecyclePolicyText=json.dumps(
            {
                "rules": [
                    {
                        "rulePriority": 1,
                        "selection": {
                            "tagStatus": "any",
                            "countType": "imageCountMoreThan",
                            "countNumber": 1,
                        },
                        "action": {"type": "expire"},
                    }
                ]
            }
        ),
    )
    # Adoption of an unowned repository is the admin's decision (none by default).
    support.start(operator, [namespace], **support.adoption_in(namespace))

    support.ready_repository(world, namespace, "legacy", tags={"team": "a"})

    found = support.describe(world, name)
    assert found is not None
    assert found["imageScanningConfiguration"] == {"scanOnPush": False}
    assert support.tags_of(world, arn) == {
        "team": "a",
        OWNER_TAG: f"default/{namespace}/legacy",
        "ecr-operator.io/adopted": "true",
    }
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName=name)
    [(kind, _, message)] = [
        event for event in support.events(world, namespace, "legacy") if event[1] == "RepositoryAdopted"
    ]
    assert kind == "Normal"
    assert "scan on push" in message


def test_adoption_fail_refuses_an_existing_repository_and_changes_nothing(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/taken"
    arn = world.boto3_client("ecr").create_repository(repositoryName=name)["repository"]["repositoryArn"]
    support.start(operator, [namespace])
    mark = len(world.aws_calls())

    support.apply(world, support.repository(namespace, "taken", adoption="Fail", tags={"team": "a"}))
    document = support.wait_for_condition(world, namespace, "taken", status="False", reason="AdoptionRefused")

    assert "adoption is Fail" in support.condition(document)["message"]
    assert support.tags_of(world, arn) == {}
    # The create is tried first (a new object most likely has no repository yet) and fails: nothing changed.
    assert support.mutations_since(world, mark) == [("CreateRepository", 400)]
    assert "repositoryUri" not in document["status"]
    assert ("Warning", "AdoptionRefused") in support.event_reasons(world, namespace, "taken")


def test_an_update_makes_only_the_calls_the_change_needs(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    support.start(operator, [namespace], ECR_OPERATOR_DRIFT_INTERVAL="1h")
    base = {"tags": {"team": "a", "env": "dev", "old": "x"}, "lifecyclePolicy": {"rules": LIFECYCLE_RULES}}
    support.ready_repository(world, namespace, "app", **base)
    mark = support.wait_for_quiet_aws(world, quiet=1.0)

    rules = [LIFECYCLE_RULES[0], {"selection": {**LIFECYCLE_RULES[1]["selection"], "countNumber": 30}}]
    support.apply(
        world,
        support.repository(
            namespace,
            "app",
            imageTagMutability="IMMUTABLE",
            tags={"team": "a", "env": "prod", "new": "y"},
            lifecyclePolicy={"rules": rules},
        ),
    )
    support.wait_for_generation(world, namespace, "app", 2)
    support.wait_for_quiet_aws(world, quiet=1.0)

    mutations = Counter(
        call.operation for call in support.calls_since(world, mark) if support.is_mutating(call)
    )
    assert mutations == Counter(
        {"PutImageTagMutability": 1, "TagResource": 1, "UntagResource": 1, "PutLifecyclePolicy": 1}
    )
    found = support.describe(world, f"{namespace}/app")
    assert found is not None
    assert found["imageTagMutability"] == "IMMUTABLE"
    assert support.tags_of(world, found["repositoryArn"]) == {
        "team": "a",
        "env": "prod",
        "new": "y",
        OWNER_TAG: f"default/{namespace}/app",
    }
    assert ("Normal", "RepositoryUpdated") in support.event_reasons(world, namespace, "app")


def test_policies_are_compared_semantically_and_removed_when_dropped_from_the_spec(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    support.start(operator, [namespace], ECR_OPERATOR_DRIFT_INTERVAL="1h")
    support.ready_repository(
        world,
        namespace,
        "app",
        access={"policy": json.dumps(RAW_POLICY)},
        lifecyclePolicy={"rules": LIFECYCLE_RULES},
    )
    mark = support.wait_for_quiet_aws(world, quiet=1.0)

    # The same policy, written the way AWS or a colleague might: other order, other spelling.
    reshaped = {
        "Statement": [
            {
                "Sid": "Push",
                "Effect": "Allow",
                "Principal": {"AWS": ["arn:aws:iam::123456789012:root"]},
                "Action": ["ecr:PutImage"],
            },
            {
                "Sid": "Pull",
                "Effect": "Allow",
                "Principal": {
                    "AWS": ["arn:aws:iam::123456789012:role/reader", "arn:aws:iam::210987654321:root"]
                },
                "Action": ["ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
            },
        ],
        "Version": "2012-10-17",
    }
    support.apply(
        world,
        support.repository(
            namespace,
            "app",
            access={"policy": json.dumps(reshaped, indent=2)},
            lifecyclePolicy={"rules": LIFECYCLE_RULES},
        ),
    )
    support.wait_for_generation(world, namespace, "app", 2)
    support.wait_for_quiet_aws(world, quiet=1.0)
    assert [call.operation for call in support.calls_since(world, mark) if support.is_mutating(call)] == []

    support.apply(world, support.repository(namespace, "app"))
    support.wait_for_generation(world, namespace, "app", 3)
    ecr = world.boto3_client("ecr")
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName=name)
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName=name)


def test_identity_policies_follow_the_spec_and_are_tracked_in_status(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    iam = world.boto3_client("iam")
    for role in (f"{namespace}-deployer", f"{namespace}-ci"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    policy_name = f"ecr-operator.{namespace}.app@default"
    stamp = identity_policy_stamp("default", namespace, "app")
    support.start(operator, [namespace], **support.identity_roles_for(world, namespace))

    document = support.ready_repository(
        world,
        namespace,
        "app",
        access={"identityPolicies": [{"roleName": f"{namespace}-deployer", "actions": "pull"}]},
    )
    granted = iam.get_role_policy(RoleName=f"{namespace}-deployer", PolicyName=policy_name)["PolicyDocument"]

    assert document["status"]["identityPolicies"] == [
        {"roleName": f"{namespace}-deployer", "policyName": policy_name}
    ]
    assert granted["Statement"][0]["Resource"] == document["status"]["repositoryArn"]
    assert "ecr:BatchGetImage" in granted["Statement"][0]["Action"]
    assert granted["Statement"][1] == {
        "Sid": f"{stamp.sid_prefix}AuthorizationToken",
        "Effect": "Allow",
        "Action": "ecr:GetAuthorizationToken",
        "Resource": "*",
    }

    support.apply(
        world,
        support.repository(
            namespace,
            "app",
            access={
                "identityPolicies": [
                    {"roleArn": f"arn:aws:iam::{world.account_id}:role/{namespace}-ci", "actions": "push"}
                ]
            },
        ),
    )
    support.wait_for_generation(world, namespace, "app", 2)
    assert support.status_of(world, namespace, "app")["identityPolicies"] == [
        {"roleName": f"{namespace}-ci", "policyName": policy_name}
    ]
    assert iam.list_role_policies(RoleName=f"{namespace}-deployer")["PolicyNames"] == []
    assert iam.list_role_policies(RoleName=f"{namespace}-ci")["PolicyNames"] == [policy_name]

    support.apply(world, support.repository(namespace, "app"))
    support.wait_for_generation(world, namespace, "app", 3)
    assert "identityPolicies" not in support.status_of(world, namespace, "app")
    assert iam.list_role_policies(RoleName=f"{namespace}-ci")["PolicyNames"] == []


def test_a_policy_aws_rejects_is_reported_once_and_retried_slowly(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    support.start(operator, [namespace])
    refused = {"Statement": [{"Effect": "Perhaps", "Principal": "*", "Action": "ecr:BatchGetImage"}]}
    mark = len(world.aws_calls())

    support.apply(world, support.repository(namespace, "app", access={"policy": json.dumps(refused)}))
    document = support.wait_for_condition(world, namespace, "app", status="False", reason="PolicyRejected")
    support.eventually(
        "three drift passes",
        lambda: len(support.calls_since(world, mark, "ListTagsForResource")) >= 4,
        timeout=20,
    )

    assert "AWS rejected the policy (ecr:SetRepositoryPolicy)" in support.condition(document)["message"]
    # One attempt at creation, then one per drift pass (2 s here, 10 min by default): never a hot loop.
    operations = Counter(call.operation for call in support.calls_since(world, mark))
    assert operations["SetRepositoryPolicy"] <= operations["ListTagsForResource"] + 1
    assert [event[1] for event in support.events(world, namespace, "app")].count("PolicyRejected") == 1
    assert support.describe(world, f"{namespace}/app") is not None

    support.ready_repository(world, namespace, "app", access={"policy": json.dumps(RAW_POLICY)})
    assert ("Normal", "RepositoryRecovered") in support.event_reasons(world, namespace, "app")


def test_invalid_policy_json_is_caught_before_any_aws_call(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    support.start(operator, [namespace])
    mark = len(world.aws_calls())

    support.apply(world, support.repository(namespace, "app", access={"policy": '{"Statement": [}'}))
    document = support.wait_for_condition(world, namespace, "app", status="False", reason="InvalidSpec")

    assert "access.policy is not valid JSON" in support.condition(document)["message"]
    assert support.calls_since(world, mark) == []


@pytest.mark.parametrize(
    ("operation", "code", "reason", "says"),
    [
        (
            "PutLifecyclePolicy",
            "AccessDeniedException",
            "AccessDenied",
            "may not call ecr:PutLifecyclePolicy",
        ),
        ("CreateRepository", "KmsException", "KmsKeyInvalid", "could not use the KMS key"),
    ],
)
def test_aws_errors_a_user_can_act_on_are_reported_and_recovered_from(
    world: World,
    operator: support.Operator,
    namespaces: Callable[[], str],
    operation: str,
    code: str,
    reason: str,
    says: str,
) -> None:
    namespace = namespaces()
    support.start(operator, [namespace])
    world.inject_aws_fault(operation, service="ecr", code=code, message="refused by the test", count=None)
    try:
        support.apply(world, support.repository(namespace, "app", lifecyclePolicy={"rules": LIFECYCLE_RULES}))
        document = support.wait_for_condition(world, namespace, "app", status="False", reason=reason)
        assert says in support.condition(document)["message"]
        assert support.condition(document, "Synced")["reason"] == reason
        assert ("Warning", reason) in support.event_reasons(world, namespace, "app")
    finally:
        world.clear_aws_faults()

    support.wait_for_condition(world, namespace, "app", timeout=20)


def test_throttling_backs_off_and_recovers_without_a_hot_loop(
    world: World, operator: support.Operator, namespaces: Callable[[], str]
) -> None:
    namespace = namespaces()
    running = support.start(operator, [namespace])
    # One more than the SDK's four attempts: the handler itself has to back off once.
    world.inject_aws_fault("CreateRepository", service="ecr", count=5)
    mark = len(world.aws_calls())

    support.apply(world, support.repository(namespace, "app"))
    document = support.wait_for_condition(world, namespace, "app", timeout=60)

    creates = support.calls_since(world, mark, "CreateRepository")
    assert [call.status for call in creates] == [400, 400, 400, 400, 400, 200]
    # The SDK's four attempts fail, then the handler waits its jittered backoff (2.5 s or more).
    assert creates[4].time - creates[3].time >= 2.0
    assert support.metric(running, "ecr_operator_aws_throttles_total", operation="CreateRepository") == 5
    assert (
        support.metric(
            running, "ecr_operator_reconciles_total", kind="EcrRepository", result="temporary_error"
        )
        >= 1
    )
    assert ("Warning", "Throttled") in support.event_reasons(world, namespace, "app")
    assert support.condition(document, "Synced")["status"] == "True"
