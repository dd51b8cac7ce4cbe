"""Issue 8, F3, F4, F5 and F13: a tenant must not reach past its namespace through an EcrRepository.

Each attack is reproduced as the issue describes it, by a tenant: a user whose RBAC lets it manage
EcrRepositories in its own namespace, status included (kubectl with its own client certificate). Each is
now refused or harmless, and the refusal is visible in a condition or Event naming the setting an admin
would change. AWS is checked through moto's call log and boto3.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import repository_support as support

from ecr_sandbox.world import World
from waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

OWNER_TAG = "ecr-operator.io/owner"
ADOPTED_TAG = "ecr-operator.io/adopted"
OUTSIDE_ACCOUNT = "210987654321"
# No drift pass during a test unless it asks for one: what the tenant wrote to status stays there.
NO_DRIFT = {"ECR_OPERATOR_DRIFT_INTERVAL": "1h", "ECR_OPERATOR_DRIFT_JITTER": "1s"}
PROD_ACCESS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Prod", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
    }
)


def tenant(world: World, namespace: str) -> Path:
    """A kubeconfig for a tenant of ``namespace``: it may do anything to EcrRepositories there, including
    patching their status (the F2/F3 premise), and nothing elsewhere."""
    user = f"tenant-of-{namespace}"
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "ecrrepository-tenant", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["ecr-operator.io"],
                    "resources": ["ecrrepositories", "ecrrepositories/status"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "ecrrepository-tenant", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "ecrrepository-tenant",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    ]
    world.kubectl(
        "apply", "--filename", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac})
    )
    return world.make_kubeconfig(user)


def as_tenant(world: World, kubeconfig: Path, *args: str, input: str | None = None) -> None:
    world.kubectl(*args, input=input, kubeconfig=kubeconfig)


def tenant_applies(world: World, kubeconfig: Path, manifest: dict[str, Any]) -> None:
    as_tenant(world, kubeconfig, "apply", "--filename", "-", input=json.dumps(manifest))


def tenant_deletes(world: World, kubeconfig: Path, namespace: str, name: str) -> None:
    as_tenant(world, kubeconfig, "delete", "ecrrepository", name, "--namespace", namespace, "--wait=false")
    support.wait_until_gone(world, namespace, name)


def tenant_patches_status(world: World, kubeconfig: Path, namespace: str, name: str, status: Any) -> None:
    as_tenant(
        world,
        kubeconfig,
        "patch",
        "ecrrepository",
        name,
        "--namespace",
        namespace,
        "--subresource=status",
        "--type=merge",
        "--patch",
        json.dumps({"status": status}),
    )


def warnings(world: World, namespace: str, name: str, reason: str) -> list[str]:
    """The messages of the Warning Events with ``reason``, once there is one (the operator posts Events
    asynchronously, just after it writes the condition a test waited for)."""

    def probe() -> list[str]:
        return [
            message
            for kind, why, message in support.events(world, namespace, name)
            if (kind, why) == ("Warning", reason)
        ]

    return eventually(f"a Warning {reason} Event about {namespace}/{name}", probe, timeout=15)


def role_policies(world: World, role: str) -> dict[str, Any]:
    iam = world.boto3_client("iam")
    return {
        name: iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
    }


# --- F3: status is output, never input --------------------------------------------------------------


def test_f3_identity_policies_named_in_status_are_never_deleted_unless_provably_the_objects(
    world: World, operator: support.Operator, namespaces: Callable[..., str]
) -> None:
    attacker = namespaces()
    victim_role = f"victim-role-{secrets.token_hex(4)}"
    iam = world.boto3_client("iam")
    iam.create_role(RoleName=victim_role, AssumeRolePolicyDocument="{}")
    iam.put_role_policy(RoleName=victim_role, PolicyName="prod-access", PolicyDocument=PROD_ACCESS)
    # Even a policy under the attacker object's own deterministic name is not proof: it lacks the stamp.
    lookalike = f"ecr-operator.{attacker}.grab@default"
    iam.put_role_policy(RoleName=victim_role, PolicyName=lookalike, PolicyDocument=PROD_ACCESS)
    before = role_policies(world, victim_role)
    kubeconfig = tenant(world, attacker)
    support.start(operator, [attacker], **NO_DRIFT)
    tenant_applies(world, kubeconfig, support.repository(attacker, "grab"))
    support.wait_for_condition(world, attacker, "grab")
    mark = len(world.aws_calls())

    forged = [{"roleName": victim_role, "policyName": "prod-access"}]
    tenant_patches_status(world, kubeconfig, attacker, "grab", {"identityPolicies": forged})
    # A reconcile that reads the forged status (a spec change) deletes nothing and reports the truth.
    tenant_applies(world, kubeconfig, support.repository(attacker, "grab", tags={"touch": "1"}))
    support.wait_for_generation(world, attacker, "grab", 2)
    support.eventually(
        "status to stop listing the forged policy",
        lambda: "identityPolicies" not in support.status_of(world, attacker, "grab"),
    )
    # Then the exact sequence: forge the status again and delete the object (Retain).
    tenant_patches_status(world, kubeconfig, attacker, "grab", {"identityPolicies": forged})
    tenant_deletes(world, kubeconfig, attacker, "grab")
    operator_iam_calls = {
        call.operation for call in support.calls_since(world, mark) if call.service == "iam"
    }

    assert operator_iam_calls == {"GetRolePolicy"}  # looked only under its own policy name, left it alone
    assert role_policies(world, victim_role) == before
    [left_alone] = warnings(world, attacker, "grab", "IdentityPolicyNotOwned")
    assert victim_role in left_alone
    assert lookalike in left_alone


def test_f3_the_objects_own_stamped_policy_is_still_removed_when_the_spec_drops_the_role(
    world: World, operator: support.Operator, namespaces: Callable[..., str]
) -> None:
    namespace = namespaces()
    role = f"{namespace}-deployer"
    world.boto3_client("iam").create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    support.start(operator, [namespace], **NO_DRIFT, **support.identity_roles_for(world, namespace))
    grant = {"identityPolicies": [{"roleName": role, "actions": "pull"}]}
    kubeconfig = tenant(world, namespace)
    tenant_applies(world, kubeconfig, support.repository(namespace, "app", access=grant))
    support.wait_for_condition(world, namespace, "app")
    [statement, login] = role_policies(world, role)[f"ecr-operator.{namespace}.app@default"]["Statement"]
    assert statement["Sid"].startswith("EcrOperator")
    assert login["Sid"].startswith(statement["Sid"].removesuffix("RepositoryAccess"))

    # The spec drops the role: the status hint leads the operator to it, IAM shows the stamp, it goes.
    tenant_applies(world, kubeconfig, support.repository(namespace, "app"))
    support.wait_for_generation(world, namespace, "app", 2)

    assert role_policies(world, role) == {}
    assert "identityPolicies" not in support.status_of(world, namespace, "app")


# --- F13: roles for identity policies are admin allow-listed ----------------------------------------


def test_f13_identity_policies_on_roles_the_admin_did_not_allow_are_refused(
    world: World, operator: support.Operator, namespaces: Callable[..., str]
) -> None:
    attacker, other_team = namespaces(), namespaces()
    other_role, own_role = f"{other_team}-deployer", f"{attacker}-deployer"
    iam = world.boto3_client("iam")
    for role in (other_role, own_role):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    # The admin lets each namespace use its own "<namespace>-*" roles only.
    support.start(
        operator,
        [attacker, other_team],
        **NO_DRIFT,
        **support.identity_roles_for(world, attacker, other_team),
    )
    kubeconfig = tenant(world, attacker)
    mark = len(world.aws_calls())

    spoofed_path = f"arn:aws:iam::{world.account_id}:role/{attacker}-x/{other_role}"
    tenant_applies(
        world,
        kubeconfig,
        support.repository(
            attacker,
            "app",
            access={
                "identityPolicies": [
                    {"roleName": other_role, "actions": "pullPush"},
                    {"roleArn": spoofed_path, "actions": "pull"},
                ]
            },
        ),
    )
    refused = support.wait_for_condition(
        world, attacker, "app", status="False", reason="IdentityRoleNotAllowed"
    )

    message = support.condition(refused)["message"]
    assert f"arn:aws:iam::{world.account_id}:role/{other_role}" in message
    assert "ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES" in message
    assert any(
        "ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES" in text
        for text in warnings(world, attacker, "app", "IdentityRoleNotAllowed")
    )
    assert support.calls_since(world, mark, "PutRolePolicy") == []
    assert role_policies(world, other_role) == {}

    # The tenant's own role, which the admin allowed, works.
    tenant_applies(
        world,
        kubeconfig,
        support.repository(
            attacker, "app", access={"identityPolicies": [{"roleName": own_role, "actions": "pull"}]}
        ),
    )
    support.wait_for_generation(world, attacker, "app", 2)
    support.wait_for_condition(world, attacker, "app")
    assert list(role_policies(world, own_role)) == [f"ecr-operator.{attacker}.app@default"]
    assert role_policies(world, other_role) == {}


# --- F4: adoption of an unowned repository is an admin decision -------------------------------------


def legacy_repository(world: World) -> tuple[str, str]:
    """An untagged repository made by hand (or Terraform), holding an image; returns its name and ARN."""
    name = f"legacy-{secrets.token_hex(4)}/app"
    arn: str = world.boto3_client("ecr").create_repository(repositoryName=name)["repository"]["repositoryArn"]
    support.push_image(world, name)
    return name, arn


def grab(namespace: str, target: str) -> dict[str, Any]:
    """The issue's F4 object: an unowned repository, ForceDelete, and a grant to an outside account."""
    return support.repository(
        namespace,
        "grab",
        repositoryName=target,
        deletionPolicy="ForceDelete",
        access={"grants": [{"principals": [OUTSIDE_ACCOUNT], "actions": "pullPush"}]},
    )


def assert_untouched(world: World, target: str, arn: str) -> None:
    ecr = world.boto3_client("ecr")
    assert support.describe(world, target) is not None
    assert [image.get("imageTag") for image in ecr.list_images(repositoryName=target)["imageIds"]] == ["v1"]
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName=target)


def test_f4_an_unowned_repository_is_not_adopted_without_the_admins_allowance(
    world: World, operator: support.Operator, namespaces: Callable[..., str]
) -> None:
    attacker = namespaces()
    target, arn = legacy_repository(world)
    kubeconfig = tenant(world, attacker)
    support.start(operator, [attacker], **NO_DRIFT)
    mark = len(world.aws_calls())

    tenant_applies(world, kubeconfig, grab(attacker, target))
    refused = support.wait_for_condition(world, attacker, "grab", status="False", reason="AdoptionNotAllowed")
    tenant_deletes(world, kubeconfig, attacker, "grab")

    assert "ECR_OPERATOR_ADOPTION_NAMESPACES" in support.condition(refused)["message"]
    assert "repositoryUri" not in refused["status"]
    assert any(
        "ECR_OPERATOR_ADOPTION_NAMESPACES" in text
        for text in warnings(world, attacker, "grab", "AdoptionNotAllowed")
    )
    # The create is tried first (a new object most likely has no repository yet) and fails: nothing changed.
    assert support.mutations_since(world, mark) == [("CreateRepository", 400)]
    assert support.tags_of(world, arn) == {}
    assert_untouched(world, target, arn)


def test_f4_an_adopted_repository_is_never_force_deleted_unless_the_admin_allows_it(
    world: World, operator: support.Operator, namespaces: Callable[..., str]
) -> None:
    namespace = namespaces()
    target, arn = legacy_repository(world)
    kubeconfig = tenant(world, namespace)
    running = support.start(operator, [namespace], **NO_DRIFT, **support.adoption_in(namespace))

    tenant_applies(world, kubeconfig, grab(namespace, target))
    support.wait_for_condition(world, namespace, "grab")
    # Adopted: AWS itself remembers it, next to the owner tag.
    assert support.tags_of(world, arn) == {OWNER_TAG: f"default/{namespace}/grab", ADOPTED_TAG: "true"}
    # A forged status changes nothing about that.
    tenant_patches_status(
        world, kubeconfig, namespace, "grab", {"repositoryArn": None, "identityPolicies": None}
    )
    mark = len(world.aws_calls())
    tenant_deletes(world, kubeconfig, namespace, "grab")

    assert support.calls_since(world, mark, "DeleteRepository") == []
    assert support.describe(world, target) is not None
    images = world.boto3_client("ecr").list_images(repositoryName=target)["imageIds"]
    assert [image.get("imageTag") for image in images] == ["v1"]
    [retained] = warnings(world, namespace, "grab", "RepositoryRetained")
    assert "ECR_OPERATOR_ADOPTED_DELETION_NAMESPACES" in retained

    # The admin allows deleting adopted repositories here: the same object's ForceDelete now applies.
    assert running.terminate() == 0
    support.start(
        operator,
        [namespace],
        **NO_DRIFT,
        **support.adoption_in(namespace),
        ECR_OPERATOR_ADOPTED_DELETION_NAMESPACES=namespace,
    )
    tenant_applies(world, kubeconfig, grab(namespace, target))
    support.wait_for_condition(world, namespace, "grab")
    tenant_deletes(world, kubeconfig, namespace, "grab")
    assert support.describe(world, target) is None


def test_the_owner_tag_is_re_read_under_the_lock_right_before_delete_repository(
    world: World, operator: support.Operator, namespaces: Callable[..., str]
) -> None:
    namespace = namespaces()
    name = f"{namespace}/app"
    kubeconfig = tenant(world, namespace)
    support.start(operator, [namespace], **NO_DRIFT)
    tenant_applies(world, kubeconfig, support.repository(namespace, "app", deletionPolicy="ForceDelete"))
    ready = support.wait_for_condition(world, namespace, "app")
    support.push_image(world, name)
    # Someone else claims the repository after the operator last looked (its status still says "mine").
    arn = str(ready["status"]["repositoryArn"])
    world.boto3_client("ecr").tag_resource(
        resourceArn=arn, tags=[{"Key": OWNER_TAG, "Value": "other/ns/obj"}]
    )
    mark = len(world.aws_calls())

    tenant_deletes(world, kubeconfig, namespace, "app")

    operations = [call.operation for call in support.calls_since(world, mark) if call.service == "ecr"]
    assert "ListTagsForResource" in operations
    assert "DeleteRepository" not in operations
    assert support.describe(world, name) is not None
    assert warnings(world, namespace, "app", "RepositoryNotOwned")


# --- F5: name prefixes end at a segment boundary ----------------------------------------------------


def test_f5_a_prefix_template_that_does_not_end_at_a_slash_stops_the_operator(
    operator: support.Operator,
) -> None:
    running = operator(wait=False, ECR_OPERATOR_REPOSITORY_NAME_PREFIX="{namespace}-")

    assert running.wait_exit() == 2
    log = running.log_text()
    assert "ECR_OPERATOR_REPOSITORY_NAME_PREFIX" in log
    assert "must end with '/'" in log


def test_f5_namespace_team_cannot_claim_the_names_of_namespace_team_a(
    world: World, operator: support.Operator, namespaces: Callable[..., str]
) -> None:
    team = namespaces(f"team-{secrets.token_hex(4)}")
    team_a = namespaces(f"{team}-a")
    support.start(operator, [team, team_a], **NO_DRIFT, ECR_OPERATOR_REPOSITORY_NAME_PREFIX="{namespace}/")
    mark = len(world.aws_calls())

    tenant_applies(
        world, tenant(world, team), support.repository(team, "squat", repositoryName=f"{team_a}/app")
    )
    refused = support.wait_for_condition(
        world, team, "squat", status="False", reason="RepositoryNameNotAllowed"
    )
    tenant_applies(
        world, tenant(world, team_a), support.repository(team_a, "app", repositoryName=f"{team_a}/app")
    )
    support.wait_for_condition(world, team_a, "app")

    assert "ECR_OPERATOR_REPOSITORY_NAME_PREFIX" in support.condition(refused)["message"]
    assert f"must start with '{team}/'" in support.condition(refused)["message"]
    assert warnings(world, team, "squat", "RepositoryNameNotAllowed")
    created = [call for call in support.calls_since(world, mark, "CreateRepository") if call.status == 200]
    assert len(created) == 1
    found = support.describe(world, f"{team_a}/app")
    assert found is not None
    assert support.tags_of(world, found["repositoryArn"])[OWNER_TAG] == f"default/{team_a}/app"
