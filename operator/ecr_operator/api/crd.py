"""CustomResourceDefinition manifests generated from the API models (`ecr-operator crds` / `make crds`).

pydantic's JSON schema is turned into a *structural* OpenAPI v3 schema, the dialect the apiserver accepts:
$refs inlined, optional fields as plain (omittable) properties instead of anyOf-with-null, no titles, map
key constraints as CEL. Output is deterministic, so CI can fail when crds/ is stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ecr_operator.api.common import CelRule, ResourceInfo
from ecr_operator.api.mirror import IMAGE_MIRROR, ImageMirrorSpec, ImageMirrorStatus
from ecr_operator.api.repository import ECR_REPOSITORY, EcrRepositorySpec, EcrRepositoryStatus

# Keywords of apiextensions.k8s.io/v1 JSONSchemaProps this generator may emit.
_STRUCTURAL_KEYWORDS = frozenset(
    {
        "type",
        "description",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "enum",
        "default",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
    }
)

GENERATED_HEADER = (
    "# Generated from ecr_operator.api by `ecr-operator crds` (or `make crds`). Do not edit by hand.\n"
)


class CrdGenerationError(Exception):
    """A model uses a JSON-schema construct that has no structural OpenAPI equivalent."""


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `kubectl get`."""

    name: str
    json_path: str
    description: str
    type: str = "string"
    priority: int = 0

    def as_manifest(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class CustomResource:
    """Everything a CRD is generated from."""

    info: ResourceInfo
    description: str
    spec_model: type[BaseModel]
    spec_description: str
    status_model: type[BaseModel]
    status_description: str
    printer_columns: tuple[PrinterColumn, ...]


_READY_CONDITION = '.status.conditions[?(@.type=="Ready")]'
_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "Time since creation.", type="date")


def _ready_column(subject: str) -> PrinterColumn:
    return PrinterColumn("Ready", f"{_READY_CONDITION}.status", f"Whether the {subject} is reconciled.")


def _reason_column(priority: int = 0) -> PrinterColumn:
    return PrinterColumn(
        "Reason", f"{_READY_CONDITION}.reason", "Why it is, or is not, ready.", priority=priority
    )


CUSTOM_RESOURCES = (
    CustomResource(
        info=ECR_REPOSITORY,
        description=(
            "An Amazon ECR repository with its settings, access policies and pull secret, kept in sync"
            " with this object (changes made in AWS are repaired)."
        ),
        spec_model=EcrRepositorySpec,
        spec_description="Desired state of the ECR repository.",
        status_model=EcrRepositoryStatus,
        status_description="Observed state of the ECR repository, written by the operator.",
        printer_columns=(
            PrinterColumn("URI", ".status.repositoryUri", "Repository URI to pull and push."),
            _ready_column("repository"),
            _reason_column(),
            _AGE,
            PrinterColumn("Region", ".spec.registry.region", "AWS region.", priority=1),
        ),
    ),
    CustomResource(
        info=IMAGE_MIRROR,
        description=(
            "Images copied from an OCI registry into Amazon ECR on a schedule: selected tags and"
            " digests, multi-platform, optionally with signatures and SBOMs, digest-exact."
        ),
        spec_model=ImageMirrorSpec,
        spec_description="Desired state of the mirror.",
        status_model=ImageMirrorStatus,
        status_description="Observed state of the mirror, written by the operator.",
        printer_columns=(
            PrinterColumn("Source", ".spec.source.image", "Repository images are copied from."),
            PrinterColumn("Destination", ".status.repositoryUri", "ECR repository images are copied to."),
            _ready_column("mirror"),
            PrinterColumn("Last Sync", ".status.lastSyncTime", "When the last sync completed.", type="date"),
            _AGE,
            _reason_column(priority=1),
            PrinterColumn("Suspended", ".spec.suspend", "Whether syncing is suspended.", "boolean", 1),
        ),
    ),
)


def render_crds() -> dict[str, str]:
    """CRD manifests by file name (e.g. ecr-operator.io_ecrrepositories.yaml), as YAML text."""
    return {
        f"{resource.info.group}_{resource.info.plural}.yaml": GENERATED_HEADER
        + yaml.safe_dump(crd_manifest(resource), sort_keys=False, allow_unicode=True, width=100)
        for resource in CUSTOM_RESOURCES
    }


def write_crds(out_dir: Path) -> list[Path]:
    """Write every CRD manifest into out_dir (created if missing); returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render_crds().items():
        path = out_dir / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def crd_manifest(resource: CustomResource) -> dict[str, Any]:
    info = resource.info
    root_schema: dict[str, Any] = {
        "type": "object",
        "description": resource.description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation of an object.",
            },
            "kind": {"type": "string", "description": "REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": {**openapi_schema(resource.spec_model), "description": resource.spec_description},
            "status": {**openapi_schema(resource.status_model), "description": resource.status_description},
        },
        "required": ["spec"],
    }
    if info.object_rules:
        root_schema["x-kubernetes-validations"] = [rule.as_schema() for rule in info.object_rules]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/name": "ecr-operator", "app.kubernetes.io/part-of": "ecr-operator"},
        },
        "spec": {
            "group": info.group,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": info.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [column.as_manifest() for column in resource.printer_columns],
                    "schema": {"openAPIV3Schema": _sorted_keys(root_schema)},
                }
            ],
        },
    }


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's input schema as a structural OpenAPI v3 schema."""
    json_schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = json_schema.pop("$defs", {})
    return _structural(_inline_refs(json_schema, definitions))


def _inline_refs(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline_refs(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" not in node:
        return {key: _inline_refs(value, definitions) for key, value in node.items()}
    target = _inline_refs(definitions[node["$ref"].removeprefix("#/$defs/")], definitions)
    # Keys beside the $ref describe this use of the type (its description, default, rules) and win,
    # except that rules add up: the type's own rules still hold.
    for key, value in node.items():
        if key == "x-kubernetes-validations":
            target[key] = [*target.get(key, []), *value]
        elif key != "$ref":
            target[key] = _inline_refs(value, definitions)
    return target


def _structural(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    options = schema.pop("anyOf", None)
    if options is not None:
        # Optional[X] is anyOf [X, null]: the apiserver expresses it by leaving the field out.
        present = [option for option in options if option != {"type": "null"}]
        if len(present) != 1:
            raise CrdGenerationError(f"unions have no structural form: {options}")
        rules = [*present[0].get("x-kubernetes-validations", []), *schema.get("x-kubernetes-validations", [])]
        schema = {**present[0], **schema}
        if rules:
            schema["x-kubernetes-validations"] = rules
    schema.pop("title", None)
    if "default" in schema and schema["default"] is None:
        del schema["default"]
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    if schema.get("additionalProperties") is False:
        del schema["additionalProperties"]
    key_schema = dict(schema.pop("propertyNames", {}))
    if "patternProperties" in schema:
        # pydantic spells a key pattern as {pattern: value schema}; one pattern per map is all we use.
        ((key_pattern, value_schema),) = schema.pop("patternProperties").items()
        key_schema["pattern"] = key_pattern
        schema["additionalProperties"] = value_schema
    if key_schema:
        schema["x-kubernetes-validations"] = [
            _key_rule(key_schema),
            *schema.get("x-kubernetes-validations", []),
        ]
    if "properties" in schema:
        schema["properties"] = {name: _structural(prop) for name, prop in schema["properties"].items()}
    for nested in ("items", "additionalProperties"):
        if isinstance(schema.get(nested), dict):
            schema[nested] = _structural(schema[nested])
    unsupported = set(schema) - _STRUCTURAL_KEYWORDS
    if unsupported:
        raise CrdGenerationError(f"no structural form for {sorted(unsupported)} in {schema}")
    return schema


def _key_rule(key_schema: dict[str, Any]) -> dict[str, Any]:
    """Map keys cannot carry a schema in a CRD; the same constraints become one CEL rule."""
    checks, wording = [], []
    if "minLength" in key_schema:
        checks.append(f"size(k) >= {key_schema['minLength']}")
    if "maxLength" in key_schema:
        checks.append(f"size(k) <= {key_schema['maxLength']}")
        wording.append(f"at most {key_schema['maxLength']} characters")
    if "pattern" in key_schema:
        checks.append(f"k.matches(r'{key_schema['pattern']}')")
        wording.append(f"matching {key_schema['pattern']}")
    unsupported = set(key_schema) - {"type", "minLength", "maxLength", "pattern"}
    if unsupported or not checks:
        raise CrdGenerationError(f"no CEL translation for map keys {key_schema}")
    return CelRule(
        f"self.all(k, {' && '.join(checks)})", f"every key must be non-empty, {' and '.join(wording)}"
    ).as_schema()


def _sorted_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _sorted_keys(node[key]) for key in sorted(node)}
    if isinstance(node, list):
        return [_sorted_keys(item) for item in node]
    return node
