"""The Helm chart: it renders, installs into the real apiserver, and its RBAC is enough for the operator.

There is no kubelet in the test world, so the chart's Deployment never runs a pod; instead the operator
process runs here with a token of the chart's ServiceAccount — exactly the identity the pod would have.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecr_sandbox.tools import tool_path
from ecr_sandbox.world import World
from operator_fixture import token_kubeconfig
from waiting import first_within

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "ecr-operator"
RELEASE = "ecr-operator"


def helm(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tool_path("helm")), f"--kubeconfig={world.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def rendered(world: World, *values: str) -> list[dict[str, Any]]:
    output = helm(world, "template", RELEASE, str(CHART), "--namespace", "ops", *values).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def test_chart_lints_clean(world: World) -> None:
    output = helm(world, "lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in output


def test_rbac_has_no_wildcards_and_no_cluster_admin_powers(world: World) -> None:
    [role] = [doc for doc in rendered(world) if doc["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(key, []), f"wildcard in {key}: {rule}"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    resources = {resource for rule in role["rules"] for resource in rule["resources"]}
    assert not {"pods", "clusterroles", "clusterrolebindings", "roles", "rolebindings", "nodes"} & resources


def test_values_become_operator_settings(world: World) -> None:
    documents = rendered(
        world,
        "--set",
        "pullSecrets.registries[0].accountId=123456789012",
        "--set",
        "pullSecrets.registries[0].region=us-east-1",
        "--set",
        "pullSecrets.registries[0].roleArn=arn:aws:iam::123456789012:role/ecr-pull",
        "--set",
        "pullSecrets.registries[1].accountId=012345678901",
        "--set",
        "pullSecrets.registries[1].region=eu-west-1",
        "--set",
        "pullSecrets.registries[1].roleArn=arn:aws:iam::012345678901:role/ecr-pull",
        "--set-literal",
        "operator.repositoryNamePrefix={namespace}/",
        "--set-literal",
        "pullSecrets.roleArnTemplate=arn:aws:iam::{accountId}:role/ecr-pull-{namespace}",
    )
    [deployment] = [doc for doc in documents if doc["kind"] == "Deployment"]
    env = {
        item["name"]: item.get("value")
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    pull_secrets = json.loads(env["ECR_OPERATOR_PULL_SECRETS"])
    role = "arn:aws:iam::"
    # Unquoted account IDs (numbers to YAML and --set) come out as 12-digit strings, leading zero kept.
    assert pull_secrets["registries"] == [
        {"accountId": "123456789012", "region": "us-east-1", "roleArn": f"{role}123456789012:role/ecr-pull"},
        {"accountId": "012345678901", "region": "eu-west-1", "roleArn": f"{role}012345678901:role/ecr-pull"},
    ]
    # Pull secrets are minted from pull roles; the operator's own credentials only if the admin opts in.
    assert env["ECR_OPERATOR_PULL_SECRET_ROLE_ARN_TEMPLATE"] == (
        "arn:aws:iam::{accountId}:role/ecr-pull-{namespace}"
    )
    assert env["ECR_OPERATOR_PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT"] == "false"
    assert env["ECR_OPERATOR_REPOSITORY_NAME_PREFIX"] == "{namespace}/"
    assert env["ECR_OPERATOR_BIND_ADDRESS"] == "0.0.0.0"  # noqa: S104 -- a pod serves probes on its IP


def test_more_than_one_replica_is_refused(world: World) -> None:
    result = subprocess.run(
        [str(tool_path("helm")), "template", RELEASE, str(CHART), "--set", "replicas=2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "replicas must be 1" in result.stderr


@pytest.fixture
def installed_chart(world: World) -> Iterator[str]:
    namespace = world.create_namespace("ops-")
    helm(world, "install", RELEASE, str(CHART), "--namespace", namespace, "--skip-crds")
    yield namespace
    helm(world, "uninstall", RELEASE, "--namespace", namespace)
    world.delete_namespace(namespace)


def service_account_kubeconfig(world: World, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig carrying a TokenRequest token of the chart's ServiceAccount (what the pod would mount)."""
    token = world.kubectl("create", "token", RELEASE, "-n", namespace, "--duration=1h").stdout.strip()
    return token_kubeconfig(world, token, tmp_path / "service-account.kubeconfig")


def can_i(world: World, kubeconfig: Path, *args: str) -> bool:
    result = world.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    return result.stdout.strip() == "yes"


def test_chart_service_account_can_do_the_operators_work_and_nothing_else(
    world: World, installed_chart: str, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(world, installed_chart, tmp_path)

    assert can_i(world, kubeconfig, "patch", "ecrrepositories.ecr-operator.io/status", "-A")
    assert can_i(world, kubeconfig, "patch", "secrets", "-n", "default")
    assert can_i(world, kubeconfig, "patch", "serviceaccounts", "-n", "default")
    assert can_i(world, kubeconfig, "create", "events", "-n", "default")
    assert not can_i(world, kubeconfig, "create", "pods", "-n", "default")
    assert not can_i(world, kubeconfig, "delete", "namespaces")
    assert not can_i(world, kubeconfig, "create", "clusterrolebindings")
    assert not can_i(world, kubeconfig, "delete", "customresourcedefinitions")


def test_operator_runs_with_the_charts_identity(
    world: World, installed_chart: str, namespace: str, operator: Any, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(world, installed_chart, tmp_path)
    process = operator(kubeconfig=kubeconfig)
    world.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "ecr-operator.io/v1alpha1",
                "kind": "EcrRepository",
                "metadata": {"name": "chart-rbac-check"},
                "spec": {"registry": {"region": world.region}},
            }
        ),
    )

    def conditions_written() -> list[dict[str, Any]]:
        body = json.loads(
            world.kubectl("get", "ecrrepository", "chart-rbac-check", "-n", namespace, "-o", "json").stdout
        )
        conditions: list[dict[str, Any]] = body.get("status", {}).get("conditions", [])
        return conditions

    conditions = first_within(conditions_written, 30, interval=0.5)
    assert conditions, f"the operator never wrote status with the chart's identity\n{process.describe()}"
    forbidden = [line for line in process.log_text().splitlines() if "forbidden" in line.lower()]
    assert not forbidden, "the chart's RBAC refused the operator:\n" + "\n".join(forbidden[:10])
