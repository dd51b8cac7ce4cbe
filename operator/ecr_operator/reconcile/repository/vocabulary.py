"""What the EcrRepository controller calls things: condition and Event reasons, the tags it owns in
AWS, and the names it derives from an object (owner tag value, identity policy name and stamp)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from ecr_operator.api.repository import RESERVED_TAG_PREFIX

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
    NOT_OWNED = "RepositoryNotOwned"
    IDENTITY_POLICY_NOT_OWNED = "IdentityPolicyNotOwned"


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
