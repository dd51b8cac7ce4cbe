"""Pure decisions of the EcrRepository controller: what AWS should hold, the calls that get it there, and
what the object's status and Events then say.

Nothing here does I/O or knows kopf. The handlers observe AWS through the adapters, call these functions,
execute the returned actions in order, and write the status these functions compute. Every comparison is
semantic (tags as mappings, policies parsed and normalised) so a converged repository plans no action, and
an empty plan is the common case.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from ecr_operator.api.repository import (
    MAX_REPOSITORY_POLICY_CHARS,
    RESERVED_TAG_PREFIX,
    AdoptionPolicy,
    DeletionPolicy,
    EcrRepositorySpec,
    LifecyclePolicy,
    LifecycleRule,
    RepositoryAccess,
)
from ecr_operator.conditions import (
    READY,
    SYNCED,
    DesiredCondition,
    EventNote,
    conditions_patch,
    find_condition,
    format_time,
)
from ecr_operator.config import Settings
from ecr_operator.reconcile.lifecycle import (
    LifecyclePolicyError,
    lifecycle_policies_equal,
    parse_lifecycle_policy,
    render_lifecycle_policy,
    validate_lifecycle_policy,
)
from ecr_operator.reconcile.policy import (
    ACTIONS_BY_ACCESS,
    POLICY_VERSION,
    Access,
    Grant,
    PolicyError,
    compile_grants,
    parse_policy,
    policies_equal,
    render_policy,
)

OWNER_TAG = f"{RESERVED_TAG_PREFIX}owner"
"""Tag naming the object that owns a repository: ``<cluster id>/<namespace>/<name>``."""
ADOPTED_TAG = f"{RESERVED_TAG_PREFIX}adopted"
"""Tag written with the owner tag when the operator adopted (did not create) a repository: AWS, not the
object's status, remembers that the repository predates its object, so it is never deleted by default."""
ADOPTED_TAG_VALUE = "true"
MAX_TAG_VALUE_LENGTH = 256
MAX_IAM_POLICY_NAME_LENGTH = 128
MAX_IAM_ROLE_NAME_LENGTH = 64
IDENTITY_POLICY_PREFIX = "ecr-operator."
IDENTITY_POLICY_SID_PREFIX = "EcrOperator"
AUTHORIZATION_TOKEN_ACTION = "ecr:GetAuthorizationToken"  # noqa: S105 -- an IAM action name
# AWS error texts can be long (whole policies); conditions and Events stay readable with this much.
MAX_AWS_MESSAGE_LENGTH = 600


class Reason(StrEnum):
    """Condition reasons (CamelCase, stable: alerts and scripts match on them)."""

    READY = "RepositoryReady"
    UP_TO_DATE = "UpToDate"
    INVALID_SPEC = "InvalidSpec"
    ROLE_NOT_ALLOWED = "RoleNotAllowed"
    IDENTITY_ROLE_NOT_ALLOWED = "IdentityRoleNotAllowed"
    NAME_NOT_ALLOWED = "RepositoryNameNotAllowed"
    CONFLICT = "Conflict"
    ADOPTION_REFUSED = "AdoptionRefused"
    ADOPTION_NOT_ALLOWED = "AdoptionNotAllowed"
    ENCRYPTION_MISMATCH = "EncryptionMismatch"
    ACCESS_DENIED = "AccessDenied"
    KMS_KEY_INVALID = "KmsKeyInvalid"
    POLICY_REJECTED = "PolicyRejected"
    LIFECYCLE_POLICY_REJECTED = "LifecyclePolicyRejected"
    INVALID_PARAMETER = "InvalidParameter"
    LIMIT_EXCEEDED = "LimitExceeded"
    ROLE_NOT_FOUND = "RoleNotFound"
    THROTTLED = "Throttled"
    AWS_UNAVAILABLE = "AwsUnavailable"
    AWS_ERROR = "AwsError"
    REPOSITORY_NOT_EMPTY = "RepositoryNotEmpty"


class EventReason(StrEnum):
    """Reasons of the Events the controller posts (besides the condition reasons of failures)."""

    CREATED = "RepositoryCreated"
    ADOPTED = "RepositoryAdopted"
    UPDATED = "RepositoryUpdated"
    DRIFT_CORRECTED = "DriftCorrected"
    DELETED = "RepositoryDeleted"
    RETAINED = "RepositoryRetained"
    RECOVERED = "RepositoryRecovered"


# --- what AWS holds ---------------------------------------------------------------------------------

ExclusionFilter = tuple[str, str]
"""(filterType, filter) of an image tag mutability exclusion filter."""


@dataclass(frozen=True)
class RepositoryDescription:
    """One repository as DescribeRepositories reports it."""

    name: str
    arn: str
    uri: str
    registry_id: str
    image_tag_mutability: str
    exclusion_filters: frozenset[ExclusionFilter]
    scan_on_push: bool
    encryption_type: str
    kms_key: str | None = None


@dataclass(frozen=True)
class ObservedRepository:
    """A repository with its tags and policies, as AWS returned them (policies as raw JSON text)."""

    description: RepositoryDescription
    tags: Mapping[str, str]
    lifecycle_policy: str | None = None
    repository_policy: str | None = None

    @property
    def owner(self) -> str | None:
        return self.tags.get(OWNER_TAG)

    @property
    def adopted(self) -> bool:
        """Whether the operator adopted this repository rather than created it (a tag in AWS says so)."""
        return ADOPTED_TAG in self.tags


# --- what the spec asks for -------------------------------------------------------------------------


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


def owner_tag_value(cluster_id: str, namespace: str, name: str) -> str:
    """``<cluster id>/<namespace>/<name>``: none of the three may contain "/", so the value is unambiguous.

    Longer than a tag value may be (256), it keeps its readable start and ends with a digest of the whole.
    """
    value = f"{cluster_id}/{namespace}/{name}"
    return _bounded(value, MAX_TAG_VALUE_LENGTH, separator="+")


def identity_policy_name(cluster_id: str, namespace: str, name: str) -> str:
    """``ecr-operator.<namespace>.<name>@<cluster id>``: namespaces have no dots and no name has "@", so
    two objects never share a policy name, even across clusters sharing an account."""
    value = f"{IDENTITY_POLICY_PREFIX}{namespace}.{name}@{cluster_id}"
    return _bounded(value, MAX_IAM_POLICY_NAME_LENGTH, separator="-")


@dataclass(frozen=True)
class PolicyStamp:
    """How one object's inline identity policies are recognised: a name derived from the object, and a Sid
    prefix (``EcrOperator<digest of the object>``) on every statement of the document.

    The operator deletes an inline policy only when both hold, read from IAM just before: what a status
    (or a spec) says it once wrote is a hint where to look, never proof.
    """

    name: str
    sid_prefix: str


def identity_policy_stamp(cluster_id: str, namespace: str, name: str) -> PolicyStamp:
    digest = hashlib.sha256(f"{cluster_id}/{namespace}/{name}".encode()).hexdigest()[:16]
    return PolicyStamp(
        identity_policy_name(cluster_id, namespace, name), f"{IDENTITY_POLICY_SID_PREFIX}{digest}"
    )


def _bounded(value: str, limit: int, *, separator: str) -> str:
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{value[: limit - len(digest) - len(separator)]}{separator}{digest}"


def describe_owner(owner: str) -> str:
    """A human reading of an owner tag value."""
    parts = owner.split("/")
    if len(parts) == 3 and all(parts):
        cluster, namespace, name = parts
        return f"EcrRepository {namespace}/{name} of cluster {cluster!r}"
    return f"owner {owner!r}"


def partition_of(region: str) -> str:
    """The AWS partition a region belongs to (ARNs differ per partition)."""
    for prefix, partition in (
        ("cn-", "aws-cn"),
        ("us-gov-", "aws-us-gov"),
        ("us-isob-", "aws-iso-b"),
        ("us-iso-", "aws-iso"),
        ("eu-isoe-", "aws-iso-e"),
    ):
        if region.startswith(prefix):
            return partition
    return "aws"


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


# --- actions ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRepository:
    repository: str
    image_tag_mutability: str
    exclusion_filters: tuple[ExclusionFilter, ...]
    scan_on_push: bool
    encryption_type: str
    kms_key: str | None
    tags: tuple[tuple[str, str], ...]
    aspect: ClassVar[str] = "repository"


@dataclass(frozen=True)
class ClaimRepository:
    """Put this object's owner tag, and the adopted tag, on an unowned repository in one TagResource;
    the executor reads the owner tag back to confirm."""

    arn: str
    owner: str
    aspect: ClassVar[str] = "ownership"


@dataclass(frozen=True)
class PutImageTagMutability:
    repository: str
    image_tag_mutability: str
    exclusion_filters: tuple[ExclusionFilter, ...]
    aspect: ClassVar[str] = "image tag mutability"


@dataclass(frozen=True)
class PutImageScanningConfiguration:
    repository: str
    scan_on_push: bool
    aspect: ClassVar[str] = "scan on push"


@dataclass(frozen=True)
class TagRepository:
    arn: str
    tags: tuple[tuple[str, str], ...]
    aspect: ClassVar[str] = "tags"


@dataclass(frozen=True)
class UntagRepository:
    arn: str
    keys: tuple[str, ...]
    aspect: ClassVar[str] = "tags"


@dataclass(frozen=True)
class PutLifecyclePolicy:
    repository: str
    text: str
    aspect: ClassVar[str] = "lifecycle policy"


@dataclass(frozen=True)
class DeleteLifecyclePolicy:
    repository: str
    aspect: ClassVar[str] = "lifecycle policy"


@dataclass(frozen=True)
class SetRepositoryPolicy:
    repository: str
    text: str
    aspect: ClassVar[str] = "repository policy"


@dataclass(frozen=True)
class DeleteRepositoryPolicy:
    repository: str
    aspect: ClassVar[str] = "repository policy"


@dataclass(frozen=True)
class PutRolePolicy:
    role_name: str
    policy_name: str
    text: str
    aspect: ClassVar[str] = "identity policies"


@dataclass(frozen=True)
class DeleteRolePolicy:
    role_name: str
    policy_name: str
    aspect: ClassVar[str] = "identity policies"


@dataclass(frozen=True)
class DeleteRepository:
    repository: str
    force: bool
    aspect: ClassVar[str] = "repository"


RepositoryAction = (
    CreateRepository
    | ClaimRepository
    | PutImageTagMutability
    | PutImageScanningConfiguration
    | TagRepository
    | UntagRepository
    | PutLifecyclePolicy
    | DeleteLifecyclePolicy
    | SetRepositoryPolicy
    | DeleteRepositoryPolicy
    | DeleteRepository
)
IdentityAction = PutRolePolicy | DeleteRolePolicy
Action = RepositoryAction | IdentityAction


def changed_aspects(actions: Iterable[Action]) -> tuple[str, ...]:
    """What the actions changed, each aspect once, in order ("tags", "lifecycle policy", ...)."""
    return tuple(dict.fromkeys(action.aspect for action in actions))


# --- planning ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryPlan:
    """The calls that make AWS match the spec, in order; or why none may be made."""

    actions: tuple[RepositoryAction, ...] = ()
    refusal: Refusal | None = None


def plan_repository(
    desired: DesiredRepository, observed: ObservedRepository | None, *, adoption_allowed: bool = False
) -> RepositoryPlan:
    """Decide the calls that converge the repository.

    Ownership is read from AWS only (the owner tag), never from the object's status, which its tenant may
    be able to write. A repository without an owner tag is adopted only where the admin allows adoption
    (``adoption_allowed``: ECR_OPERATOR_ADOPTION_NAMESPACES) and the spec does not say ``adoption: Fail``;
    that includes a repository whose owner tag was removed outside the operator: nothing in AWS proves
    any more that this object created it.
    """
    if observed is None:
        return RepositoryPlan((_create(desired), *_policy_actions(desired, None)))
    description = observed.description
    owner = observed.owner
    adopting = owner != desired.owner
    if adopting and owner is not None:
        return RepositoryPlan(
            refusal=Refusal(
                Reason.CONFLICT,
                f"ECR repository {desired.name} belongs to {describe_owner(owner)} (tag {OWNER_TAG});"
                " nothing was changed. Choose another repositoryName.",
            )
        )
    if adopting and desired.adoption is AdoptionPolicy.FAIL:
        return RepositoryPlan(
            refusal=Refusal(
                Reason.ADOPTION_REFUSED,
                f"ECR repository {desired.name} already exists and adoption is Fail; nothing was changed."
                " Set adoption: Adopt to manage it, or choose another repositoryName.",
            )
        )
    if adopting and not adoption_allowed:
        return RepositoryPlan(
            refusal=Refusal(
                Reason.ADOPTION_NOT_ALLOWED,
                f"ECR repository {desired.name} already exists without an owner tag ({OWNER_TAG}), and"
                f" adopting an unowned repository is not allowed in namespace {desired.namespace}: the"
                " cluster admin decides where, with ECR_OPERATOR_ADOPTION_NAMESPACES. Nothing was"
                " changed. Choose another repositoryName; or, if this object created the repository and"
                f" the tag was removed outside the operator, put back the tag {OWNER_TAG}={desired.owner}.",
            )
        )
    mismatch = encryption_mismatch(desired, description)
    if mismatch is not None:
        return RepositoryPlan(refusal=Refusal(Reason.ENCRYPTION_MISMATCH, mismatch))

    actions: list[RepositoryAction] = []
    if adopting:
        actions.append(ClaimRepository(description.arn, desired.owner))
    if (desired.image_tag_mutability, desired.exclusion_filters) != (
        description.image_tag_mutability,
        description.exclusion_filters,
    ):
        actions.append(
            PutImageTagMutability(
                desired.name, desired.image_tag_mutability, tuple(sorted(desired.exclusion_filters))
            )
        )
    if desired.scan_on_push != description.scan_on_push:
        actions.append(PutImageScanningConfiguration(desired.name, desired.scan_on_push))
    current_tags = dict(observed.tags)
    wanted_tags = dict(desired.tags)
    if adopting:
        current_tags |= {OWNER_TAG: desired.owner, ADOPTED_TAG: ADOPTED_TAG_VALUE}
    # Once adopted, always adopted: the tag is what keeps the repository from being deleted by default.
    if ADOPTED_TAG in current_tags:
        wanted_tags[ADOPTED_TAG] = current_tags[ADOPTED_TAG]
    actions.extend(plan_tags(description.arn, wanted_tags, current_tags))
    actions.extend(_policy_actions(desired, observed))
    return RepositoryPlan(tuple(actions))


def _create(desired: DesiredRepository) -> CreateRepository:
    return CreateRepository(
        repository=desired.name,
        image_tag_mutability=desired.image_tag_mutability,
        exclusion_filters=tuple(sorted(desired.exclusion_filters)),
        scan_on_push=desired.scan_on_push,
        encryption_type=desired.encryption_type,
        kms_key=desired.kms_key,
        tags=tuple(sorted(desired.tags.items())),
    )


def plan_tags(
    arn: str, desired: Mapping[str, str], current: Mapping[str, str]
) -> list[TagRepository | UntagRepository]:
    """Order-insensitive delta: tag what is missing or different, untag what the spec does not have.

    ``aws:`` tags belong to AWS (CloudFormation and friends) and cannot be removed by anyone else.
    """
    actions: list[TagRepository | UntagRepository] = []
    to_tag = tuple(sorted((key, value) for key, value in desired.items() if current.get(key) != value))
    to_untag = tuple(
        sorted(key for key in current if key not in desired and not key.lower().startswith("aws:"))
    )
    if to_tag:
        actions.append(TagRepository(arn, to_tag))
    if to_untag:
        actions.append(UntagRepository(arn, to_untag))
    return actions


def _policy_actions(
    desired: DesiredRepository, observed: ObservedRepository | None
) -> list[RepositoryAction]:
    actions: list[RepositoryAction] = []
    current_lifecycle = observed.lifecycle_policy if observed else None
    if desired.lifecycle_policy is None:
        if current_lifecycle is not None:
            actions.append(DeleteLifecyclePolicy(desired.name))
    elif not _same_lifecycle_policy(desired.lifecycle_policy, current_lifecycle):
        actions.append(PutLifecyclePolicy(desired.name, render_lifecycle_policy(desired.lifecycle_policy)))
    current_policy = observed.repository_policy if observed else None
    if desired.repository_policy is None:
        if current_policy is not None:
            actions.append(DeleteRepositoryPolicy(desired.name))
    elif not _same_policy(desired.repository_policy, current_policy):
        actions.append(SetRepositoryPolicy(desired.name, render_policy(desired.repository_policy)))
    return actions


def _same_lifecycle_policy(desired: Mapping[str, Any], current: str | None) -> bool:
    if current is None:
        return False
    try:
        return lifecycle_policies_equal(desired, current)
    except (LifecyclePolicyError, AttributeError, TypeError):
        return False  # whatever AWS holds is not a policy the operator wrote: replace it


def _same_policy(desired: Mapping[str, Any], current: str | Mapping[str, Any] | None) -> bool:
    if current is None:
        return False
    try:
        return policies_equal(desired, current)
    except (PolicyError, AttributeError, TypeError):
        return False


def encryption_mismatch(desired: DesiredRepository, description: RepositoryDescription) -> str | None:
    """Why the repository's encryption differs from the spec, or None. ECR cannot re-encrypt a repository.

    A KMS key given by alias cannot be compared without asking KMS, so only its type is compared; a key ID
    matches the key ARN AWS reports for it.
    """
    wanted, actual = desired.encryption_type, description.encryption_type
    if wanted != actual:
        return (
            f"ECR repository {desired.name} is encrypted with {actual}, the spec asks for {wanted};"
            " ECR cannot change the encryption of an existing repository. Nothing was changed."
        )
    key, actual_key = desired.kms_key, description.kms_key
    if key is None or actual_key is None or "alias/" in key or key == actual_key:
        return None
    if key.startswith("arn:") or not actual_key.endswith(f":key/{key}"):
        return (
            f"ECR repository {desired.name} is encrypted with KMS key {actual_key}, the spec asks for {key};"
            " ECR cannot change the key of an existing repository. Nothing was changed."
        )
    return None


# --- identity policies ------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ManagedPolicy:
    """An inline policy the operator put on a role for this object (reported in status)."""

    role_name: str
    policy_name: str

    def to_wire(self) -> dict[str, str]:
        return {"roleName": self.role_name, "policyName": self.policy_name}


# The CRD bounds status.identityPolicies to this many entries; a longer list is cut, not followed.
MAX_STATUS_IDENTITY_POLICIES = 64


def identity_roles_in_status(status: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The role names ``status.identityPolicies`` lists: only a hint where this object's policies may
    still be (a role that left the spec), because a tenant may be able to write status. Every role is
    looked at in IAM, under this object's own policy name, before anything is deleted; the policy names
    in status are ignored."""
    roles: set[str] = set()
    entries = (status or {}).get("identityPolicies") or []
    if not isinstance(entries, list):
        return ()
    for entry in entries[:MAX_STATUS_IDENTITY_POLICIES]:
        role = entry.get("roleName") if isinstance(entry, Mapping) else None
        if isinstance(role, str) and 0 < len(role) <= MAX_IAM_ROLE_NAME_LENGTH:
            roles.add(role)
    return tuple(sorted(roles))


def identity_policy_document(repository_arn: str, access: Access, stamp: PolicyStamp) -> dict[str, Any]:
    """Access to one repository, plus the registry login every image pull or push starts with. Every
    statement's Sid starts with the object's stamp, so the document itself says whose it is."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": f"{stamp.sid_prefix}RepositoryAccess",
                "Effect": "Allow",
                "Action": list(ACTIONS_BY_ACCESS[access]),
                "Resource": repository_arn,
            },
            {
                "Sid": f"{stamp.sid_prefix}AuthorizationToken",
                "Effect": "Allow",
                "Action": AUTHORIZATION_TOKEN_ACTION,
                "Resource": "*",
            },
        ],
    }


def is_own_identity_policy(document: Mapping[str, Any] | None, stamp: PolicyStamp) -> bool:
    """Whether an inline policy (found under the stamp's name) is provably this object's: every statement
    carries the stamp's Sid prefix. Anything else (a policy a human wrote under that name, a document this
    operator wrote before it stamped documents) is left alone."""
    if not isinstance(document, Mapping):
        return False
    statements = document.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        return False
    return all(
        isinstance(statement, Mapping)
        and isinstance(statement.get("Sid"), str)
        and statement["Sid"].startswith(stamp.sid_prefix)
        for statement in statements
    )


def identity_role_arn(role: IdentityRole, repository: RepositoryDescription) -> str:
    """The ARN the admin's role allow-list is matched against: ``arn:<partition>:iam::<registry
    account>:role/<name>``. IAM's PutRolePolicy addresses a role by name alone, so a path written in
    ``roleArn`` proves nothing and is not part of what is matched."""
    parts = repository.arn.split(":")
    partition = parts[1] if len(parts) > 1 and parts[0] == "arn" and parts[1] else "aws"
    return f"arn:{partition}:iam::{role.account or repository.registry_id}:role/{role.name}"


def _no_role_allowed(_role_arn: str) -> bool:
    return False


@dataclass(frozen=True)
class IdentityPlan:
    actions: tuple[IdentityAction, ...] = ()
    refusal: Refusal | None = None
    in_place: tuple[str, ...] = ()
    """Roles that carried this object's policy before the actions (verified in IAM)."""
    left_alone: tuple[str, ...] = ()
    """Roles no longer wanted whose policy of this name is not provably this object's."""


def plan_identity_policies(
    roles: Sequence[IdentityRole],
    *,
    stamp: PolicyStamp,
    repository: RepositoryDescription,
    observed: Mapping[str, Mapping[str, Any] | None],
    role_allowed: Callable[[str], bool] = _no_role_allowed,
    namespace: str = "",
) -> IdentityPlan:
    """Put the policy on every role the spec names (where it differs), delete it from roles no longer named.

    ``observed`` holds, for every role the spec names and every role status hints at, the document IAM
    has under ``stamp.name`` (None: no such policy, or no such role). Only roles the admin allows
    (``role_allowed``, given the role's ARN: ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES) may get a
    policy; a policy is deleted only when IAM shows it is this object's (``is_own_identity_policy``).
    """
    in_place = tuple(
        sorted(role for role, document in observed.items() if is_own_identity_policy(document, stamp))
    )
    foreign = [role for role in roles if role.account is not None and role.account != repository.registry_id]
    if foreign:
        names = ", ".join(role.name for role in foreign)
        return IdentityPlan(
            refusal=Refusal(
                Reason.INVALID_SPEC,
                f"access.identityPolicies: role(s) {names} are not in the registry's account"
                f" {repository.registry_id}; identity policies can only be put on roles of that account.",
            ),
            in_place=in_place,
        )
    refused = [
        identity_role_arn(role, repository)
        for role in roles
        if not role_allowed(identity_role_arn(role, repository))
    ]
    if refused:
        return IdentityPlan(
            refusal=Refusal(
                Reason.IDENTITY_ROLE_NOT_ALLOWED,
                f"access.identityPolicies: {', '.join(refused)} may not carry identity policies for"
                f" namespace {namespace}: the cluster admin must allow the role in"
                " ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES. No identity policy was changed.",
            ),
            in_place=in_place,
        )
    actions: list[IdentityAction] = []
    wanted = {role.name: role for role in roles}
    for name, role in sorted(wanted.items()):
        document = identity_policy_document(repository.arn, role.access, stamp)
        if not _same_policy(document, observed.get(name)):
            actions.append(PutRolePolicy(name, stamp.name, render_policy(document)))
    left_alone: list[str] = []
    for stale in sorted(set(observed) - set(wanted)):
        current = observed[stale]
        if is_own_identity_policy(current, stamp):
            actions.append(DeleteRolePolicy(stale, stamp.name))
        elif current is not None:
            left_alone.append(stale)
    return IdentityPlan(tuple(actions), in_place=in_place, left_alone=tuple(left_alone))


def roles_after(in_place: Iterable[str], applied: Iterable[Action]) -> tuple[str, ...]:
    """The roles carrying this object's policy once ``applied`` succeeded (what status then reports)."""
    roles = set(in_place)
    for action in applied:
        if isinstance(action, PutRolePolicy):
            roles.add(action.role_name)
        elif isinstance(action, DeleteRolePolicy):
            roles.discard(action.role_name)
    return tuple(sorted(roles))


# --- deletion ---------------------------------------------------------------------------------------

DeletionOutcome = Literal["delete", "retain", "gone", "not-owned", "adopted"]


@dataclass(frozen=True)
class DeletionPlan:
    outcome: DeletionOutcome
    actions: tuple[Action, ...]
    message: str
    left_alone: tuple[str, ...] = ()
    """Roles with a policy of this object's name that is not provably this object's: not deleted."""


def plan_deletion(
    *,
    repository_name: str,
    deletion_policy: DeletionPolicy,
    owner: str,
    observed: ObservedRepository | None,
    stamp: PolicyStamp,
    identity_policies: Mapping[str, Mapping[str, Any] | None],
    adopted_deletion_allowed: bool = False,
    namespace: str = "",
) -> DeletionPlan:
    """What deleting the object does in AWS.

    Identity policies go in every case, but only those IAM shows are this object's: ``identity_policies``
    holds, per candidate role, the document found under the stamp's name just before. The repository goes
    only when the deletion policy says so, its owner tag, read just before, names this object, and it
    was created by the operator; an adopted one (tag ``ecr-operator.io/adopted``) predates its object and
    is deleted only where the admin allows it (``adopted_deletion_allowed``).

    Under Retain the repository is not looked at (``observed`` may be None): nothing about it can change
    the outcome, so deleting a thousand retained objects costs no repository read.
    """
    removals: tuple[Action, ...] = tuple(
        DeleteRolePolicy(role, stamp.name)
        for role, document in sorted(identity_policies.items())
        if is_own_identity_policy(document, stamp)
    )
    left_alone = tuple(
        sorted(
            role
            for role, document in identity_policies.items()
            if document is not None and not is_own_identity_policy(document, stamp)
        )
    )

    def plan(outcome: DeletionOutcome, message: str, *extra: Action) -> DeletionPlan:
        return DeletionPlan(outcome, (*removals, *extra), message, left_alone)

    if deletion_policy is DeletionPolicy.RETAIN:
        return plan(
            "retain",
            f"ECR repository {repository_name} and its images were retained (deletionPolicy Retain).",
        )
    if observed is None:
        return plan("gone", f"ECR repository {repository_name} does not exist.")
    if observed.owner != owner:
        holder = describe_owner(observed.owner) if observed.owner else "no owner tag"
        return plan(
            "not-owned",
            f"ECR repository {repository_name} was left alone: it is not this object's ({holder}).",
        )
    if observed.adopted and not adopted_deletion_allowed:
        return plan(
            "adopted",
            f"ECR repository {repository_name} and its images were retained although deletionPolicy is"
            f" {deletion_policy.value}: it existed before this object adopted it (tag {ADOPTED_TAG}), and"
            f" adopted repositories are deleted only in namespaces the cluster admin lists in"
            f" ECR_OPERATOR_ADOPTED_DELETION_NAMESPACES (namespace {namespace} is not).",
        )
    force = deletion_policy is DeletionPolicy.FORCE_DELETE
    return plan(
        "delete",
        f"ECR repository {repository_name} was deleted"
        + (" with its images (deletionPolicy ForceDelete)." if force else " (deletionPolicy DeleteIfEmpty)."),
        DeleteRepository(repository_name, force=force),
    )


# --- failures ---------------------------------------------------------------------------------------

ProblemKind = Literal["refused", "failed", "transient"]


@dataclass(frozen=True)
class Problem:
    """Why a reconcile did not converge.

    ``refused``: nothing may be done until the spec, the settings or the repository's owner change.
    ``failed``: AWS refused a call; a human has to act (retried once per drift interval).
    ``transient``: throttling or an AWS outage; retried soon with backoff.
    """

    reason: Reason
    message: str
    kind: ProblemKind

    @classmethod
    def refused(cls, refusal: Refusal) -> Problem:
        return cls(refusal.reason, refusal.message, "refused")


_SERVER_ERROR_CODES = frozenset(
    {"ServerException", "InternalFailure", "InternalError", "ServiceUnavailable", "ServiceFailure"}
)
_NETWORK_ERROR_CODES = frozenset({"NetworkError"})
_ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "NoCredentials",
    }
)
_LIMIT_CODES = frozenset({"LimitExceededException", "LimitExceeded", "TooManyTagsException"})
_INVALID_CODES = frozenset(
    {
        "InvalidParameterException",
        "ValidationException",
        "InvalidTagParameterException",
        "MalformedPolicyDocument",
    }
)
# Operations whose IAM permission is not the operation's name alone.
_EXTRA_PERMISSIONS = {
    "CreateRepository": " (creating a repository with tags also needs ecr:TagResource)",
}


def classify_aws_failure(
    service: str, operation: str, code: str, message: str, *, http_status: int = 0, throttled: bool = False
) -> Problem:
    """Turn an AWS error into a condition a user can act on; the kind says whether to retry soon.

    ``throttled`` is the adapter's verdict (it knows every SDK spelling of "slow down").
    """
    permission = f"{service}:{operation}"
    detail = _shorten(message)
    if throttled or http_status == 429:
        return Problem(
            Reason.THROTTLED,
            f"AWS throttled {permission} after the SDK's retries; retrying with backoff: {detail}",
            "transient",
        )
    if code in _SERVER_ERROR_CODES or code in _NETWORK_ERROR_CODES or http_status >= 500:
        return Problem(
            Reason.AWS_UNAVAILABLE,
            f"{permission} failed ({code}); retrying with backoff: {detail}",
            "transient",
        )
    if code in _ACCESS_DENIED_CODES:
        return Problem(
            Reason.ACCESS_DENIED,
            f"the operator's AWS identity may not call {permission}"
            f"{_EXTRA_PERMISSIONS.get(operation, '')}: grant it in the operator's IAM policy."
            f" AWS said: {detail}",
            "failed",
        )
    if code == "KmsException":
        return Problem(
            Reason.KMS_KEY_INVALID,
            f"ECR could not use the KMS key of encryption.kmsKey ({permission}): {detail}",
            "failed",
        )
    if code == "NoSuchEntity" and operation == "PutRolePolicy":
        return Problem(
            Reason.ROLE_NOT_FOUND,
            f"access.identityPolicies names an IAM role that does not exist: {detail}",
            "failed",
        )
    if code in _INVALID_CODES:
        if operation in ("SetRepositoryPolicy", "PutRolePolicy"):
            return Problem(
                Reason.POLICY_REJECTED, f"AWS rejected the policy ({permission}): {detail}", "failed"
            )
        if operation == "PutLifecyclePolicy":
            return Problem(
                Reason.LIFECYCLE_POLICY_REJECTED, f"AWS rejected the lifecycle policy: {detail}", "failed"
            )
        return Problem(Reason.INVALID_PARAMETER, f"AWS rejected {permission}: {detail}", "failed")
    if code in _LIMIT_CODES:
        return Problem(Reason.LIMIT_EXCEEDED, f"{permission} hit an AWS limit: {detail}", "failed")
    return Problem(Reason.AWS_ERROR, f"{permission} failed with {code}: {detail}", "failed")


def _shorten(message: str) -> str:
    message = " ".join(message.split())
    if len(message) <= MAX_AWS_MESSAGE_LENGTH:
        return message
    return message[: MAX_AWS_MESSAGE_LENGTH - 1] + "…"


# --- status and Events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    """What one reconcile did and found: input of the status and Events it produces."""

    repository: RepositoryDescription | None = None
    applied: tuple[Action, ...] = ()
    problem: Problem | None = None
    managed_policies: tuple[ManagedPolicy, ...] | None = None
    """The identity policies now in place, or None when this reconcile did not get to them."""

    @property
    def created(self) -> bool:
        return any(isinstance(action, CreateRepository) for action in self.applied)

    @property
    def adopted(self) -> bool:
        return any(isinstance(action, ClaimRepository) for action in self.applied)


def was_converged(status: Mapping[str, Any] | None, generation: int | None) -> bool:
    """Whether the last reconcile had applied this very spec successfully: any change planned now was made
    outside the operator (drift), not asked for by the user."""
    status = status or {}
    synced = find_condition(status.get("conditions") or [], SYNCED)
    return (
        generation is not None
        and status.get("observedGeneration") == generation
        and synced is not None
        and synced.get("status") == "True"
    )


def repository_conditions(
    result: SyncResult, generation: int | None, status: Mapping[str, Any] | None
) -> list[DesiredCondition]:
    """Ready: the repository exists, is this object's, and matches the spec. Synced: the last reconcile
    finished without error. A transient error leaves a Ready=True alone: the repository still works."""
    problem = result.problem
    if problem is None:
        uri = result.repository.uri if result.repository else ""
        return [
            DesiredCondition(READY, "True", Reason.READY, f"Repository {uri} matches the spec.", generation),
            DesiredCondition(SYNCED, "True", Reason.UP_TO_DATE, "AWS matches the spec.", generation),
        ]
    synced = DesiredCondition(SYNCED, "False", problem.reason, problem.message, generation)
    ready_before = find_condition((status or {}).get("conditions") or [], READY)
    if problem.kind == "transient" and ready_before is not None and ready_before.get("status") == "True":
        return [synced]
    return [DesiredCondition(READY, "False", problem.reason, problem.message, generation), synced]


def repository_status_patch(
    status: Mapping[str, Any] | None,
    result: SyncResult,
    *,
    generation: int | None,
    now: datetime,
    drift: bool,
) -> dict[str, Any] | None:
    """The merge patch for ``status``, holding only what changed, or None: an idle pass writes nothing."""
    status = status or {}
    patch: dict[str, Any] = {}
    conditions = conditions_patch(status, repository_conditions(result, generation, status), now)
    if conditions is not None:
        patch["conditions"] = conditions
    # A transient failure is no verdict on this generation: its handler retries with backoff, and the
    # drift timer (which only checks reconciled generations) must not retry it as well, sooner.
    transient = result.problem is not None and result.problem.kind == "transient"
    if generation is not None and status.get("observedGeneration") != generation and not transient:
        patch["observedGeneration"] = generation
    repository = result.repository
    fields: dict[str, Any] = {}
    if repository is not None:
        fields = {
            "repositoryUri": repository.uri,
            "repositoryArn": repository.arn,
            "registryId": repository.registry_id,
        }
    elif result.problem is not None and result.problem.kind == "refused":
        # A refused object owns no repository: it must not advertise one.
        fields = {"repositoryUri": None, "repositoryArn": None, "registryId": None}
    patch.update({key: value for key, value in fields.items() if status.get(key) != value})
    if result.applied:
        patch["lastSyncTime"] = format_time(now)
        if drift:
            patch["driftCorrections"] = int(status.get("driftCorrections") or 0) + len(
                changed_aspects(result.applied)
            )
    if result.managed_policies is not None:
        wanted = [policy.to_wire() for policy in result.managed_policies]
        if (status.get("identityPolicies") or []) != wanted:
            patch["identityPolicies"] = wanted or None
    return patch or None


def repository_events(
    status: Mapping[str, Any] | None, result: SyncResult, *, drift: bool
) -> list[EventNote]:
    """Events for real changes and for *transitions* into a problem; a retry of the same failure is silent."""
    events: list[EventNote] = []
    uri = result.repository.uri if result.repository else ""
    aspects = [aspect for aspect in changed_aspects(result.applied) if aspect != "ownership"]
    if result.applied and drift:
        repaired = ", ".join("repository (re-created)" if a == "repository" else a for a in aspects)
        events.append(
            EventNote(
                "Warning",
                EventReason.DRIFT_CORRECTED,
                f"Repaired changes made outside the operator: {repaired}.",
            )
        )
    elif result.created:
        events.append(EventNote("Normal", EventReason.CREATED, f"Created ECR repository {uri}."))
    elif result.adopted:
        settled = f" and updated {', '.join(aspects)}" if aspects else ""
        events.append(EventNote("Normal", EventReason.ADOPTED, f"Adopted ECR repository {uri}{settled}."))
    elif result.applied:
        events.append(EventNote("Normal", EventReason.UPDATED, f"Updated {', '.join(aspects)} of {uri}."))
    synced_before = find_condition((status or {}).get("conditions") or [], SYNCED)
    problem = result.problem
    if problem is not None:
        unchanged = (
            synced_before is not None
            and synced_before.get("reason") == problem.reason
            and synced_before.get("message") == problem.message
        )
        if not unchanged:
            events.append(EventNote("Warning", problem.reason, problem.message))
    elif synced_before is not None and synced_before.get("status") == "False":
        events.append(EventNote("Normal", EventReason.RECOVERED, f"Repository {uri} matches the spec again."))
    return events
