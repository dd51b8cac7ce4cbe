"""Pull secrets, decided: which namespaces need which registries' credentials, and the writes that do it.

Pure. Views of Namespaces, ServiceAccounts, the operator's own Secrets and EcrRepositories (kept by kopf
indexes) and the tokens the cache currently serves go in; a plan of small writes comes out.

Demand has two sources. The admin's cluster-wide configuration reaches every namespace its selector picks;
``EcrRepository.spec.pullSecret`` reaches its own namespace only, so a tenant's object can never put a
secret anywhere else. Secrets are identified by (namespace, name): the default name is the namespace's one
merged secret, and ``pullSecret.secretName`` asks for a separate secret (merged with any other demand that
names it). The operator only ever touches Secrets carrying its labels and ServiceAccount references it
recorded as its own.

A tenant-visible secret carries pull rights only: it is minted from a *pull identity*, never from the
operator's own (push-capable) credentials. A cluster-wide registry names its pull role (``roleArn``); a
repository's secret uses the role the admin's ``PULL_SECRET_ROLE_ARN_TEMPLATE`` renders for its namespace.
Either role passes the role allow-list like any other. Without one the demand is refused (``NoPullIdentity``)
unless the admin opted into the operator's own credentials for a single-tenant cluster.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from ecr_operator.api.common import (
    GROUP,
    ROLE_ARN_PATTERN,
    LabelSelector,
    LabelSelectorOperator,
    RegistryIdentity,
)
from ecr_operator.api.repository import PullSecret
from ecr_operator.conditions import DesiredCondition, StatusValue, conditions_patch, format_time
from ecr_operator.config import PullSecretSettings, ServiceAccountSelector
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.tokens import IdentityToken, RefreshProblem, TokenStatus

SECRET_TYPE = "kubernetes.io/dockerconfigjson"  # noqa: S105 -- a Secret type name
DOCKER_CONFIG_KEY = ".dockerconfigjson"
MANAGED_LABELS: Mapping[str, str] = {
    "app.kubernetes.io/managed-by": "ecr-operator",
    # Its own label: other Secrets the operator may create one day must never look like pull secrets.
    f"{GROUP}/pull-secret": "true",
}
MANAGED_SECRET_SELECTOR = ",".join(f"{key}={value}" for key, value in MANAGED_LABELS.items())
REGISTRIES_ANNOTATION = f"{GROUP}/registries"
REFRESHED_AT_ANNOTATION = f"{GROUP}/refreshed-at"
EXPIRES_AT_ANNOTATION = f"{GROUP}/expires-at"
REFRESH_ERROR_ANNOTATION = f"{GROUP}/refresh-error"
SERVICE_ACCOUNT_ANNOTATION = f"{GROUP}/image-pull-secrets"
"""On a ServiceAccount: the imagePullSecrets entries the operator added (and so may remove)."""

# Condition type and reasons (names, not credentials).
PULL_SECRET_CONDITION = "PullSecretReady"  # noqa: S105
SECRET_UP_TO_DATE = "SecretUpToDate"  # noqa: S105
TOKEN_PENDING = "TokenPending"  # noqa: S105
ROLE_NOT_ALLOWED = "RoleNotAllowed"
NO_PULL_IDENTITY = "NoPullIdentity"
PULL_ROLE_INVALID = "PullRoleInvalid"
ACCOUNT_PENDING = "AccountPending"
SECRET_NAME_CONFLICT = "SecretNameConflict"  # noqa: S105
TOKEN_REFRESH_RECOVERED = "TokenRefreshRecovered"  # noqa: S105

_ROLE_ACCOUNT = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):role/")
_ROLE_ARN = re.compile(ROLE_ARN_PATTERN)
# IAM's limit on a role name (the last path segment), which a long namespace could exceed.
MAX_ROLE_NAME_LENGTH = 64

# The settings an admin changes to give pull secrets a pull identity, named in every refusal.
ROLE_TEMPLATE_SETTING = "ECR_OPERATOR_PULL_SECRET_ROLE_ARN_TEMPLATE"
ALLOWED_ROLES_SETTING = "ECR_OPERATOR_ALLOWED_ROLE_ARNS"
SINGLE_TENANT_SETTING = "ECR_OPERATOR_PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT"
CLUSTER_REGISTRIES_SETTING = "ECR_OPERATOR_PULL_SECRETS registries[].roleArn"


def ecr_registry_host(account_id: str, region: str) -> str:
    """The registry host pods name in their images, e.g. ``123456789012.dkr.ecr.us-east-1.amazonaws.com``."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account_id}.dkr.ecr.{region}.{suffix}"


def namespace_served(name: str, patterns: Collection[str]) -> bool:
    """Whether the operator serves ``name`` (``ECR_OPERATOR_NAMESPACES`` globs; none means all of them)."""
    return not patterns or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def label_selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; an empty selector matches everything."""
    if any(labels.get(key) != value for key, value in (selector.match_labels or {}).items()):
        return False
    for requirement in selector.match_expressions or ():
        present = requirement.key in labels
        value = labels.get(requirement.key)
        values = requirement.values or []
        match requirement.operator:
            case LabelSelectorOperator.IN:
                satisfied = present and value in values
            case LabelSelectorOperator.NOT_IN:
                satisfied = not present or value not in values
            case LabelSelectorOperator.EXISTS:
                satisfied = present
            case LabelSelectorOperator.DOES_NOT_EXIST:
                satisfied = not present
        if not satisfied:
            return False
    return True


def _names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _string_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(key): str(item) for key, item in value.items() if item is not None}


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


# --- views of cluster objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespaceView:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    terminating: bool = False

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NamespaceView:
        metadata = body.get("metadata") or {}
        terminating = (
            bool(metadata.get("deletionTimestamp"))
            or (body.get("status") or {}).get("phase") == "Terminating"
        )
        return cls(str(metadata.get("name", "")), _string_map(metadata.get("labels")), terminating)


@dataclass(frozen=True)
class ServiceAccountView:
    name: str
    resource_version: str
    labels: Mapping[str, str] = field(default_factory=dict)
    image_pull_secrets: tuple[str, ...] = ()
    managed: frozenset[str] = frozenset()
    """References the operator added, from its annotation."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ServiceAccountView:
        metadata = body.get("metadata") or {}
        annotations = _string_map(metadata.get("annotations"))
        references = tuple(
            str(entry["name"])
            for entry in body.get("imagePullSecrets") or ()
            if isinstance(entry, Mapping) and entry.get("name")
        )
        return cls(
            name=str(metadata.get("name", "")),
            resource_version=str(metadata.get("resourceVersion", "")),
            labels=_string_map(metadata.get("labels")),
            image_pull_secrets=references,
            managed=_names(annotations.get(SERVICE_ACCOUNT_ANNOTATION, "")),
        )


@dataclass(frozen=True)
class SecretView:
    """One of the operator's own pull secrets (it carries ``MANAGED_LABELS``)."""

    name: str
    uid: str
    secret_type: str = SECRET_TYPE
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SecretView:
        metadata = body.get("metadata") or {}
        return cls(
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            secret_type=str(body.get("type", "")),
            labels=_string_map(metadata.get("labels")),
            annotations=_string_map(metadata.get("annotations")),
            data=_string_map(body.get("data")),
        )

    def auths(self) -> dict[str, Mapping[str, Any]]:
        """The ``auths`` of its docker config, by registry host; empty when missing or malformed."""
        try:
            document = json.loads(base64.b64decode(self.data.get(DOCKER_CONFIG_KEY, ""), validate=True))
        except (binascii.Error, ValueError):
            return {}
        auths = document.get("auths") if isinstance(document, dict) else None
        if not isinstance(auths, dict):
            return {}
        return {str(host): entry for host, entry in auths.items() if isinstance(entry, Mapping)}

    @property
    def expires_at(self) -> datetime | None:
        return parse_time(self.annotations.get(EXPIRES_AT_ANNOTATION))


@dataclass(frozen=True)
class RepositoryView:
    """An EcrRepository, as far as pull secrets care."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int | None
    registry: RegistryIdentity | None
    pull_secret: PullSecret | None
    deleting: bool = False
    conditions: tuple[Mapping[str, Any], ...] = ()
    """As read from a body (``from_body``): its PullSecretReady condition only, the one this controller
    reads or writes."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RepositoryView:
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        # Every repository is indexed (kopf's index holds one view each, 10,000 in a large cluster), but only
        # those asking for a secret need their registry, and only this controller's condition is ever read.
        registry, pull_secret = None, None
        if spec.get("pullSecret") is not None:
            try:
                registry = RegistryIdentity.model_validate(spec.get("registry"))
                pull_secret = PullSecret.model_validate(spec["pullSecret"])
            except ValidationError:
                # The apiserver validated it against the same schema; anything else is not ours to act on.
                registry, pull_secret = None, None
        conditions = [
            entry
            for entry in (body.get("status") or {}).get("conditions") or ()
            if isinstance(entry, Mapping) and entry.get("type") == PULL_SECRET_CONDITION
        ]
        return cls(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            resource_version=str(metadata.get("resourceVersion", "")),
            generation=metadata.get("generation"),
            registry=registry,
            pull_secret=pull_secret,
            deleting=bool(metadata.get("deletionTimestamp")),
            conditions=tuple(conditions),
        )

    @property
    def wants_pull_secret(self) -> bool:
        return self.pull_secret is not None and self.registry is not None and not self.deleting

    def has_pull_secret_condition(self) -> bool:
        return any(entry.get("type") == PULL_SECRET_CONDITION for entry in self.conditions)


# --- demand ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccountChoice:
    """Which ServiceAccounts of the namespace reference a demand's secret."""

    configured: ServiceAccountSelector | None = None
    names: frozenset[str] = frozenset()
    selector: LabelSelector | None = None

    def selects(self, account: ServiceAccountView) -> bool:
        if self.configured is not None and self.configured.matches(account.name, account.labels):
            return True
        if account.name in self.names:
            return True
        return self.selector is not None and label_selector_matches(self.selector, account.labels)


@dataclass(frozen=True)
class RegistryDemand:
    """A namespace needs credentials for one registry in one of its pull secrets."""

    secret_name: str
    identity: AwsIdentity
    account_id: str | None
    service_accounts: ServiceAccountChoice
    repository: str | None = None
    """The EcrRepository asking; None for the cluster-wide configuration."""

    def host(self, token: IdentityToken | None) -> str | None:
        """The registry host, known from the account (given or the role's), else from the identity's token."""
        account = self.account_id or _role_account(self.identity.role_arn)
        if account is not None:
            return ecr_registry_host(account, self.identity.region)
        return token.registry_host if token is not None else None


def _role_account(role_arn: str | None) -> str | None:
    match = _ROLE_ACCOUNT.match(role_arn or "")
    return match.group(1) if match else None


@dataclass(frozen=True)
class Refusal:
    """A demand the operator will not serve, and why (shown on the repository or logged)."""

    repository: str | None
    reason: str
    message: str


@dataclass(frozen=True)
class Demands:
    demands: tuple[RegistryDemand, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    waiting: tuple[Refusal, ...] = ()
    """Demands that cannot be decided yet (the registry's account is still being learned)."""

    @property
    def identities(self) -> frozenset[AwsIdentity]:
        return frozenset(demand.identity for demand in self.demands)


RoleAllowed = Callable[[str, str], bool]
"""(role ARN, namespace) -> whether the admin's allow-list lets the operator assume it there."""


@dataclass(frozen=True)
class PullIdentityPolicy:
    """Where tenant-visible tokens come from (the admin's settings, plus one fact learned from AWS)."""

    role_template: str = ""
    """``PULL_SECRET_ROLE_ARN_TEMPLATE``: the pull role of a repository's secret; empty means none."""
    operator_credentials_single_tenant: bool = False
    """``PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT``: no pull role? the operator's own."""
    operator_account: str | None = None
    """The account of the operator's own credentials (STS GetCallerIdentity, learned once), for a
    repository that names neither ``registry.accountId`` nor ``registry.roleArn``; None until known."""

    @property
    def needs_account(self) -> bool:
        return "{accountId}" in self.role_template


def render_pull_role(template: str, account_id: str, namespace: str, region: str) -> str:
    """The pull role ARN ``template`` names for a repository (placeholders were checked at startup)."""
    return template.format(accountId=account_id, namespace=namespace, region=region)


def registry_account(registry: RegistryIdentity, operator_account: str | None) -> str | None:
    """The account owning a repository's registry: given, else that of the role managing it, else that of
    the operator's own credentials. Never read from status: a tenant may write status."""
    return registry.account_id or _role_account(registry.role_arn) or operator_account


def operator_account_region(
    namespace: str, repositories: Iterable[RepositoryView], policy: PullIdentityPolicy
) -> str | None:
    """A region to ask STS in, when planning ``namespace`` needs the operator's own account (to render the
    pull role of a repository naming neither account nor role) and it is not known yet; else None."""
    if not policy.needs_account or policy.operator_account is not None:
        return None
    for repository in repositories:
        target = repository.registry
        if (
            repository.namespace == namespace
            and repository.wants_pull_secret
            and target is not None
            and target.account_id is None
            and target.role_arn is None
        ):
            return target.region
    return None


def namespace_demands(
    namespace: NamespaceView,
    cluster: PullSecretSettings,
    repositories: Iterable[RepositoryView],
    role_allowed: RoleAllowed,
    pull_identity: PullIdentityPolicy | None = None,
) -> Demands:
    """What ``namespace`` needs: cluster-wide registries first (in configured order), then its own
    repositories by name (others are ignored). A terminating namespace needs nothing.

    Every demand's identity is a pull identity (a role), unless ``pull_identity`` opts into the operator's
    own credentials for a single-tenant cluster; a demand without one is refused with ``NoPullIdentity``.
    """
    policy = pull_identity or PullIdentityPolicy()
    if namespace.terminating:
        return Demands()
    decided = [
        *_cluster_demands(namespace, cluster, role_allowed, policy),
        *(
            _repository_demand(repository, namespace, cluster, role_allowed, policy)
            for repository in sorted(repositories, key=lambda item: item.name)
        ),
    ]
    demands: list[RegistryDemand] = []
    refusals: list[Refusal] = []
    waiting: list[Refusal] = []
    for item in decided:
        if isinstance(item, RegistryDemand):
            demands.append(item)
        elif isinstance(item, Refusal):
            (waiting if item.reason == ACCOUNT_PENDING else refusals).append(item)
    return Demands(tuple(demands), tuple(refusals), tuple(waiting))


def _cluster_demands(
    namespace: NamespaceView,
    cluster: PullSecretSettings,
    role_allowed: RoleAllowed,
    policy: PullIdentityPolicy,
) -> Iterator[RegistryDemand | Refusal]:
    """The cluster-wide registries ``namespace`` gets (in configured order) when the admin selects it."""
    if not (cluster.enabled and cluster.namespace_selector.matches(namespace.name, namespace.labels)):
        return
    choice = ServiceAccountChoice(configured=cluster.service_account_selector)
    for registry in cluster.registries:
        identity = AwsIdentity(region=registry.region, role_arn=registry.role_arn)
        if registry.role_arn is None and not policy.operator_credentials_single_tenant:
            yield Refusal(None, NO_PULL_IDENTITY, _cluster_registry_unserved(registry.account_id))
        elif registry.role_arn is not None and not role_allowed(registry.role_arn, namespace.name):
            yield Refusal(None, ROLE_NOT_ALLOWED, _role_refused(registry.role_arn, namespace))
        else:
            yield RegistryDemand(cluster.secret_name, identity, registry.account_id, choice, repository=None)


def _repository_demand(
    repository: RepositoryView,
    namespace: NamespaceView,
    cluster: PullSecretSettings,
    role_allowed: RoleAllowed,
    policy: PullIdentityPolicy,
) -> RegistryDemand | Refusal | None:
    """What one EcrRepository's ``spec.pullSecret`` asks of ``namespace``; None when it asks nothing here."""
    target, wanted = repository.registry, repository.pull_secret
    # A namespaced object reaches its own namespace only, whatever a caller hands in.
    if repository.namespace != namespace.name or target is None or wanted is None or repository.deleting:
        return None
    if target.role_arn is not None and not role_allowed(target.role_arn, namespace.name):
        return Refusal(repository.name, ROLE_NOT_ALLOWED, _role_refused(target.role_arn, namespace))
    source = _repository_pull_identity(repository, target, namespace.name, policy, role_allowed)
    if isinstance(source, Refusal):
        return source
    identity, account_id = source
    choice = ServiceAccountChoice(
        names=frozenset(wanted.service_accounts or ()), selector=wanted.service_account_selector
    )
    return RegistryDemand(
        secret_name=wanted.secret_name or cluster.secret_name,
        identity=identity,
        account_id=account_id,
        service_accounts=choice,
        repository=repository.name,
    )


def _repository_pull_identity(
    repository: RepositoryView,
    target: RegistryIdentity,
    namespace: str,
    policy: PullIdentityPolicy,
    role_allowed: RoleAllowed,
) -> tuple[AwsIdentity, str | None] | Refusal:
    """The identity that mints a repository's pull token and the account of its registry, or why not.

    ``registry.roleArn`` manages the repository (it may push); it only tells the account here."""
    if not policy.role_template:
        if policy.operator_credentials_single_tenant:
            return AwsIdentity(region=target.region, role_arn=target.role_arn), target.account_id
        return Refusal(repository.name, NO_PULL_IDENTITY, _no_pull_role(namespace))
    account = registry_account(target, policy.operator_account)
    if account is None:
        return Refusal(
            repository.name,
            ACCOUNT_PENDING,
            f"Waiting to learn the account of the operator's credentials (STS GetCallerIdentity) to render"
            f" {ROLE_TEMPLATE_SETTING}; set spec.registry.accountId to skip this.",
        )
    role = render_pull_role(policy.role_template, account, namespace, target.region)
    role_name = role.rsplit("/", 1)[-1]
    if not _ROLE_ARN.match(role) or len(role_name) > MAX_ROLE_NAME_LENGTH:
        return Refusal(
            repository.name,
            PULL_ROLE_INVALID,
            f"{ROLE_TEMPLATE_SETTING} renders {role!r} for namespace {namespace}, which is not a valid IAM"
            f" role ARN (role names have at most {MAX_ROLE_NAME_LENGTH} characters); no pull secret is kept."
            " An admin changes the template.",
        )
    if not role_allowed(role, namespace):
        return Refusal(
            repository.name,
            ROLE_NOT_ALLOWED,
            f"The pull role {role} ({ROLE_TEMPLATE_SETTING}) is not in {ALLOWED_ROLES_SETTING} for namespace"
            f" {namespace}; no pull secret is kept. An admin adds it to the allow-list.",
        )
    return AwsIdentity(region=target.region, role_arn=role), account


def _no_pull_role(namespace: str) -> str:
    return (
        f"No pull identity for pull secrets in namespace {namespace}: the operator never puts its own"
        f" (push-capable) credentials into a tenant namespace, so no secret is written. An admin sets"
        f" {ROLE_TEMPLATE_SETTING} to a pull-only role"
        " (e.g. arn:aws:iam::{accountId}:role/ecr-pull-{namespace})"
        f" allowed by {ALLOWED_ROLES_SETTING}, or {SINGLE_TENANT_SETTING}=true on a single-tenant cluster."
    )


def _cluster_registry_unserved(account_id: str) -> str:
    return (
        f"The cluster-wide pull-secret registry of account {account_id} names no pull role: the operator"
        f" never puts its own (push-capable) credentials into a tenant namespace, so no secret is written"
        f" for it. An admin sets {CLUSTER_REGISTRIES_SETTING} to a pull-only role, or"
        f" {SINGLE_TENANT_SETTING}=true on a single-tenant cluster."
    )


def _role_refused(role_arn: str, namespace: NamespaceView) -> str:
    return (
        f"registry.roleArn {role_arn} is not in the operator's role allow-list ({ALLOWED_ROLES_SETTING})"
        f" for namespace {namespace.name}; no pull secret is kept for it"
    )


# --- the plan -------------------------------------------------------------------------------------------


class DemandState(StrEnum):
    READY = "Ready"
    PENDING = "Pending"
    FAILING = "Failing"
    REFUSED = "Refused"
    CONFLICT = "Conflict"


@dataclass(frozen=True)
class DemandOutcome:
    """How one demand (a repository's, or one cluster-wide registry) is served after the plan."""

    repository: str | None
    state: DemandState
    reason: str
    message: str
    secret_name: str | None = None
    secret_exists: bool = False


@dataclass(frozen=True)
class WriteSecret:
    """Create the secret, or patch it in place (never delete and re-create: pods would see a gap)."""

    name: str
    data: Mapping[str, str | None] = field(repr=False)
    """base64 values; None removes a key that does not belong there."""
    annotations: Mapping[str, str | None]
    """None removes the annotation."""
    create: bool

    def manifest(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": dict(MANAGED_LABELS),
                "annotations": {key: value for key, value in self.annotations.items() if value is not None},
            },
            "type": SECRET_TYPE,
            "data": {key: value for key, value in self.data.items() if value is not None},
        }

    def merge_patch(self) -> dict[str, Any]:
        """The data is always sent, so a refresh re-writes the token even when AWS returned the same one."""
        return {
            "metadata": {"labels": dict(MANAGED_LABELS), "annotations": dict(self.annotations)},
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class DeleteSecret:
    name: str
    uid: str


@dataclass(frozen=True)
class PatchServiceAccount:
    name: str
    image_pull_secrets: tuple[str, ...]
    managed: frozenset[str]
    resource_version: str
    """A precondition: imagePullSecrets is replaced as a whole, so a concurrent edit must not be lost."""

    def merge_patch(self) -> dict[str, Any]:
        references = [{"name": name} for name in self.image_pull_secrets]
        return {
            "metadata": {
                "resourceVersion": self.resource_version,
                "annotations": {SERVICE_ACCOUNT_ANNOTATION: ",".join(sorted(self.managed)) or None},
            },
            "imagePullSecrets": references or None,
        }


@dataclass(frozen=True)
class SecretEvent:
    secret_name: str
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class NamespacePlan:
    """Writes in a safe order: secrets first, then ServiceAccounts, then deletions of unneeded secrets."""

    writes: tuple[WriteSecret, ...] = ()
    service_accounts: tuple[PatchServiceAccount, ...] = ()
    deletes: tuple[DeleteSecret, ...] = ()
    events: tuple[SecretEvent, ...] = ()
    outcomes: tuple[DemandOutcome, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.writes or self.service_accounts or self.deletes)

    def outcome_for(self, repository: str) -> DemandOutcome | None:
        return next((item for item in self.outcomes if item.repository == repository), None)


def auth_entry(username: str, password: str) -> dict[str, str]:
    """A docker config ``auths`` entry; kubelets read ``auth``, other clients username/password."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"username": username, "password": password, "auth": auth}


def docker_config_data(auths: Mapping[str, Mapping[str, Any]]) -> str:
    """The base64 ``.dockerconfigjson`` value; serialised canonically, so equal auths give equal data."""
    document = json.dumps({"auths": auths}, sort_keys=True, separators=(",", ":"))
    return base64.b64encode(document.encode()).decode()


def plan_namespace(
    demands: Demands,
    service_accounts: Sequence[ServiceAccountView],
    secrets: Sequence[SecretView],
    tokens: Mapping[AwsIdentity, TokenStatus],
    foreign_secrets: Collection[str],
    now: datetime,
) -> NamespacePlan:
    """Everything to write in one namespace, given its demands and the operator's secrets there.

    ``foreign_secrets`` are names the operator found taken by Secrets it does not own: it leaves them alone.
    """
    existing = {secret.name: secret for secret in secrets}
    outcomes = [
        DemandOutcome(refusal.repository, DemandState.REFUSED, refusal.reason, refusal.message)
        for refusal in demands.refusals
    ] + [
        DemandOutcome(pending.repository, DemandState.PENDING, pending.reason, pending.message)
        for pending in demands.waiting
    ]
    writes: list[WriteSecret] = []
    events: list[SecretEvent] = []
    serving: set[str] = set()
    names = list(dict.fromkeys(demand.secret_name for demand in demands.demands))
    for name in names:
        group = [demand for demand in demands.demands if demand.secret_name == name]
        current = existing.get(name)
        if name in foreign_secrets or (current is not None and current.secret_type != SECRET_TYPE):
            outcomes.extend(_conflict(demand) for demand in group)
            continue
        assembled = _assemble_secret(name, group, current, tokens, now)
        outcomes.extend(assembled.outcomes)
        if assembled.write is not None:
            writes.append(assembled.write)
        events.extend(assembled.events)
        if assembled.write is not None or current is not None:
            serving.add(name)
    outcomes = [replace(item, secret_exists=item.secret_name in serving) for item in outcomes]
    deletes = [
        DeleteSecret(secret.name, secret.uid)
        for secret in secrets
        if secret.name not in names and secret.secret_type == SECRET_TYPE
    ]
    patches = [
        patch
        for account in sorted(service_accounts, key=lambda item: item.name)
        if (patch := _service_account_patch(account, demands.demands, serving)) is not None
    ]
    return NamespacePlan(tuple(writes), tuple(patches), tuple(deletes), tuple(events), tuple(outcomes))


def _conflict(demand: RegistryDemand) -> DemandOutcome:
    return DemandOutcome(
        demand.repository,
        DemandState.CONFLICT,
        SECRET_NAME_CONFLICT,
        f"Secret {demand.secret_name} exists and is not an ecr-operator pull secret; it is left unchanged."
        " Choose another secret name or delete that Secret.",
        secret_name=demand.secret_name,
    )


@dataclass(frozen=True)
class _AssembledSecret:
    write: WriteSecret | None
    outcomes: tuple[DemandOutcome, ...]
    events: tuple[SecretEvent, ...]


def _assemble_secret(
    name: str,
    group: Sequence[RegistryDemand],
    current: SecretView | None,
    tokens: Mapping[AwsIdentity, TokenStatus],
    now: datetime,
) -> _AssembledSecret:
    """One secret's auths: a fresh token per registry, or the entry it already has while that is the better
    credential (no token yet after a restart, or a new token the registry refused while the old one lives)."""
    entries, outcomes = _collect_entries(name, group, current, tokens, now)
    error = "; ".join(f"{host}: {problem.message}" for host, problem in entries.problems) or None
    kept_expiry = current.expires_at if entries.kept and current is not None else None
    failure = _failure_message(name, error, kept_expiry)
    outcomes = tuple(
        replace(item, message=failure) if item.state is DemandState.FAILING else item for item in outcomes
    )
    if not entries.auths:
        return _AssembledSecret(None, outcomes, ())
    write = _secret_write(name, entries, current, error)
    events = tuple(_secret_events(name, current, entries.problems, error))
    if current is not None and _unchanged(current, write):
        return _AssembledSecret(None, outcomes, events)
    return _AssembledSecret(write, outcomes, events)


@dataclass
class _SecretEntries:
    """What the registries of one secret put in it: their auths, when the fresh tokens among them were
    issued and expire, the refresh problems by host, and whether an entry of the current secret was kept."""

    auths: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    issued: list[datetime] = field(default_factory=list)
    expiries: list[datetime] = field(default_factory=list)
    problems: list[tuple[str, RefreshProblem]] = field(default_factory=list)
    kept: bool = False


def _collect_entries(
    name: str,
    group: Sequence[RegistryDemand],
    current: SecretView | None,
    tokens: Mapping[AwsIdentity, TokenStatus],
    now: datetime,
) -> tuple[_SecretEntries, tuple[DemandOutcome, ...]]:
    """Each demand's entry and outcome, in the order of ``group``."""
    current_auths = current.auths() if current is not None else {}
    current_valid = current is not None and current.expires_at is not None and current.expires_at > now
    entries = _SecretEntries()
    by_host: dict[str, DemandOutcome] = {}
    outcomes: list[DemandOutcome] = []
    for demand in group:
        status = tokens.get(demand.identity)
        token = status.token if status is not None else None
        host = demand.host(token)
        if host is None:
            outcomes.append(_pending(demand, f"the {demand.identity.region} registry"))
            continue
        if host in by_host:
            # Two demands for one registry: the first (cluster-wide, then by repository name) supplies it.
            outcomes.append(replace(by_host[host], repository=demand.repository))
            continue
        better_kept = current_valid and (token is None or not token.verified)
        if host in current_auths and (better_kept or token is None):
            entries.auths[host] = current_auths[host]
            entries.kept = True
        elif token is not None:
            entries.auths[host] = auth_entry(token.username, token.password)
            entries.issued.append(token.issued_at)
            entries.expiries.append(token.expires_at)
        problem = status.problem if status is not None else None
        if problem is not None:
            entries.problems.append((host, problem))
        by_host[host] = _demand_outcome(name, demand, host, problem, supplied=host in entries.auths)
        outcomes.append(by_host[host])
    return entries, tuple(outcomes)


def _demand_outcome(
    name: str, demand: RegistryDemand, host: str, problem: RefreshProblem | None, *, supplied: bool
) -> DemandOutcome:
    if problem is not None:
        return DemandOutcome(demand.repository, DemandState.FAILING, problem.reason, "", name)
    if supplied:
        return DemandOutcome(
            demand.repository,
            DemandState.READY,
            SECRET_UP_TO_DATE,
            f"Secret {name} holds credentials for {host}, refreshed before they expire.",
            name,
        )
    return _pending(demand, host)


def _secret_write(
    name: str, entries: _SecretEntries, current: SecretView | None, error: str | None
) -> WriteSecret:
    """The whole secret: its docker config, and annotations saying which registries it serves, when its
    oldest credential was refreshed and when the first one expires (a kept entry counts as it was)."""
    issued, expiries = list(entries.issued), list(entries.expiries)
    if entries.kept and current is not None:
        issued.extend(_times(current.annotations.get(REFRESHED_AT_ANNOTATION)))
        expiries.extend(_times(current.annotations.get(EXPIRES_AT_ANNOTATION)))
    annotations: dict[str, str | None] = {
        REGISTRIES_ANNOTATION: ",".join(sorted(entries.auths)),
        REFRESHED_AT_ANNOTATION: format_time(min(issued)) if issued else None,
        EXPIRES_AT_ANNOTATION: format_time(min(expiries)) if expiries else None,
        REFRESH_ERROR_ANNOTATION: error,
    }
    data: dict[str, str | None] = {DOCKER_CONFIG_KEY: docker_config_data(entries.auths)}
    if current is not None:
        data.update({key: None for key in current.data if key != DOCKER_CONFIG_KEY})
    return WriteSecret(name, data, annotations, create=current is None)


def _pending(demand: RegistryDemand, registry: str) -> DemandOutcome:
    return DemandOutcome(
        demand.repository,
        DemandState.PENDING,
        TOKEN_PENDING,
        f"Waiting for the first token for {registry}.",
        demand.secret_name,
    )


def _failure_message(name: str, error: str | None, kept_until: datetime | None) -> str:
    if kept_until is not None:
        return f"Secret {name}: {error}. It keeps its current credentials until {format_time(kept_until)}."
    return f"Secret {name}: {error}."


def _times(text: str | None) -> list[datetime]:
    moment = parse_time(text)
    return [moment] if moment is not None else []


def _unchanged(current: SecretView, write: WriteSecret) -> bool:
    labelled = all(current.labels.get(key) == value for key, value in MANAGED_LABELS.items())
    same_data = all(current.data.get(key) == value for key, value in write.data.items())
    same_annotations = all(current.annotations.get(key) == value for key, value in write.annotations.items())
    return labelled and same_data and same_annotations


def _secret_events(
    name: str,
    current: SecretView | None,
    problems: Sequence[tuple[str, RefreshProblem]],
    error: str | None,
) -> list[SecretEvent]:
    """Events only on transitions (the refresh error appears, changes or clears), never per retry."""
    previous = current.annotations.get(REFRESH_ERROR_ANNOTATION) if current is not None else None
    if error is not None and error != previous:
        keeping = " The secret keeps its current credentials until they expire." if current else ""
        return [SecretEvent(name, "Warning", problems[0][1].reason, f"{error}.{keeping}")]
    if error is None and previous is not None:
        message = "Token refresh works again: the secret holds fresh, verified credentials."
        return [SecretEvent(name, "Normal", TOKEN_REFRESH_RECOVERED, message)]
    return []


def _service_account_patch(
    account: ServiceAccountView, demands: Sequence[RegistryDemand], serving: Collection[str]
) -> PatchServiceAccount | None:
    """Add the secrets that select this account; remove only references the operator itself added."""
    wanted = {
        demand.secret_name
        for demand in demands
        if demand.secret_name in serving and demand.service_accounts.selects(account)
    }
    unwanted = account.managed - wanted
    present = set(account.image_pull_secrets)
    kept = [name for name in account.image_pull_secrets if name not in unwanted]
    added = sorted(wanted - present)
    # A reference the user had before the operator wanted it stays the user's: it is never recorded as ours.
    managed = frozenset((account.managed & wanted & present) | set(added))
    references = tuple(dict.fromkeys([*kept, *added]))
    if references == account.image_pull_secrets and managed == account.managed:
        return None
    return PatchServiceAccount(account.name, references, managed, account.resource_version)


# --- status of EcrRepositories --------------------------------------------------------------------------


def repository_condition(repository: RepositoryView, outcome: DemandOutcome | None) -> DesiredCondition:
    """The PullSecretReady condition of a repository that asks for a pull secret."""
    status: StatusValue
    if outcome is None:
        status, reason, message = "Unknown", TOKEN_PENDING, "The pull secret has not been planned yet."
    elif outcome.state is DemandState.READY:
        status, reason, message = "True", outcome.reason, outcome.message
    elif outcome.state is DemandState.PENDING:
        status, reason, message = "Unknown", outcome.reason, outcome.message
    else:
        status, reason, message = "False", outcome.reason, outcome.message
    return DesiredCondition(
        type=PULL_SECRET_CONDITION,
        status=status,
        reason=reason,
        message=message,
        observed_generation=repository.generation,
    )


def repository_conditions_patch(
    repository: RepositoryView, outcome: DemandOutcome | None, now: datetime
) -> list[dict[str, Any]] | None:
    """``status.conditions`` to write, or None if unchanged; drops the condition once nothing asks for it."""
    if not repository.wants_pull_secret:
        if not repository.has_pull_secret_condition():
            return None
        return [dict(entry) for entry in repository.conditions if entry.get("type") != PULL_SECRET_CONDITION]
    status = {"conditions": list(repository.conditions)}
    return conditions_patch(status, [repository_condition(repository, outcome)], now)


def pull_secret_status(
    repository: RepositoryView, outcome: DemandOutcome | None, now: datetime
) -> dict[str, Any] | None:
    """The status the pull-secret controller applies to a repository, or None if unchanged: its own
    condition only (``{"conditions": []}`` once nothing asks for a secret, which removes it). Server-side
    apply merges it per condition type, so the repository controller's conditions are never sent."""
    conditions = repository_conditions_patch(repository, outcome, now)
    if conditions is None:
        return None
    return {"conditions": [entry for entry in conditions if entry.get("type") == PULL_SECRET_CONDITION]}
