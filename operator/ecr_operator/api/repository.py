"""`EcrRepository`: an ECR repository with its settings, IAM access and pull secret, kept in sync."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints, field_validator

from ecr_operator.api.common import (
    REPOSITORY_NAME_PATTERN,
    AccountId,
    ApiModel,
    CelRule,
    Conditions,
    DnsSubdomainName,
    LabelSelector,
    RegistryIdentity,
    RepositoryName,
    ResourceInfo,
    RoleArn,
    SetList,
    StatusModel,
    exactly_one_of,
    is_repository_name,
)
from ecr_operator.json_object import parse_json_object

# --- tag mutability ---------------------------------------------------------------------------------


class ImageTagMutability(StrEnum):
    """Whether pushing an existing tag again may move it to another image."""

    MUTABLE = "MUTABLE"
    IMMUTABLE = "IMMUTABLE"
    MUTABLE_WITH_EXCLUSION = "MUTABLE_WITH_EXCLUSION"
    IMMUTABLE_WITH_EXCLUSION = "IMMUTABLE_WITH_EXCLUSION"


class ExclusionFilterType(StrEnum):
    """How an exclusion filter matches tags."""

    WILDCARD = "WILDCARD"


class ImageTagMutabilityExclusionFilter(ApiModel):
    """Tags that are exempt from the repository's tag mutability setting."""

    filter_type: ExclusionFilterType = Field(
        default=ExclusionFilterType.WILDCARD, description="How filter matches tags; only WILDCARD exists."
    )
    filter: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._*-]+$",
        description="Tag pattern where * matches any characters, e.g. latest or dev-*.",
    )


# --- encryption -------------------------------------------------------------------------------------


class EncryptionType(StrEnum):
    """Server-side encryption of the repository's content."""

    AES256 = "AES256"
    KMS = "KMS"
    KMS_DSSE = "KMS_DSSE"


KMS_KEY_PATTERN = (
    r"^(arn:aws(-[a-z]+)*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_+=,.@-]+"
    r"|alias/[A-Za-z0-9/_-]+"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|mrk-[0-9a-f]{32})$"
)


class EncryptionConfiguration(ApiModel):
    """How ECR encrypts images at rest. Fixed when the repository is created."""

    cel_rules = (
        CelRule(
            "self.type != 'AES256' || !has(self.kmsKey)",
            "encryption.kmsKey applies only to encryption.type KMS or KMS_DSSE",
            check=lambda e: e.type != EncryptionType.AES256 or e.kms_key is None,
            field_path=".kmsKey",
            reason="FieldValueForbidden",
        ),
    )

    type: EncryptionType = Field(
        default=EncryptionType.AES256,
        description=(
            "AES256 (S3-managed keys), KMS (an AWS KMS key) or KMS_DSSE (dual-layer encryption with KMS)."
        ),
    )
    kms_key: str | None = Field(
        default=None,
        max_length=2048,
        pattern=KMS_KEY_PATTERN,
        description=(
            "KMS key for KMS and KMS_DSSE: key ID, key ARN, alias name or alias ARN. Defaults to the"
            " AWS managed key aws/ecr."
        ),
    )


# --- tags -------------------------------------------------------------------------------------------

# AWS tag grammar: letters, digits, spaces and _.:/=+-@ in any script.
AWS_TAG_KEY_PATTERN = r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$"
AWS_TAG_VALUE_PATTERN = r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$"
RESERVED_TAG_PREFIX = "ecr-operator.io/"
# ECR allows 50 tags; the operator's ownership tags (under RESERVED_TAG_PREFIX) need the rest.
MAX_USER_TAGS = 48

AwsTagKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=AWS_TAG_KEY_PATTERN)]
AwsTagValue = Annotated[str, StringConstraints(max_length=256, pattern=AWS_TAG_VALUE_PATTERN)]
ResourceTags = Annotated[
    dict[AwsTagKey, AwsTagValue],
    CelRule(
        "self.all(k, !k.lowerAscii().startsWith('aws:'))",
        "tags: keys starting with aws: are reserved by AWS",
        check=lambda tags: not any(key.lower().startswith("aws:") for key in tags),
    ),
    CelRule(
        f"self.all(k, !k.startsWith('{RESERVED_TAG_PREFIX}'))",
        f"tags: keys starting with {RESERVED_TAG_PREFIX} are reserved for the operator's ownership tags",
        check=lambda tags: not any(key.startswith(RESERVED_TAG_PREFIX) for key in tags),
    ),
]


# --- lifecycle policy -------------------------------------------------------------------------------


class TagStatus(StrEnum):
    """Which images a lifecycle rule considers, by whether they carry tags."""

    TAGGED = "tagged"
    UNTAGGED = "untagged"
    ANY = "any"


class CountType(StrEnum):
    """What a lifecycle rule counts."""

    IMAGE_COUNT_MORE_THAN = "imageCountMoreThan"
    SINCE_IMAGE_PUSHED = "sinceImagePushed"


class CountUnit(StrEnum):
    """Unit of countNumber for sinceImagePushed."""

    DAYS = "days"


class LifecycleActionType(StrEnum):
    """What a lifecycle rule does to the images it selects."""

    EXPIRE = "expire"


LifecycleTagPrefix = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
]
# At most four * wildcards, as ECR allows.
LifecycleTagPattern = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]*(\*[A-Za-z0-9_.-]*){0,4}$"),
]


class LifecycleSelection(ApiModel):
    """Which images a lifecycle rule applies to, and when."""

    cel_rules = (
        CelRule(
            "self.tagStatus != 'tagged' || has(self.tagPrefixes) != has(self.tagPatterns)",
            "selection: tagStatus tagged needs exactly one of tagPrefixes or tagPatterns",
            check=lambda s: (
                s.tag_status != TagStatus.TAGGED or (s.tag_prefixes is None) != (s.tag_patterns is None)
            ),
            field_path=".tagPrefixes",
        ),
        CelRule(
            "self.tagStatus == 'tagged' || (!has(self.tagPrefixes) && !has(self.tagPatterns))",
            "selection: tagPrefixes and tagPatterns apply only to tagStatus tagged",
            check=lambda s: (
                s.tag_status == TagStatus.TAGGED or (s.tag_prefixes is None and s.tag_patterns is None)
            ),
            field_path=".tagStatus",
            reason="FieldValueForbidden",
        ),
        CelRule(
            "self.countType == 'sinceImagePushed' || !has(self.countUnit)",
            "selection: countUnit applies only to countType sinceImagePushed",
            check=lambda s: s.count_type == CountType.SINCE_IMAGE_PUSHED or s.count_unit is None,
            field_path=".countUnit",
            reason="FieldValueForbidden",
        ),
    )

    tag_status: TagStatus = Field(
        description="tagged (images with a tag matching tagPrefixes/tagPatterns), untagged, or any image."
    )
    tag_prefixes: Annotated[list[LifecycleTagPrefix], SetList()] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="With tagStatus tagged: images having a tag that starts with one of these prefixes.",
    )
    tag_patterns: Annotated[list[LifecycleTagPattern], SetList()] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description=(
            "With tagStatus tagged: images having a tag that matches one of these patterns;"
            " * matches any characters (at most four per pattern), e.g. prod-*-release."
        ),
    )
    count_type: CountType = Field(
        description=(
            "imageCountMoreThan: keep the countNumber most recently pushed images and expire the rest."
            " sinceImagePushed: expire images pushed more than countNumber days ago."
        )
    )
    count_number: int = Field(ge=1, le=2_147_483_647, description="The image count or number of days.")
    count_unit: CountUnit | None = Field(
        default=None,
        description="Unit for sinceImagePushed; only days exists, and it is implied when omitted.",
    )


class LifecycleAction(ApiModel):
    """What happens to selected images."""

    type: LifecycleActionType = Field(
        default=LifecycleActionType.EXPIRE, description="expire deletes the selected images."
    )


class LifecycleRule(ApiModel):
    """One lifecycle rule: select images, then act on them."""

    priority: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "Rule priority, lower first; unique. Either every rule sets it or none does, and then the"
            " list order is the priority (the first rule is 1)."
        ),
    )
    description: str | None = Field(default=None, max_length=256, description="What the rule is for.")
    selection: LifecycleSelection = Field(description="Which images the rule applies to.")
    action: LifecycleAction = Field(
        default_factory=LifecycleAction,
        description="What happens to the selected images; defaults to expire.",
        json_schema_extra={"default": {}},
    )


LifecycleRules = Annotated[
    list[LifecycleRule],
    CelRule(
        "self.all(r, has(r.priority)) || self.all(r, !has(r.priority))",
        "lifecyclePolicy.rules: set priority on every rule or on none (then the list order is the priority)",
        check=lambda rules: len({rule.priority is None for rule in rules}) <= 1,
    ),
    CelRule(
        "self.all(r, !has(r.priority) || self.exists_one(o, has(o.priority) && o.priority == r.priority))",
        "lifecyclePolicy.rules: every rule needs a different priority",
        check=lambda rules: _priorities_are_unique(rules),
    ),
    CelRule(
        "size(self.filter(r, r.selection.tagStatus == 'any')) <= 1",
        "lifecyclePolicy.rules: at most one rule may select tagStatus any",
        check=lambda rules: sum(rule.selection.tag_status == TagStatus.ANY for rule in rules) <= 1,
    ),
    CelRule(
        "self.exists(r, has(r.priority))"
        " ? self.all(r, r.selection.tagStatus != 'any' || !has(r.priority)"
        " || self.all(o, !has(o.priority) || o.priority <= r.priority))"
        " : (!self.exists(r, r.selection.tagStatus == 'any')"
        " || self[size(self) - 1].selection.tagStatus == 'any')",
        "lifecyclePolicy.rules: the rule with tagStatus any must come last (highest priority);"
        " ECR evaluates it after every other rule",
        check=lambda rules: _any_rule_is_last(rules),
    ),
]


def _priorities_are_unique(rules: list[LifecycleRule]) -> bool:
    priorities = [rule.priority for rule in rules if rule.priority is not None]
    return len(set(priorities)) == len(priorities)


def _any_rule_is_last(rules: list[LifecycleRule]) -> bool:
    priorities = [rule.priority for rule in rules if rule.priority is not None]
    if priorities:
        return all(
            rule.priority is None or rule.priority == max(priorities)
            for rule in rules
            if rule.selection.tag_status == TagStatus.ANY
        )
    any_rules = [rule for rule in rules if rule.selection.tag_status == TagStatus.ANY]
    return not any_rules or rules[-1].selection.tag_status == TagStatus.ANY


# ECR's limit on a lifecycle policy document (the schema's maxLength and the compiled policy's check).
MAX_LIFECYCLE_POLICY_CHARS = 30_720


class LifecyclePolicy(ApiModel):
    """Which images ECR expires. Compared with AWS semantically, so AWS re-ordering never causes churn."""

    cel_rules = (exactly_one_of("rules", "raw", "lifecyclePolicy must set exactly one of rules or raw"),)

    rules: LifecycleRules | None = Field(
        default=None, min_length=1, max_length=50, description="Structured lifecycle rules (at most 50)."
    )
    raw: str | None = Field(
        default=None,
        min_length=2,
        max_length=MAX_LIFECYCLE_POLICY_CHARS,
        description=(
            'A complete ECR lifecycle policy as JSON text ({"rules": [...]}), for what rules cannot'
            " express. Mutually exclusive with rules."
        ),
    )

    @field_validator("raw")
    @classmethod
    def _raw_is_policy_json(cls, raw: str | None) -> str | None:
        if raw is not None:
            document = _json_object(raw, "lifecyclePolicy.raw")
            if not isinstance(document.get("rules"), list) or not document["rules"]:
                raise ValueError("lifecyclePolicy.raw must be a JSON object with a non-empty rules list")
        return raw


def _json_object(text: str, field_name: str) -> dict[str, Any]:
    return parse_json_object(
        text, ValueError, f"{field_name} is not valid JSON", f"{field_name} must be a JSON object"
    )


# --- access -----------------------------------------------------------------------------------------


class AccessLevel(StrEnum):
    """A set of ECR actions on the repository."""

    PULL = "pull"
    PUSH = "push"
    PULL_PUSH = "pullPush"


PRINCIPAL_PATTERN = (
    r"^([0-9]{12}"  # an account
    r"|arn:aws(-[a-z]+)*:iam::[0-9]{12}:(root|(role|user)/[A-Za-z0-9_+=,.@/-]+)"  # a role, user or root
    r"|o-[a-z0-9]{10,32}"  # an AWS Organization
    r"|[a-z0-9-]+(\.[a-z0-9-]+)*\.amazonaws\.com(\.cn)?"  # an AWS service
    r")$"
)
Principal = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=PRINCIPAL_PATTERN)]


class AccessGrant(ApiModel):
    """Lets principals pull and/or push this repository (compiled into the repository policy)."""

    principals: Annotated[list[Principal], SetList()] = Field(
        min_length=1,
        max_length=50,
        description=(
            "Who gets access: a 12-digit account ID, an IAM role or user ARN"
            " (arn:aws:iam::123456789012:role/name), an AWS Organization ID (o-abcdef1234, every"
            " principal in the organization) or an AWS service principal (lambda.amazonaws.com)."
        ),
    )
    actions: AccessLevel = Field(
        description=(
            "pull (BatchGetImage, GetDownloadUrlForLayer, BatchCheckLayerAvailability), push"
            " (InitiateLayerUpload, UploadLayerPart, CompleteLayerUpload, PutImage,"
            " BatchCheckLayerAvailability) or pullPush (both)."
        )
    )


IAM_ROLE_NAME_PATTERN = r"^[A-Za-z0-9_+=,.@-]+$"


class IdentityPolicy(ApiModel):
    """An inline IAM policy the operator puts on a role of the registry's account, removed on delete.

    Only roles the cluster admin allows for the namespace (ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES)."""

    cel_rules = (
        exactly_one_of("role_name", "role_arn", "identityPolicies: set exactly one of roleName or roleArn"),
    )

    role_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=IAM_ROLE_NAME_PATTERN,
        description=(
            "Name of an IAM role in the registry's account; the cluster admin must allow it for this"
            " namespace (ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES)."
        ),
    )
    role_arn: RoleArn | None = Field(
        default=None,
        description=(
            "ARN of an IAM role; it must be in the registry's account and allowed by the cluster admin."
            " Only its name is used: IAM addresses inline policies by role name."
        ),
    )
    actions: AccessLevel = Field(description="pull, push or pullPush on this repository.")


# ECR's limit on a repository policy document.
MAX_REPOSITORY_POLICY_CHARS = 10240


class RepositoryAccess(ApiModel):
    """Who may use the repository: a repository policy (grants or raw) and identity policies on roles."""

    cel_rules = (
        CelRule(
            "!has(self.grants) || !has(self.policy)",
            "access: set grants or policy, not both",
            check=lambda a: a.grants is None or a.policy is None,
            field_path=".policy",
            reason="FieldValueForbidden",
        ),
    )

    grants: list[AccessGrant] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="Structured grants, compiled into one canonical repository policy.",
    )
    policy: str | None = Field(
        default=None,
        min_length=2,
        max_length=MAX_REPOSITORY_POLICY_CHARS,
        description=(
            "A complete repository policy as JSON text, for what grants cannot express (conditions,"
            " denies). Compared semantically with AWS. Mutually exclusive with grants."
        ),
    )
    identity_policies: list[IdentityPolicy] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description=(
            "Inline IAM policies granting same-account roles access to this repository (and"
            " ecr:GetAuthorizationToken), so a workload role needs no broad managed policy. Only on"
            " roles the cluster admin allows for this namespace."
        ),
    )

    @field_validator("policy")
    @classmethod
    def _policy_is_json(cls, policy: str | None) -> str | None:
        if policy is not None and "Statement" not in _json_object(policy, "access.policy"):
            raise ValueError("access.policy must be an IAM policy document with a Statement")
        return policy


# --- pull secret ------------------------------------------------------------------------------------


class PullSecret(ApiModel):
    """An imagePullSecret for this repository's registry, kept fresh in the object's own namespace."""

    service_accounts: Annotated[list[DnsSubdomainName], SetList()] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="ServiceAccounts of this namespace that get the secret in their imagePullSecrets.",
    )
    service_account_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "ServiceAccounts of this namespace, by label, that get the secret in their imagePullSecrets,"
            " including ones created later. {} selects all of them."
        ),
    )
    secret_name: DnsSubdomainName | None = Field(
        default=None,
        description=(
            "Name of the kubernetes.io/dockerconfigjson Secret. Defaults to the operator's per-namespace"
            " pull secret, which merges the credentials of every registry the namespace needs."
        ),
    )


# --- the repository ---------------------------------------------------------------------------------


class DeletionPolicy(StrEnum):
    """What deleting the EcrRepository object does to the ECR repository."""

    RETAIN = "Retain"
    DELETE_IF_EMPTY = "DeleteIfEmpty"
    FORCE_DELETE = "ForceDelete"


class AdoptionPolicy(StrEnum):
    """What to do when a repository with this name already exists in ECR."""

    ADOPT = "Adopt"
    FAIL = "Fail"


class RepositorySettings(ApiModel):
    """Everything about a repository except its name and registry (also the ImageMirror template)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!self.imageTagMutability.endsWith('_WITH_EXCLUSION')"
            " || has(self.imageTagMutabilityExclusionFilters)",
            "imageTagMutabilityExclusionFilters is required when imageTagMutability is"
            " MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION",
            check=lambda s: (
                not s.image_tag_mutability.endswith("_WITH_EXCLUSION")
                or s.image_tag_mutability_exclusion_filters is not None
            ),
            field_path=".imageTagMutabilityExclusionFilters",
            reason="FieldValueRequired",
        ),
        CelRule(
            "self.imageTagMutability.endsWith('_WITH_EXCLUSION')"
            " || !has(self.imageTagMutabilityExclusionFilters)",
            "imageTagMutabilityExclusionFilters applies only to imageTagMutability"
            " MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION",
            check=lambda s: (
                s.image_tag_mutability.endswith("_WITH_EXCLUSION")
                or s.image_tag_mutability_exclusion_filters is None
            ),
            field_path=".imageTagMutabilityExclusionFilters",
            reason="FieldValueForbidden",
        ),
    )

    image_tag_mutability: ImageTagMutability = Field(
        default=ImageTagMutability.MUTABLE,
        description=(
            "MUTABLE: a push may move an existing tag. IMMUTABLE: it may not. *_WITH_EXCLUSION: as the"
            " prefix says, except for tags matching imageTagMutabilityExclusionFilters."
        ),
    )
    image_tag_mutability_exclusion_filters: list[ImageTagMutabilityExclusionFilter] | None = Field(
        default=None,
        min_length=1,
        max_length=5,
        description="Tags exempt from imageTagMutability; required with the *_WITH_EXCLUSION settings.",
    )
    scan_on_push: bool = Field(
        default=False, description="Scan each pushed image for vulnerabilities (ECR basic scanning)."
    )
    encryption: Annotated[
        EncryptionConfiguration,
        CelRule(
            "self == oldSelf",
            "encryption is immutable: ECR cannot re-encrypt a repository; create a new one instead",
        ),
    ] = Field(
        default_factory=EncryptionConfiguration,
        description="Encryption at rest. Immutable once the object exists.",
        json_schema_extra={"default": {}},
    )
    tags: ResourceTags = Field(
        default_factory=dict,
        max_length=MAX_USER_TAGS,
        description=(
            f"AWS resource tags of the repository, at most {MAX_USER_TAGS}: keys up to 128 characters,"
            " values up to 256. Keys starting with aws: or ecr-operator.io/ are reserved. Tags added"
            " outside the operator are removed."
        ),
    )
    lifecycle_policy: LifecyclePolicy | None = Field(
        default=None,
        description="Which images ECR expires. Without it, the operator removes any lifecycle policy.",
    )
    access: RepositoryAccess | None = Field(
        default=None,
        description=(
            "Who may pull and push: a repository policy and identity policies. Without it, the"
            " operator removes any repository policy it finds."
        ),
    )
    pull_secret: PullSecret | None = Field(
        default=None,
        description=(
            "Keep an imagePullSecret for this registry in this namespace (refreshed before expiry). Its token"
            " is minted from the pull-only role the cluster admin configured for the namespace, never from"
            " the operator's own credentials; without one no secret is written (PullSecretReady=False, reason"
            " NoPullIdentity)."
        ),
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.RETAIN,
        description=(
            "When this object is deleted: Retain keeps the repository and its images, DeleteIfEmpty"
            " deletes it only when it holds no images, ForceDelete deletes it with its images. A"
            " repository the operator adopted rather than created is always retained, unless the cluster"
            " admin allows deleting adopted ones (ECR_OPERATOR_ADOPTED_DELETION_NAMESPACES)."
        ),
    )
    adoption: AdoptionPolicy = Field(
        default=AdoptionPolicy.ADOPT,
        description=(
            "When the repository already exists without an owner tag: Adopt takes it over, but only in"
            " namespaces where the cluster admin allows adoption (ECR_OPERATOR_ADOPTION_NAMESPACES);"
            " Fail reports AdoptionRefused and changes nothing. A repository another object owns is"
            " never taken over (Conflict)."
        ),
    )


class EcrRepositorySpec(RepositorySettings):
    """Desired state of an ECR repository."""

    cel_rules = (
        *RepositorySettings.cel_rules,
        CelRule(
            "has(self.repositoryName) == has(oldSelf.repositoryName)"
            " && (!has(self.repositoryName) || self.repositoryName == oldSelf.repositoryName)",
            "repositoryName is immutable: ECR cannot rename a repository",
            field_path=".repositoryName",
        ),
        CelRule(
            "!has(self.access) || !has(self.access.identityPolicies) || !has(self.registry.accountId)"
            " || self.access.identityPolicies.all(p,"
            " !has(p.roleArn) || p.roleArn.contains(':' + self.registry.accountId + ':role/'))",
            "access.identityPolicies: roleArn must be a role of registry.accountId",
            check=lambda s: _identity_roles_in_account(s),
            field_path=".access.identityPolicies",
        ),
    )

    repository_name: RepositoryName | None = Field(
        default=None,
        description=(
            "Name of the ECR repository, e.g. team/app: lowercase letters, digits, and . _ - /"
            " separators, 2-256 characters. Defaults to metadata.name. Immutable."
        ),
    )
    registry: RegistryIdentity = Field(
        description="The registry (account and region) holding the repository."
    )

    def effective_repository_name(self, metadata_name: str) -> str:
        """The ECR repository name: spec.repositoryName, else the object's metadata.name."""
        name = self.repository_name or metadata_name
        if not is_repository_name(name):
            raise ValueError(
                f"metadata.name {metadata_name!r} is not a valid ECR repository name; set spec.repositoryName"
            )
        return name


def _identity_roles_in_account(spec: EcrRepositorySpec) -> bool:
    if spec.access is None or spec.access.identity_policies is None or spec.registry.account_id is None:
        return True
    marker = f":{spec.registry.account_id}:role/"
    return all(p.role_arn is None or marker in p.role_arn for p in spec.access.identity_policies)


class ManagedIdentityPolicy(StatusModel):
    """An inline IAM policy the operator put on a role for this object."""

    role_name: str = Field(max_length=64, description="IAM role that carries the policy.")
    policy_name: str = Field(max_length=128, description="Name of the inline policy on that role.")


class EcrRepositoryStatus(StatusModel):
    """Observed state of an ECR repository."""

    conditions: Conditions = Field(default_factory=list)
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the spec last reconciled."
    )
    repository_uri: str | None = Field(
        default=None,
        max_length=512,
        description="URI to pull and push, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app.",
    )
    repository_arn: str | None = Field(default=None, max_length=2048, description="ARN of the repository.")
    registry_id: AccountId | None = Field(default=None, description="Account ID of the registry holding it.")
    last_sync_time: datetime | None = Field(
        default=None, description="When the operator last changed something in AWS for this repository."
    )
    drift_corrections: int = Field(
        default=0, ge=0, description="How many times the operator has repaired changes made outside it."
    )
    identity_policies: list[ManagedIdentityPolicy] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Inline IAM policies the operator has put on roles for access.identityPolicies, as IAM showed"
            " them. Output only: before removing a policy the operator reads it from IAM and removes it"
            " only if its name and document say this object wrote it."
        ),
    )


ECR_REPOSITORY = ResourceInfo(
    kind="EcrRepository",
    plural="ecrrepositories",
    singular="ecrrepository",
    short_names=("ecrrepo",),
    object_rules=(
        CelRule(
            "has(self.spec.repositoryName) || (size(self.metadata.name) >= 2"
            f" && self.metadata.name.matches(r'{REPOSITORY_NAME_PATTERN}'))",
            "spec.repositoryName is required: metadata.name is not a valid ECR repository name",
            field_path=".spec.repositoryName",
            reason="FieldValueRequired",
        ),
    ),
)
