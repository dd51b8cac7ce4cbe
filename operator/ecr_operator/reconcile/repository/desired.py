"""What the spec asks for, in AWS's terms, and what the admin's settings refuse before any AWS call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ecr_operator.api.repository import (
    MAX_REPOSITORY_POLICY_CHARS,
    AdoptionPolicy,
    DeletionPolicy,
    EcrRepositorySpec,
    LifecyclePolicy,
    LifecycleRule,
    RepositoryAccess,
)
from ecr_operator.config import Settings
from ecr_operator.reconcile.lifecycle import (
    LifecyclePolicyError,
    parse_lifecycle_policy,
    validate_lifecycle_policy,
)
from ecr_operator.reconcile.policy import (
    Access,
    Grant,
    PolicyError,
    compile_grants,
    parse_policy,
    render_policy,
)
from ecr_operator.reconcile.repository.observed import ExclusionFilter
from ecr_operator.reconcile.repository.vocabulary import OWNER_TAG, Reason


class SpecError(ValueError):
    """The spec is valid for the schema but cannot be turned into what AWS accepts; names the field."""


@dataclass(frozen=True)
class IdentityRole:
    """A role that gets an inline identity policy; ``account`` is known when the spec gave an ARN."""

    name: str
    access: Access
    account: str | None = None


@dataclass(frozen=True)
class DesiredRepository:
    """Everything the spec asks of AWS, in AWS's terms."""

    name: str
    owner: str
    namespace: str
    """The object's namespace (refusals name it; the admin's settings are per namespace)."""
    image_tag_mutability: str
    exclusion_filters: frozenset[ExclusionFilter]
    scan_on_push: bool
    encryption_type: str
    kms_key: str | None
    tags: Mapping[str, str]
    """User tags plus the owner tag."""
    lifecycle_policy: Mapping[str, Any] | None
    repository_policy: Mapping[str, Any] | None
    identity_roles: tuple[IdentityRole, ...]
    adoption: AdoptionPolicy
    deletion_policy: DeletionPolicy


@dataclass(frozen=True)
class Refusal:
    """Why the controller will not touch AWS for this object (until the spec, settings or AWS change)."""

    reason: Reason
    message: str


def tenancy_refusal(
    spec: EcrRepositorySpec, repository_name: str, namespace: str, settings: Settings
) -> Refusal | None:
    """What the admin's settings forbid this namespace, decided before any AWS call."""
    role_arn = spec.registry.role_arn
    if role_arn is not None and not settings.role_arn_allowed(role_arn, namespace):
        return Refusal(
            Reason.ROLE_NOT_ALLOWED,
            f"registry.roleArn {role_arn} is not allowed for namespace {namespace}: the cluster admin"
            " must add it to the operator's allowed role ARNs (ECR_OPERATOR_ALLOWED_ROLE_ARNS).",
        )
    if not settings.repository_name_allowed(repository_name, namespace):
        prefix = settings.repository_prefix(namespace)
        return Refusal(
            Reason.NAME_NOT_ALLOWED,
            f"repository name {repository_name!r} must start with {prefix!r} in namespace {namespace}:"
            f" set spec.repositoryName to {prefix}<name> (the cluster admin's"
            " ECR_OPERATOR_REPOSITORY_NAME_PREFIX).",
        )
    return None


def desired_repository(
    spec: EcrRepositorySpec,
    *,
    repository_name: str,
    owner: str,
    namespace: str = "",
    partition: str = "aws",
) -> DesiredRepository:
    """Translate the spec into AWS terms; raises SpecError for what the schema could not catch."""
    mutability = spec.image_tag_mutability.value
    filters = frozenset(
        (item.filter_type.value, item.filter) for item in spec.image_tag_mutability_exclusion_filters or ()
    )
    access = spec.access
    return DesiredRepository(
        name=repository_name,
        owner=owner,
        namespace=namespace,
        image_tag_mutability=mutability,
        exclusion_filters=filters if mutability.endswith("_WITH_EXCLUSION") else frozenset(),
        scan_on_push=spec.scan_on_push,
        encryption_type=spec.encryption.type.value,
        kms_key=spec.encryption.kms_key,
        tags={**spec.tags, OWNER_TAG: owner},
        lifecycle_policy=lifecycle_document(spec.lifecycle_policy),
        repository_policy=repository_policy_document(access, partition),
        identity_roles=identity_roles(access),
        adoption=spec.adoption,
        deletion_policy=spec.deletion_policy,
    )


def lifecycle_document(policy: LifecyclePolicy | None) -> dict[str, Any] | None:
    """The ECR lifecycle policy document for structured rules or raw JSON, validated as ECR would."""
    if policy is None:
        return None
    try:
        if policy.raw is not None:
            document = parse_lifecycle_policy(policy.raw, "lifecyclePolicy.raw")
            validate_lifecycle_policy(document, "lifecyclePolicy.raw")
            return document
        document = {"rules": [_lifecycle_rule(index, rule) for index, rule in enumerate(policy.rules or ())]}
        validate_lifecycle_policy(document, "lifecyclePolicy")
    except LifecyclePolicyError as error:
        raise SpecError(str(error)) from None
    return document


def _lifecycle_rule(index: int, rule: LifecycleRule) -> dict[str, Any]:
    selection = rule.selection
    compiled: dict[str, Any] = {"tagStatus": selection.tag_status.value}
    if selection.tag_prefixes is not None:
        compiled["tagPrefixList"] = list(selection.tag_prefixes)
    if selection.tag_patterns is not None:
        compiled["tagPatternList"] = list(selection.tag_patterns)
    compiled["countType"] = selection.count_type.value
    if selection.count_type.value == "sinceImagePushed":
        compiled["countUnit"] = "days"
    compiled["countNumber"] = selection.count_number
    entry: dict[str, Any] = {
        "rulePriority": rule.priority if rule.priority is not None else index + 1,
        "selection": compiled,
        "action": {"type": rule.action.type.value},
    }
    if rule.description:
        entry["description"] = rule.description
    return entry


def repository_policy_document(access: RepositoryAccess | None, partition: str) -> dict[str, Any] | None:
    """The repository policy grants compile to (or the raw one); None means "no repository policy"."""
    if access is None:
        return None
    document: dict[str, Any] | None = None
    try:
        if access.policy is not None:
            document = parse_policy(access.policy, "access.policy")
        elif access.grants is not None:
            grants = [Grant(tuple(grant.principals), grant.actions.value) for grant in access.grants]
            document = compile_grants(grants, partition)
    except PolicyError as error:
        raise SpecError(str(error)) from None
    if document is None:
        return None
    if len(render_policy(document)) > MAX_REPOSITORY_POLICY_CHARS:
        raise SpecError(
            f"the repository policy is longer than ECR's limit of {MAX_REPOSITORY_POLICY_CHARS} characters"
        )
    return document


def identity_roles(access: RepositoryAccess | None) -> tuple[IdentityRole, ...]:
    """One entry per role; a role listed twice gets the union of its access levels."""
    if access is None or access.identity_policies is None:
        return ()
    levels: dict[str, set[str]] = {}
    accounts: dict[str, str | None] = {}
    for policy in access.identity_policies:
        if policy.role_arn is not None:
            parts = policy.role_arn.split(":", 5)
            name = parts[5].rsplit("/", 1)[-1]
            accounts[name] = parts[4]
        else:
            assert policy.role_name is not None  # the model requires exactly one of the two
            name = policy.role_name
            accounts.setdefault(name, None)
        levels.setdefault(name, set()).add(policy.actions.value)
    return tuple(IdentityRole(name, _merged_access(levels[name]), accounts[name]) for name in sorted(levels))


def _merged_access(levels: set[str]) -> Access:
    if levels == {"pull"}:
        return "pull"
    if levels == {"push"}:
        return "push"
    return "pullPush"
