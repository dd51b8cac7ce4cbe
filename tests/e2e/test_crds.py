"""The CRDs in a real apiserver: they install, accept every example as the models read it, describe
themselves to `kubectl explain`, show status in `kubectl get`, and refuse invalid objects naming the field."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecr_operator.api.common import Condition, ConditionStatus
from ecr_operator.api.crd import CUSTOM_RESOURCES
from ecr_operator.api.mirror import ImageMirrorSpec, ImageMirrorStatus
from ecr_operator.api.repository import EcrRepositorySpec, EcrRepositoryStatus, LifecyclePolicy
from ecr_sandbox.world import World

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))
SPEC_MODELS: dict[str, type[EcrRepositorySpec] | type[ImageMirrorSpec]] = {
    "EcrRepository": EcrRepositorySpec,
    "ImageMirror": ImageMirrorSpec,
}


def one_line(text: str) -> str:
    return " ".join(text.split())


def stored_objects(kubectl_json: str) -> list[dict[str, Any]]:
    document = json.loads(kubectl_json)
    items: list[dict[str, Any]] = document["items"] if document["kind"] == "List" else [document]
    return items


def test_crds_install_and_become_established(world: World) -> None:
    world.kubectl("apply", "-f", str(REPO_ROOT / "crds"))

    for resource in CUSTOM_RESOURCES:
        world.kubectl("wait", "--for=condition=Established", f"crd/{resource.info.crd_name}", "--timeout=60s")
    names = world.kubectl("api-resources", "--api-group=ecr-operator.io", "-o", "name").stdout.split()
    assert sorted(names) == ["ecrrepositories.ecr-operator.io", "imagemirrors.ecr-operator.io"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_is_stored_as_the_models_read_it(world: World, namespace: str, example: Path) -> None:
    applied = world.kubectl("apply", "-n", namespace, "-f", str(example), "-o", "json").stdout

    originals = list(yaml.safe_load_all(example.read_text()))
    stored = stored_objects(applied)
    assert [item["metadata"]["name"] for item in stored] == [doc["metadata"]["name"] for doc in originals]
    for original, item in zip(originals, stored, strict=True):
        model = SPEC_MODELS[original["kind"]]
        # The apiserver's defaults and the models' defaults agree: both readings are the same spec.
        assert model.model_validate(item["spec"]) == model.model_validate(original["spec"])


def test_apiserver_fills_in_defaults(world: World, namespace: str) -> None:
    minimal = {
        "apiVersion": "ecr-operator.io/v1alpha1",
        "kind": "EcrRepository",
        "metadata": {"name": "defaults"},
        "spec": {"registry": {"region": "us-east-1"}},
    }

    stored = json.loads(
        world.kubectl("apply", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(minimal)).stdout
    )

    assert stored["spec"] == {
        "registry": {"region": "us-east-1"},
        "imageTagMutability": "MUTABLE",
        "scanOnPush": False,
        "encryption": {"type": "AES256"},
        "deletionPolicy": "Retain",
        "adoption": "Adopt",
    }


def test_kubectl_explain_reads_the_model_descriptions(world: World) -> None:
    explained = one_line(world.kubectl("explain", "ecrrepository.spec.lifecyclePolicy").stdout)

    lifecycle_policy = EcrRepositorySpec.model_fields["lifecycle_policy"].description
    assert lifecycle_policy is not None
    assert one_line(lifecycle_policy) in explained
    for field_name in ("rules", "raw"):
        description = LifecyclePolicy.model_fields[field_name].description
        assert description is not None
        assert one_line(description) in explained, f"{field_name} is not described"

    destination = one_line(world.kubectl("explain", "imagemirror.spec.destination.repositoryName").stdout)
    assert "Requires create: true" in destination


def condition(status: ConditionStatus, reason: str) -> Condition:
    return Condition(type="Ready", status=status, reason=reason, last_transition_time=datetime.now(UTC))


def test_kubectl_get_shows_uri_and_readiness(world: World, namespace: str) -> None:
    example = REPO_ROOT / "examples" / "imagemirror-nginx.yaml"
    world.kubectl("apply", "-n", namespace, "-f", str(example))
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mirror/docker.io/library/nginx"
    repository_status = EcrRepositoryStatus(
        conditions=[condition(ConditionStatus.TRUE, "Reconciled")],
        repository_uri=uri,
        registry_id="123456789012",
    )
    mirror_status = ImageMirrorStatus(
        conditions=[condition(ConditionStatus.FALSE, "SourceUnreachable")],
        repository_uri=uri,
        last_sync_time=datetime.now(UTC),
    )
    for kind, status in (("ecrrepository", repository_status), ("imagemirror", mirror_status)):
        patch = json.dumps({"status": status.to_wire()})
        world.kubectl(
            "patch", kind, "nginx", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
        )

    repositories = world.kubectl("get", "ecrrepo", "-n", namespace).stdout.splitlines()
    mirrors = world.kubectl("get", "imgmirror", "-n", namespace, "-o", "wide").stdout.splitlines()

    assert repositories[0].split() == ["NAME", "URI", "READY", "REASON", "AGE"]
    assert repositories[1].split()[:4] == ["nginx", uri, "True", "Reconciled"]
    assert mirrors[0].split() == [
        "NAME",
        "SOURCE",
        "DESTINATION",
        "READY",
        "LAST",
        "SYNC",
        "AGE",
        "REASON",
        "SUSPENDED",
    ]
    assert mirrors[1].split()[:4] == ["nginx", "docker.io/library/nginx", uri, "False"]
    assert mirrors[1].split()[-2:] == ["SourceUnreachable", "false"]
    listed = world.kubectl("get", "ecr", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == ["ecrrepository.ecr-operator.io/nginx", "imagemirror.ecr-operator.io/nginx"]


@pytest.mark.parametrize(
    "tags",
    [
        {"semver": ">=1.26.0 <1.28.0"},
        {"semver": "~1.27 || ^2"},
        {"semver": ">= 1.2, < 3.0.0"},
        {"semver": "1.2 - 1.4.5"},
        {"include": "^1\\.2[6-9]\\.[0-9]+$", "exclude": "-rc", "keepLatest": 3},
    ],
    ids=lambda tags: one_line(json.dumps(tags)),
)
def test_tag_selections_users_write_are_accepted(world: World, namespace: str, tags: dict[str, Any]) -> None:
    mirror = {
        "apiVersion": "ecr-operator.io/v1alpha1",
        "kind": "ImageMirror",
        "metadata": {"name": "accepted"},
        "spec": {
            "source": {"image": "registry.example.com:5000/team/app"},
            "tags": tags,
            "destination": {"repositoryRef": {"name": "app"}},
            "interval": "1m",
        },
    }

    world.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(mirror))


def invalid_case(path: Path) -> Any:
    text = path.read_text()
    match = re.search(r"^# rejected: (\S+)$", text, re.MULTILINE)
    assert match, f"{path.name} lacks a '# rejected: <field path>' header"
    return pytest.param(list(yaml.safe_load_all(text)), match.group(1), id=path.stem)


@pytest.mark.parametrize(("documents", "field_path"), [invalid_case(path) for path in INVALID])
def test_invalid_object_is_rejected_naming_the_field(
    world: World, namespace: str, documents: list[dict[str, Any]], field_path: str
) -> None:
    *earlier, rejected = documents
    for document in earlier:
        world.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))

    result = world.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(rejected), check=False)

    assert result.returncode != 0, f"the apiserver accepted {rejected}"
    assert field_path in result.stderr, result.stderr


def test_there_are_enough_invalid_cases() -> None:
    assert len(INVALID) >= 25
