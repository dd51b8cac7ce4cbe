"""The API models: defaults, wire names, helpers, and the same verdicts as the apiserver's CRD schema."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ecr_operator.api.common import (
    Condition,
    ConditionStatus,
    RegistryIdentity,
    format_duration,
    parse_duration,
)
from ecr_operator.api.mirror import ImageMirrorSpec, ImageMirrorStatus, MutableTagPolicy
from ecr_operator.api.repository import (
    AdoptionPolicy,
    DeletionPolicy,
    EcrRepositorySpec,
    EcrRepositoryStatus,
    EncryptionType,
    ImageTagMutability,
)

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
INVALID_DIR = REPO_ROOT / "tests" / "e2e" / "invalid"
SPEC_MODELS: dict[str, type[EcrRepositorySpec] | type[ImageMirrorSpec]] = {
    "EcrRepository": EcrRepositorySpec,
    "ImageMirror": ImageMirrorSpec,
}
REGISTRY = {"region": "us-east-1"}


def mirror_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"image": "docker.io/library/nginx"},
        "tags": {"list": ["stable"]},
        "destination": {"repositoryRef": {"name": "nginx"}},
    }
    spec.update(overrides)
    return spec


def validation_message(model: type[BaseModel], data: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(data)
    return str(raised.value)


# --- defaults and wire names ------------------------------------------------------------------------


def test_minimal_repository_gets_the_documented_defaults() -> None:
    spec = EcrRepositorySpec.model_validate({"registry": REGISTRY})

    assert spec.image_tag_mutability is ImageTagMutability.MUTABLE
    assert spec.scan_on_push is False
    assert spec.encryption.type is EncryptionType.AES256
    assert spec.encryption.kms_key is None
    assert spec.tags == {}
    assert spec.deletion_policy is DeletionPolicy.RETAIN
    assert spec.adoption is AdoptionPolicy.ADOPT
    assert (spec.lifecycle_policy, spec.access, spec.pull_secret) == (None, None, None)


def test_minimal_mirror_gets_the_documented_defaults() -> None:
    spec = ImageMirrorSpec.model_validate(mirror_spec())

    assert spec.interval == timedelta(hours=6)
    assert spec.suspend is False
    assert spec.referrers is False
    assert spec.mutable_tags is MutableTagPolicy.FOLLOW
    assert spec.wanted_platforms is None


def test_camel_case_wire_names_map_to_snake_case_attributes_and_back() -> None:
    wire = {
        "repositoryName": "team/app",
        "registry": {"region": "eu-west-1", "accountId": "123456789012"},
        "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [{"filter": "latest"}],
        "scanOnPush": True,
        "encryption": {"type": "KMS", "kmsKey": "alias/team"},
        "pullSecret": {"serviceAccounts": ["default"], "secretName": "ecr-pull"},
    }

    spec = EcrRepositorySpec.model_validate(wire)

    assert spec.repository_name == "team/app"
    assert spec.registry.account_id == "123456789012"
    assert spec.encryption.kms_key == "alias/team"
    assert spec.pull_secret is not None
    assert spec.pull_secret.secret_name == "ecr-pull"
    out = spec.to_wire()
    assert out["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest"}]
    assert out["pullSecret"] == {"serviceAccounts": ["default"], "secretName": "ecr-pull"}
    assert EcrRepositorySpec.model_validate(out) == spec


def test_python_names_are_accepted_too() -> None:
    spec = EcrRepositorySpec(registry=RegistryIdentity(region="us-east-1"), scan_on_push=True)

    assert spec.to_wire()["scanOnPush"] is True


def test_kopf_spec_validates_as_is() -> None:
    body = kopf.Body({"metadata": {"name": "app"}, "spec": {"registry": REGISTRY, "scanOnPush": True}})

    spec = EcrRepositorySpec.model_validate(body.spec)

    assert spec.scan_on_push is True


def test_mirror_tag_list_is_called_list_on_the_wire() -> None:
    spec = ImageMirrorSpec.model_validate(mirror_spec(tags={"list": ["1.27", "stable"]}))

    assert spec.tags is not None
    assert spec.tags.names == ["1.27", "stable"]
    assert spec.to_wire()["tags"] == {"list": ["1.27", "stable"]}


def test_interval_reads_go_durations_and_writes_them_back() -> None:
    spec = ImageMirrorSpec.model_validate(mirror_spec(interval="1h30m"))

    assert spec.interval == timedelta(minutes=90)
    assert spec.to_wire()["interval"] == "1h30m"
    assert ImageMirrorSpec.model_validate(mirror_spec()).to_wire()["interval"] == "6h"


@given(st.integers(min_value=1, max_value=10 * 365 * 24 * 3600))
def test_duration_format_round_trips(seconds: int) -> None:
    duration = timedelta(seconds=seconds)

    text = format_duration(duration)

    assert parse_duration(text) == duration
    assert re.fullmatch(r"(\d+h)?(\d+m)?(\d+s)?", text)


def test_unknown_spec_keys_are_refused() -> None:
    message = validation_message(EcrRepositorySpec, {"registry": REGISTRY, "scanOnPsh": True})

    assert "scanOnPsh" in message


def test_status_keeps_known_fields_and_ignores_unknown_ones() -> None:
    status = EcrRepositoryStatus.model_validate(
        {
            "repositoryUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/app",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Reconciled",
                    "lastTransitionTime": "2025-01-02T03:04:05Z",
                }
            ],
            "kopf": {"progress": {}},
        }
    )

    assert status.conditions[0].status is ConditionStatus.TRUE
    assert status.conditions[0].last_transition_time == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert status.drift_corrections == 0
    assert "kopf" not in status.to_wire()


def test_status_refuses_two_conditions_of_one_type() -> None:
    ready = Condition(
        type="Ready", status=ConditionStatus.TRUE, reason="Ok", last_transition_time=datetime.now(UTC)
    )

    message = validation_message(EcrRepositoryStatus, {"conditions": [ready.to_wire(), ready.to_wire()]})

    assert "conditions" in message
    assert "duplicate" in message


def test_mirror_status_uses_bytes_on_the_wire() -> None:
    entry = {
        "tag": "1.27.3",
        "sourceDigest": "sha256:" + "a" * 64,
        "destinationDigest": "sha256:" + "a" * 64,
        "syncedAt": "2025-01-02T03:04:05Z",
        "bytes": 1234,
    }

    status = ImageMirrorStatus.model_validate({"tags": [entry]})

    assert status.tags[0].size_bytes == 1234
    assert status.to_wire()["tags"][0]["bytes"] == 1234


# --- helpers ----------------------------------------------------------------------------------------


def test_effective_repository_name_prefers_spec_then_metadata_name() -> None:
    named = EcrRepositorySpec.model_validate({"registry": REGISTRY, "repositoryName": "team/app"})
    unnamed = EcrRepositorySpec.model_validate({"registry": REGISTRY})

    assert named.effective_repository_name("anything") == "team/app"
    assert unnamed.effective_repository_name("my-app.v2") == "my-app.v2"


@pytest.mark.parametrize("metadata_name", ["a", "a--b", "a.-b"])
def test_effective_repository_name_refuses_a_metadata_name_ecr_would_refuse(metadata_name: str) -> None:
    spec = EcrRepositorySpec.model_validate({"registry": REGISTRY})

    with pytest.raises(ValueError, match=r"set spec\.repositoryName"):
        spec.effective_repository_name(metadata_name)


def test_registry_identity_is_a_hashable_cache_key() -> None:
    first = RegistryIdentity.model_validate({"region": "us-east-1", "accountId": "123456789012"})
    same = RegistryIdentity(region="us-east-1", account_id="123456789012")

    assert {first: "token"}[same] == "token"
    assert first != RegistryIdentity(region="us-east-1")


def test_child_repository_spec_combines_name_registry_and_template() -> None:
    spec = ImageMirrorSpec.model_validate(
        mirror_spec(
            destination={
                "repositoryName": "mirror/nginx",
                "create": True,
                "registry": REGISTRY,
                "template": {"imageTagMutability": "IMMUTABLE", "tags": {"team": "platform"}},
            },
            mutableTags="Keep",
        )
    )

    child = spec.destination.child_repository_spec()

    assert child.repository_name == "mirror/nginx"
    assert child.registry == RegistryIdentity(region="us-east-1")
    assert child.image_tag_mutability is ImageTagMutability.IMMUTABLE
    assert child.tags == {"team": "platform"}
    assert child.deletion_policy is DeletionPolicy.RETAIN


def test_child_repository_spec_without_template_uses_defaults() -> None:
    destination = {"repositoryName": "mirror/nginx", "create": True, "registry": REGISTRY}
    spec = ImageMirrorSpec.model_validate(mirror_spec(destination=destination))

    assert spec.destination.child_repository_spec() == EcrRepositorySpec.model_validate(
        {"repositoryName": "mirror/nginx", "registry": REGISTRY}
    )


@pytest.mark.parametrize(
    ("platforms", "wanted"),
    [
        ([], None),
        (["all"], None),
        (["linux/amd64", "linux/arm64/v8"], frozenset({"linux/amd64", "linux/arm64/v8"})),
    ],
)
def test_wanted_platforms(platforms: list[str], wanted: frozenset[str] | None) -> None:
    assert ImageMirrorSpec.model_validate(mirror_spec(platforms=platforms)).wanted_platforms == wanted


# --- what is accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "principal",
    [
        "123456789012",
        "arn:aws:iam::123456789012:root",
        "arn:aws:iam::123456789012:role/ci/builder",
        "arn:aws-us-gov:iam::123456789012:user/alice",
        "o-a1b2c3d4e5",
        "lambda.amazonaws.com",
        "pods.eks.amazonaws.com",
    ],
)
def test_every_principal_form_is_accepted(principal: str) -> None:
    access = {"grants": [{"principals": [principal], "actions": "pull"}]}

    EcrRepositorySpec.model_validate({"registry": REGISTRY, "access": access})


@pytest.mark.parametrize(
    "semver",
    [">=1.26.0 <1.28.0", "~1.27", "^2", "1.2.x || >=2.0 <2.5", "1.2 - 1.4.5", ">= 1.2, < 3.0.0", "*", "v1.x"],
)
def test_semver_ranges_are_accepted(semver: str) -> None:
    ImageMirrorSpec.model_validate(mirror_spec(tags={"semver": semver}))


@pytest.mark.parametrize(
    "image",
    [
        "docker.io/library/nginx",
        "ghcr.io/org/team/app",
        "localhost/app",
        "localhost:5000/app",
        "127.0.0.1:5000/mirror/app",
        "registry:5000/app",
        "[::1]:5000/app",
        "public.ecr.aws/docker/library/redis",
    ],
)
def test_source_images_with_a_registry_host_are_accepted(image: str) -> None:
    ImageMirrorSpec.model_validate(mirror_spec(source={"image": image}))


def test_lifecycle_rules_with_any_last_are_accepted_with_and_without_priorities() -> None:
    untagged = {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 7}
    catch_all = {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 100}
    by_order = {"rules": [{"selection": untagged}, {"selection": catch_all}]}
    by_priority = {
        "rules": [{"priority": 50, "selection": catch_all}, {"priority": 5, "selection": untagged}]
    }

    for policy in (by_order, by_priority):
        spec = EcrRepositorySpec.model_validate({"registry": REGISTRY, "lifecyclePolicy": policy})
        assert spec.lifecycle_policy is not None


def test_lifecycle_rule_action_defaults_to_expire() -> None:
    rule = {"selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}}
    spec = EcrRepositorySpec.model_validate({"registry": REGISTRY, "lifecyclePolicy": {"rules": [rule]}})

    assert spec.to_wire()["lifecyclePolicy"]["rules"][0]["action"] == {"type": "expire"}


# --- what is refused, beyond the schema: JSON and regular expressions ------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"raw": "{not json"}, "lifecyclePolicy.raw is not valid JSON"),
        ({"raw": "[1, 2]"}, "lifecyclePolicy.raw must be a JSON object"),
        ({"raw": '{"rules": []}'}, "non-empty rules list"),
    ],
)
def test_raw_lifecycle_policy_must_be_a_policy_document(policy: dict[str, str], expected: str) -> None:
    message = validation_message(EcrRepositorySpec, {"registry": REGISTRY, "lifecyclePolicy": policy})

    assert expected in message


def test_raw_repository_policy_must_be_a_policy_document() -> None:
    message = validation_message(EcrRepositorySpec, {"registry": REGISTRY, "access": {"policy": '{"a": 1}'}})

    assert "access.policy must be an IAM policy document" in message


@pytest.mark.parametrize("field", ["include", "exclude"])
def test_tag_filters_must_be_regular_expressions(field: str) -> None:
    tags = {"semver": ">=1.0.0", field: "v(1"}

    message = validation_message(ImageMirrorSpec, mirror_spec(tags=tags))

    assert f"tags.{field}" in message
    assert "not a valid regular expression" in message


# --- the same verdicts as the apiserver -------------------------------------------------------------


def invalid_cases() -> list[Any]:
    cases = []
    for path in sorted(INVALID_DIR.glob("*.yaml")):
        text = path.read_text()
        match = re.search(r"^# rejected: (\S+)$", text, re.MULTILINE)
        assert match, f"{path.name} lacks a '# rejected: <field path>' header"
        cases.append(pytest.param(list(yaml.safe_load_all(text)), match.group(1), id=path.stem))
    return cases


def leaf_field(field_path: str) -> str:
    """spec.access.grants[0].principals[0] -> principals."""
    return re.sub(r"\[\d+\]", "", field_path).rsplit(".", 1)[-1]


def rejection(document: dict[str, Any]) -> str:
    try:
        spec = SPEC_MODELS[document["kind"]].model_validate(document["spec"])
        if isinstance(spec, EcrRepositorySpec):
            spec.effective_repository_name(document["metadata"]["name"])
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        return str(error)
    pytest.fail(f"the models accept {document}")


@pytest.mark.parametrize(("documents", "field_path"), invalid_cases())
def test_models_refuse_what_the_apiserver_refuses(documents: list[dict[str, Any]], field_path: str) -> None:
    *earlier, rejected = documents
    if earlier:
        # An update the apiserver refuses by comparing with the old object: each state is valid on its own.
        for document in documents:
            SPEC_MODELS[document["kind"]].model_validate(document["spec"])
        return

    assert leaf_field(field_path) in rejection(rejected)


def test_there_are_enough_invalid_cases() -> None:
    assert len(invalid_cases()) >= 25


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "examples").glob("*.yaml")), ids=lambda path: path.stem)
def test_examples_are_valid(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))

    for document in documents:
        assert document["apiVersion"] == "ecr-operator.io/v1alpha1"
        spec = SPEC_MODELS[document["kind"]].model_validate(document["spec"])
        if isinstance(spec, EcrRepositorySpec):
            spec.effective_repository_name(document["metadata"]["name"])
            assert spec.registry.region == "us-east-1"
            assert spec.registry.account_id in (None, "123456789012")
