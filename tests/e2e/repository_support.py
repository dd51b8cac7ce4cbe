"""Shared steps of the EcrRepository e2e tests: manifests, waiting, and what AWS and the cluster then say.

The tests drive the operator as a user does (``kubectl apply`` / ``kubectl delete``) and check AWS through
boto3 against moto. Repository names always contain the test's namespace: moto is shared by the session.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ecr_sandbox.aws import AwsCall
from ecr_sandbox.images import OCI_CONFIG, OCI_MANIFEST
from ecr_sandbox.kube import KubeApiError
from ecr_sandbox.world import World
from waiting import eventually

API_PATH = "/apis/ecr-operator.io/v1alpha1"
RBAC_FILE = __file__.rsplit("/", 1)[0] + "/rbac/operator-rbac.yaml"
# Read-only AWS operations; every other operation changes something.
READ_PREFIXES = ("Describe", "List", "Get", "BatchGet", "BatchCheck")
# Every e2e test runs its own operator; short drift passes keep the tests fast.
FAST_DRIFT = {"ECR_OPERATOR_DRIFT_INTERVAL": "2s", "ECR_OPERATOR_DRIFT_JITTER": "0.2s"}
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + "c" * 64, "size": 2},
        "layers": [],
    }
)
# Tags immutable, except ``latest``: the mutability setting with the most parts.
IMMUTABLE_EXCEPT_LATEST = {
    "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
    "imageTagMutabilityExclusionFilters": [{"filter": "latest"}],
}
# The ``operator`` fixture (tests/e2e/conftest.py) starts processes of this shape.
Operator = Any


def repository(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    """An EcrRepository manifest; the repository name defaults to ``<namespace>/<name>`` (unique in moto)."""
    return {
        "apiVersion": "ecr-operator.io/v1alpha1",
        "kind": "EcrRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"repositoryName": f"{namespace}/{name}", "registry": {"region": "us-east-1"}, **spec},
    }


def apply(world: World, *objects: Mapping[str, Any]) -> None:
    """``kubectl apply -f -`` of every object at once, as a user would (a JSON ``List``: YAML 1.1 would
    read a tag value like ``y`` as a boolean)."""
    world.kubectl(
        "apply", "--filename", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )


def get(world: World, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = world.kube_client().call(
            "GET", f"{API_PATH}/namespaces/{namespace}/ecrrepositories/{name}"
        )
    except KubeApiError as error:
        if error.status == 404:
            return None
        raise
    return document


def condition(document: Mapping[str, Any] | None, condition_type: str = "Ready") -> dict[str, Any]:
    for entry in ((document or {}).get("status") or {}).get("conditions") or []:
        if entry.get("type") == condition_type:
            return dict(entry)
    return {}


def wait_for_condition(
    world: World,
    namespace: str,
    name: str,
    *,
    condition_type: str = "Ready",
    status: str = "True",
    reason: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """The object once its condition has this status (and reason); returns the whole object."""

    def reached() -> dict[str, Any] | None:
        document = get(world, namespace, name)
        entry = condition(document, condition_type)
        if entry.get("status") == status and reason in (None, entry.get("reason")):
            return document
        return None

    return eventually(f"{namespace}/{name} {condition_type}={status} {reason or ''}", reached, timeout)


def ready_repository(world: World, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    """``repository(namespace, name, **spec)`` applied, once it is Ready; returns the object."""
    apply(world, repository(namespace, name, **spec))
    return wait_for_condition(world, namespace, name)


def status_of(world: World, namespace: str, name: str) -> dict[str, object]:
    return dict(((get(world, namespace, name) or {}).get("status")) or {})


def wait_for_generation(
    world: World, namespace: str, name: str, generation: int, timeout: float = 30.0
) -> None:
    """Until the operator has reconciled this generation of the spec."""
    eventually(
        f"{namespace}/{name} generation {generation} to be reconciled",
        lambda: status_of(world, namespace, name).get("observedGeneration") == generation,
        timeout,
    )


def wait_until_gone(world: World, namespace: str, name: str, timeout: float = 30.0) -> None:
    eventually(f"{namespace}/{name} to be deleted", lambda: get(world, namespace, name) is None, timeout)


def events(world: World, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about one EcrRepository, oldest first."""
    listed = world.kube_client().call(
        "GET",
        f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.kind%3DEcrRepository,"
        f"involvedObject.name%3D{name}",
    )
    items = sorted(listed["items"], key=lambda event: event["metadata"]["creationTimestamp"])
    return [(event["type"], event["reason"], event["message"]) for event in items]


def event_reasons(world: World, namespace: str, name: str) -> list[tuple[str, str]]:
    """(type, reason) of the Events about one EcrRepository, oldest first."""
    return [(kind, reason) for kind, reason, _ in events(world, namespace, name)]


def metric(running: Operator, name: str, **labels: str) -> float:
    """Sum of the operator's samples called ``name`` whose labels include ``labels``."""
    import urllib.request

    with urllib.request.urlopen(running.metrics_url, timeout=5) as response:  # noqa: S310 -- loopback only
        exposition = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


def is_mutating(call: AwsCall) -> bool:
    return not call.operation.startswith(READ_PREFIXES)


def mutations_since(world: World, mark: int) -> list[tuple[str, int]]:
    """(operation, HTTP status) of every mutating AWS call since ``mark``, failed ones included."""
    return [(call.operation, call.status) for call in world.aws_calls()[mark:] if is_mutating(call)]


def calls_since(world: World, mark: int, operation: str | None = None) -> list[AwsCall]:
    return [call for call in world.aws_calls()[mark:] if operation in (None, call.operation)]


def wait_for_quiet_aws(world: World, quiet: float = 2.0, timeout: float = 60.0) -> int:
    """Wait until moto has served nothing for ``quiet`` seconds; returns the call-log mark at that point."""

    def settled() -> int | None:
        calls = world.aws_calls()
        if not calls or time.time() - calls[-1].time >= quiet:
            return len(calls) or -1
        return None

    mark = eventually("AWS calls to stop", settled, timeout, interval=0.2)
    return max(mark, 0)


def tags_of(world: World, arn: str) -> dict[str, str]:
    response = world.boto3_client("ecr").list_tags_for_resource(resourceArn=arn)
    return {tag["Key"]: tag["Value"] for tag in response["tags"]}


def describe(world: World, repository_name: str) -> dict[str, Any] | None:
    ecr = world.boto3_client("ecr")
    try:
        [found] = ecr.describe_repositories(repositoryNames=[repository_name])["repositories"]
    except ecr.exceptions.RepositoryNotFoundException:
        return None
    return dict(found)


def push_image(world: World, repository_name: str, tag: str = "v1") -> None:
    """An image in the repository (moto's PutImage stores a manifest without needing its blobs)."""
    world.boto3_client("ecr").put_image(repositoryName=repository_name, imageManifest=MANIFEST, imageTag=tag)


def identity_roles_for(world: World, *namespaces: str) -> dict[str, str]:
    """Settings letting each namespace put identity policies on the roles named ``<namespace>-*`` (the
    operator allows no role by default)."""
    rules = [
        {"pattern": f"arn:aws:iam::{world.account_id}:role/{namespace}-*", "namespaces": [namespace]}
        for namespace in namespaces
    ]
    return {"ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES": json.dumps(rules)}


def adoption_in(*namespaces: str) -> dict[str, str]:
    """Settings letting these namespaces adopt unowned repositories (none may by default)."""
    return {"ECR_OPERATOR_ADOPTION_NAMESPACES": ",".join(namespaces)}


def short_token_lives(lifetime: int, lead: int) -> dict[str, str]:
    """Settings under which every ECR token lives ``lifetime`` seconds (moto's say they expired in 2015, so
    the fallback lifetime applies) and is refreshed ``lead`` seconds before that, without jitter."""
    return {
        "ECR_OPERATOR_TOKEN_FALLBACK_LIFETIME": f"{lifetime}s",
        "ECR_OPERATOR_TOKEN_REFRESH_LEAD": f"{lead}s",
        "ECR_OPERATOR_TOKEN_REFRESH_JITTER": "0s",
    }


def start(operator: Operator, namespaces: list[str], **env: str) -> Operator:
    """``ecr-operator run`` serving only ``namespaces``, with fast drift passes unless ``env`` overrides."""
    return operator(**(FAST_DRIFT | {"ECR_OPERATOR_NAMESPACES": ",".join(namespaces)} | env))
