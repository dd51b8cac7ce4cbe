"""Building blocks shared by the CRD models: the base model, CEL rules, conditions, registry identity.

Every constraint is declared in one place and enforced twice: by pydantic (what the operator and
its unit tests see) and by the CRD's OpenAPI schema and CEL rules (what the apiserver enforces).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

GROUP = "ecr-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class ResourceInfo:
    """Names of one custom resource kind, as the apiserver and kopf address it."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...] = ("ecr",)
    object_rules: tuple[CelRule, ...] = ()
    """Rules over the whole object (CEL `self` is the object; only metadata.name is visible)."""
    group: str = GROUP
    version: str = VERSION

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"


@dataclass(frozen=True)
class CelRule:
    """A validation rule enforced by the apiserver (CEL) and, when `check` is given, by pydantic too.

    `message` must name the offending field: it is what a user sees from `kubectl apply`.
    Rules that compare with `oldSelf` (transition rules) only exist in the apiserver.
    Used as `Annotated[..., CelRule(...)]` on a field, or listed in a model's `cel_rules`.
    """

    rule: str
    message: str
    check: Callable[[Any], bool] | None = field(default=None, compare=False)
    field_path: str | None = None
    reason: Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"] | None = None

    def as_schema(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            rule["fieldPath"] = self.field_path
        if self.reason is not None:
            rule["reason"] = self.reason
        return rule

    def enforce(self, value: Any) -> None:
        if self.check is not None and not self.check(value):
            raise ValueError(self.message)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        if self.check is None:
            return schema
        return core_schema.no_info_after_validator_function(self._validated, schema)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Added beside a possible $ref on purpose: the rule belongs to this field, not to the shared type.
        json_schema = handler(schema)
        json_schema.setdefault("x-kubernetes-validations", []).append(self.as_schema())
        return json_schema

    def _validated(self, value: Any) -> Any:
        self.enforce(value)
        return value


def exactly_one_of(first: str, second: str, message: str) -> CelRule:
    """A model rule: exactly one of two optional fields (Python names) is set."""
    return CelRule(
        f"has(self.{to_camel(first)}) != has(self.{to_camel(second)})",
        message,
        check=lambda model: (getattr(model, first) is None) != (getattr(model, second) is None),
    )


@dataclass(frozen=True)
class SetList:
    """Marks a list whose items must be unique: `x-kubernetes-list-type: set` in the CRD."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_require_unique_items, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["x-kubernetes-list-type"] = "set"
        return json_schema


def _require_unique_items(items: Sequence[Hashable]) -> Sequence[Hashable]:
    seen: set[Hashable] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"duplicate value {item!r}")
        seen.add(item)
    return items


def _add_model_rules(schema: dict[str, Any], model_class: type[Any]) -> None:
    rules: Sequence[CelRule] = getattr(model_class, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.as_schema() for rule in rules]


class ApiModel(BaseModel):
    """Base of every CRD model: camelCase on the wire, snake_case in Python, immutable, strict keys.

    Unknown keys are refused: the apiserver prunes them before the operator sees an object, so an
    unknown key can only be a typo in code or tests.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        json_schema_extra=_add_model_rules,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()
    """Rules over several fields of this model (CEL `self` is the model's object)."""

    @model_validator(mode="after")
    def _enforce_cel_rules(self) -> ApiModel:
        for rule in type(self).cel_rules:
            rule.enforce(self)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as the apiserver stores it: camelCase keys, JSON types, unset optionals left out."""
        return self.model_dump(mode="json", exclude_none=True)


class StatusModel(ApiModel):
    """Base of status models: tolerant of unknown keys, so an older operator can read a newer status."""

    model_config = ConfigDict(extra="ignore")


# --- strings with the shapes Kubernetes and AWS impose --------------------------------------------------

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DnsSubdomainName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
]

# ECR's own CreateRepository pattern; 2-256 characters.
REPOSITORY_NAME_PATTERN = r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$"
RepositoryName = Annotated[
    str, StringConstraints(min_length=2, max_length=256, pattern=REPOSITORY_NAME_PATTERN)
]


def validation_problems(error: ValidationError, limit: int = 5) -> str:
    """The first ``limit`` problems of a spec pydantic refused, each naming its field (conditions, Events)."""
    problems = []
    for detail in error.errors(include_url=False)[:limit]:
        where = ".".join(str(part) for part in detail["loc"])
        message = str(detail["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def is_repository_name(name: str) -> bool:
    return 2 <= len(name) <= 256 and re.fullmatch(REPOSITORY_NAME_PATTERN, name) is not None


ACCOUNT_ID_PATTERN = r"^[0-9]{12}$"
AccountId = Annotated[str, StringConstraints(min_length=12, max_length=12, pattern=ACCOUNT_ID_PATTERN)]

ROLE_ARN_PATTERN = r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]{1,512}$"
RoleArn = Annotated[str, StringConstraints(max_length=2048, pattern=ROLE_ARN_PATTERN)]

REGION_PATTERN = r"^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$"
Region = Annotated[str, StringConstraints(min_length=9, max_length=32, pattern=REGION_PATTERN)]

# OCI distribution tag grammar.
IMAGE_TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
ImageTag = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=IMAGE_TAG_PATTERN)]


# --- durations --------------------------------------------------------------------------------------

# Go-style durations ("6h", "1h30m", "90s"), the form Flux and kubectl users already write; CEL's
# duration() parses the same grammar, so the apiserver can compare them.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration made of h/m/s parts, e.g. "6h", "1h30m", "2.5m"."""
    if re.fullmatch(DURATION_PATTERN, text) is None:
        raise ValueError(f"{text!r} is not a duration like 6h, 1h30m or 90s")
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(duration: timedelta) -> str:
    """The shortest Go-style spelling of a duration ("6h", "1h30m", "45s")."""
    seconds = duration.total_seconds()
    hours, rest = divmod(seconds, 3600)
    minutes, rest = divmod(rest, 60)
    parts = [f"{int(hours)}h" if hours else "", f"{int(minutes)}m" if minutes else ""]
    if rest or not any(parts):
        parts.append(f"{rest:g}s")
    return "".join(parts)


def _duration_from_wire(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration_from_wire),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32}),
]


# --- shared objects ---------------------------------------------------------------------------------


class RegistryIdentity(ApiModel):
    """Which ECR registry, reached with which AWS identity. Hashable: it keys token and client caches."""

    cel_rules = (
        CelRule(
            "self.region == oldSelf.region",
            "registry.region is immutable: a repository cannot move to another region",
            field_path=".region",
        ),
        CelRule(
            "has(self.accountId) == has(oldSelf.accountId)"
            " && (!has(self.accountId) || self.accountId == oldSelf.accountId)",
            "registry.accountId is immutable: a repository cannot move to another account",
            field_path=".accountId",
        ),
    )

    region: Region = Field(description="AWS region of the registry, e.g. us-east-1. Immutable.")
    account_id: AccountId | None = Field(
        default=None,
        description=(
            "12-digit AWS account ID that owns the registry. Defaults to the account of the operator's"
            " credentials (or of roleArn when set). Immutable."
        ),
    )
    role_arn: RoleArn | None = Field(
        default=None,
        description=(
            "IAM role the operator assumes to manage this registry, for cross-account access. Honoured"
            " only when it matches the role allow-list the cluster admin configured for the operator."
        ),
    )


class LocalObjectReference(ApiModel):
    """Reference to an object in the same namespace."""

    name: DnsSubdomainName = Field(description="Name of the object, in the same namespace.")


LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=317, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[
    str,
    StringConstraints(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"),
]


class LabelSelectorOperator(StrEnum):
    """How a label selector requirement relates a label to its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(ApiModel):
    """One label requirement, as in any Kubernetes label selector."""

    cel_rules = (
        CelRule(
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
            " : !has(self.values) || size(self.values) == 0",
            "matchExpressions values must be non-empty for In and NotIn,"
            " and empty for Exists and DoesNotExist",
            check=lambda r: (r.operator in ("In", "NotIn")) == bool(r.values),
            field_path=".values",
        ),
    )

    key: LabelKey = Field(description="Label key the requirement applies to.")
    operator: LabelSelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: Annotated[list[LabelValue], SetList()] | None = Field(
        default=None, max_length=64, description="Label values; required for In and NotIn, empty otherwise."
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector. An empty selector selects every object."""

    match_labels: dict[LabelKey, LabelValue] | None = Field(
        default=None, max_length=32, description="Labels an object must carry, all of them, exactly."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Requirements an object's labels must meet, all of them."
    )


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(StatusModel):
    """An observation of the object's state, shaped like metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description="Kind of observation: Ready (everything reconciled) or Synced (last sync succeeded).",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="CamelCase reason for the last transition, meant for machines and alerts.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the spec this condition was computed from."
    )
    last_transition_time: datetime = Field(description="When status last changed.")


def _require_unique_condition_types(conditions: list[Condition]) -> list[Condition]:
    _require_unique_items([condition.type for condition in conditions])
    return conditions


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        description="Current state: Ready and Synced, each with a reason and a message.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
    AfterValidator(_require_unique_condition_types),
]
