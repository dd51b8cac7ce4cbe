"""The chart's ClusterRole is least privilege, and it is the identity every e2e test runs the operator as.

The whole e2e suite is the proof that the verbs are enough (the ``operator`` fixture runs as the chart's
ServiceAccount and fails the session on any 403); these tests pin that nothing more is granted.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecr_sandbox.tools import tool_path
from ecr_sandbox.world import World
from operator_fixture import CHART, ChartIdentity

pytestmark = pytest.mark.e2e

OPERATOR_RBAC = Path(__file__).parent / "rbac" / "operator-rbac.yaml"
PULL_SECRETS_RBAC = Path(__file__).parent / "rbac" / "ecr-operator-pull-secrets.yaml"
SECRET_VERBS = {"get", "list", "watch", "create", "patch", "delete"}


def can_i(world: World, identity: ChartIdentity, *args: str) -> bool:
    result = world.kubectl("auth", "can-i", *args, kubeconfig=identity.kubeconfig, check=False)
    return result.stdout.strip() == "yes"


def _rules(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_hand_applied_operator_role_is_the_charts(chart_identity: ChartIdentity) -> None:
    """tests/e2e/rbac/operator-rbac.yaml is applied by tests that bind their own user; it must not differ."""
    [document] = [doc for doc in yaml.safe_load_all(OPERATOR_RBAC.read_text()) if doc]

    assert document["metadata"]["name"] == chart_identity.cluster_role
    assert _rules(document["rules"]) == _rules(chart_identity.rules), (
        f"{OPERATOR_RBAC} is stale; its rules must be:\n" + yaml.safe_dump(chart_identity.rules)
    )


def test_no_update_and_only_the_documented_secret_verbs(chart_identity: ChartIdentity) -> None:
    granted = _rules(chart_identity.rules)

    updates = {(group, resource) for group, resource, verb in granted if verb == "update"}
    assert updates == {("ecr-operator.io", "imagemirrors/finalizers")}
    assert {verb for group, resource, verb in granted if resource == "secrets"} == SECRET_VERBS
    assert not {group for group, _, _ in granted} - {"", "apiextensions.k8s.io", "ecr-operator.io"}
    documented = (Path(__file__).parents[2] / "docs" / "rbac.md").read_text()
    for verb in SECRET_VERBS:
        assert f"- **{verb}" in documented or f", {verb}" in documented, verb


# ``kubectl auth can-i`` questions and the chart identity's answer: the operator's work, and nothing else.
CAN_I = [
    ("list secrets --all-namespaces", True),
    ("watch secrets --all-namespaces", True),
    ("get secrets -n default", True),
    ("create secrets -n default", True),
    ("patch secrets -n default", True),
    ("delete secrets -n default", True),
    ("patch serviceaccounts -n default", True),
    ("create events -n default", True),
    ("create ecrrepositories.ecr-operator.io -n default", True),
    ("patch ecrrepositories.ecr-operator.io --subresource=status -n default", True),
    ("patch imagemirrors.ecr-operator.io --subresource=status -n default", True),
    ("watch namespaces", True),
    ("update secrets -n default", False),
    ("deletecollection secrets -n default", False),
    ("update serviceaccounts -n default", False),
    ("get serviceaccounts -n default", False),
    ("update ecrrepositories.ecr-operator.io -n default", False),
    ("delete ecrrepositories.ecr-operator.io -n default", False),
    ("update ecrrepositories.ecr-operator.io --subresource=status -n default", False),
    ("create imagemirrors.ecr-operator.io -n default", False),
    ("delete imagemirrors.ecr-operator.io -n default", False),
    ("patch events -n default", False),
    ("create events.events.k8s.io -n default", False),
    ("patch namespaces", False),
    ("delete namespaces", False),
    ("create pods -n default", False),
    ("get configmaps -n default", False),
    ("delete customresourcedefinitions", False),
    ("create clusterrolebindings", False),
    ("impersonate users", False),
]


@pytest.mark.parametrize(("question", "allowed"), CAN_I, ids=[question for question, _ in CAN_I])
def test_the_chart_identity_may_do_the_operators_work_and_nothing_else(
    world: World, chart_identity: ChartIdentity, question: str, allowed: bool
) -> None:
    assert can_i(world, chart_identity, *question.split()) is allowed


def test_the_operator_fixture_runs_as_the_chart_identity(
    world: World, chart_identity: ChartIdentity, operator: Any
) -> None:
    running = operator()
    whoami = world.kubectl("auth", "whoami", "-o", "json", kubeconfig=chart_identity.kubeconfig)

    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == chart_identity.username
    assert any(event.username == chart_identity.username for event in world.audit_events()), (
        running.describe()
    )


def test_the_pull_secret_only_role_grants_nothing_the_chart_does_not(chart_identity: ChartIdentity) -> None:
    [document] = [doc for doc in yaml.safe_load_all(PULL_SECRETS_RBAC.read_text()) if doc]

    assert _rules(document["rules"]) <= _rules(chart_identity.rules)


def _deployment_env(*values: str) -> dict[str, str]:
    helm = [str(tool_path("helm")), "template", "r", str(CHART), "--show-only", "templates/deployment.yaml"]
    result = subprocess.run([*helm, *values], capture_output=True, text=True, timeout=120, check=True)
    [deployment] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return {
        item["name"]: item.get("value")
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_the_allowed_regions_value_becomes_the_setting() -> None:
    """Not RBAC, but the other bound on what tenants can make the operator hold: regions (issue 8, F15)."""
    assert json.loads(_deployment_env()["ECR_OPERATOR_ALLOWED_REGIONS"]) == []
    chosen = _deployment_env("--set", "aws.allowedRegions={eu-west-1,xx-new-1}")
    assert json.loads(chosen["ECR_OPERATOR_ALLOWED_REGIONS"]) == ["eu-west-1", "xx-new-1"]
