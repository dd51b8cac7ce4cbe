"""The generated CRDs: names per the contract, a structural schema the apiserver can budget CEL against,
descriptions for `kubectl explain`, defaults the models agree with, printer columns that point at fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from ecr_operator.api.crd import CUSTOM_RESOURCES, CustomResource, crd_manifest, render_crds

pytestmark = pytest.mark.unit

RESOURCES = {resource.info.kind: resource for resource in CUSTOM_RESOURCES}


def schema_of(resource: CustomResource) -> dict[str, Any]:
    schema: dict[str, Any] = crd_manifest(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def nodes() -> list[Any]:
    return [
        pytest.param(path, node, id=f"{kind}{path}")
        for kind, resource in RESOURCES.items()
        for path, node in walk(schema_of(resource))
    ]


@pytest.mark.parametrize(
    ("kind", "plural", "singular", "short_names"),
    [
        ("EcrRepository", "ecrrepositories", "ecrrepository", ["ecrrepo"]),
        ("ImageMirror", "imagemirrors", "imagemirror", ["imgmirror"]),
    ],
)
def test_names_follow_the_contract(kind: str, plural: str, singular: str, short_names: list[str]) -> None:
    crd = yaml.safe_load(render_crds()[f"ecr-operator.io_{plural}.yaml"])

    assert crd["metadata"]["name"] == f"{plural}.ecr-operator.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": singular,
        "shortNames": short_names,
        "categories": ["ecr"],
    }
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize(("path", "node"), nodes())
def test_every_node_is_structural_and_bounded(path: str, node: dict[str, Any]) -> None:
    if path in (".apiVersion", ".kind"):
        return  # the apiserver's own fields
    # The apiserver estimates the worst-case cost of every CEL rule from these bounds, and refuses a CRD
    # whose rules could exceed the budget; unbounded strings or lists make every estimate worst-case.
    assert "type" in node, f"{path} has no type"
    if node["type"] == "string":
        assert "maxLength" in node or "enum" in node or node.get("format") == "date-time", (
            f"{path} is unbounded"
        )
    if node["type"] == "array":
        assert "maxItems" in node, f"{path} has no maxItems"
    if node["type"] == "object" and "additionalProperties" in node:
        assert "maxProperties" in node, f"{path} has no maxProperties"
        assert "properties" not in node, f"{path} mixes properties and additionalProperties"


@pytest.mark.parametrize(("path", "node"), nodes())
def test_every_field_has_a_description(path: str, node: dict[str, Any]) -> None:
    if path.endswith(("[]", "{}")) or path == ".metadata":
        return  # list items and map values are described by their field
    assert node.get("description"), f"{path} has no description for kubectl explain"


def test_conditions_are_a_map_keyed_by_type() -> None:
    for resource in CUSTOM_RESOURCES:
        conditions = schema_of(resource)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert "type" in conditions["items"]["required"]


def test_apiserver_defaults_are_the_model_defaults() -> None:
    # What the apiserver stores for a minimal object must parse to the same spec as the bare minimum.
    repository = schema_of(RESOURCES["EcrRepository"])["properties"]["spec"]
    mirror = schema_of(RESOURCES["ImageMirror"])["properties"]["spec"]
    minimal_repository = {"registry": {"region": "us-east-1"}}
    minimal_mirror = {
        "source": {"image": "docker.io/library/nginx"},
        "digests": ["sha256:" + "0" * 64],
        "destination": {"repositoryRef": {"name": "nginx"}},
    }

    for model, schema, minimal in (
        (RESOURCES["EcrRepository"].spec_model, repository, minimal_repository),
        (RESOURCES["ImageMirror"].spec_model, mirror, minimal_mirror),
    ):
        defaulted = apply_defaults(schema, minimal)
        assert defaulted != minimal
        assert model.model_validate(defaulted) == model.model_validate(minimal)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """The apiserver's structural defaulting: a missing field with a default gets it, recursively."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    result = dict(value)
    for name, child in schema["properties"].items():
        if name not in result and "default" in child:
            result[name] = child["default"]
        if name in result:
            result[name] = apply_defaults(child, result[name])
    return result


@pytest.mark.parametrize(
    ("resource", "column"),
    [(resource, column) for resource in CUSTOM_RESOURCES for column in resource.printer_columns],
    ids=lambda value: getattr(value, "name", None) or value.info.kind,
)
def test_printer_columns_point_at_schema_fields(resource: CustomResource, column: Any) -> None:
    if column.json_path.startswith(".metadata."):
        return
    node = schema_of(resource)
    for name in column.json_path.split("[")[0].strip(".").split("."):
        assert name in node.get("properties", {}), (
            f"column {column.name}: no field {name} in {column.json_path}"
        )
        node = node["properties"][name]


def test_printer_columns_per_the_contract() -> None:
    columns = {
        kind: [column.name for column in RESOURCES[kind].printer_columns if column.priority == 0]
        for kind in RESOURCES
    }

    assert columns == {
        "EcrRepository": ["URI", "Ready", "Reason", "Age"],
        "ImageMirror": ["Source", "Destination", "Ready", "Last Sync", "Age"],
    }
