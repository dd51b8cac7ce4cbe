"""Operator settings, read once at startup from ``ECR_OPERATOR_*`` environment variables.

The Helm chart renders its values into these variables; structured settings are JSON. A bad value fails
startup with a message naming the variable (``load_settings`` raises ``InvalidSettingsError``), because an
operator running on a half-understood configuration is worse than one that does not start.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import math
import os
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ecr_operator.api.common import (
    ACCOUNT_ID_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    REGION_PATTERN,
    ROLE_ARN_PATTERN,
)
from ecr_operator.api.common import parse_duration as parse_go_duration
from ecr_operator.ecr_hosts import is_ecr_host

ENV_PREFIX = "ECR_OPERATOR_"
# Read by hack/build-tools.sh and the sandbox, not by the operator; never reported as unknown.
_NON_OPERATOR_VARIABLES = frozenset({"ECR_OPERATOR_CACHE"})

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Sources a mirror may never read from unless the admin allows them: the instance metadata service
# (link-local), this host (loopback), private ranges an attacker could reach through the operator, and the
# IANA special-purpose ranges no registry lives in (RFC 6890 registries; docs/mirrors.md lists each).
DEFAULT_DENIED_SOURCE_IPV4: tuple[ipaddress.IPv4Network, ...] = tuple(
    ipaddress.IPv4Network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches this host on Linux
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier-grade NAT, some pod networks)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local: the instance metadata service
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments (DS-Lite, NAT64 discovery, ...)
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 (limited broadcast)
    )
)
DEFAULT_DENIED_SOURCE_IPV6: tuple[ipaddress.IPv6Network, ...] = tuple(
    ipaddress.IPv6Network(cidr)
    for cidr in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): where the IPv4 address sits is site-specific
        "100::/64",  # discard-only
        "2001:2::/48",  # benchmarking
        "2001:10::/28",  # ORCHID (deprecated)
        "2001:20::/28",  # ORCHIDv2: identifiers, not routable addresses
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # segment routing (SRv6) identifiers
        "fc00::/7",  # unique local (private)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
DEFAULT_DENIED_SOURCE_NETWORKS: tuple[IPNetwork, ...] = (
    *DEFAULT_DENIED_SOURCE_IPV4,
    *DEFAULT_DENIED_SOURCE_IPV6,
)
# IPv6 forms that carry an IPv4 address, which is judged as if connected to directly (a dual-stack socket
# or a translator on the path reaches it): ``::ffff:a.b.c.d`` (mapped), ``::ffff:0:a.b.c.d`` (SIIT),
# ``::a.b.c.d`` (compatible, deprecated), ``64:ff9b::a.b.c.d`` (NAT64), 6to4 and Teredo.
_LOW_32_BIT_FORMS = tuple(
    ipaddress.IPv6Network(cidr) for cidr in ("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96")
)
_LOW_32_BITS = 0xFFFFFFFF


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (mapped, translated, compatible, NAT64, 6to4, Teredo)."""
    if any(address in network for network in _LOW_32_BIT_FORMS):
        return (ipaddress.IPv4Address(int(address) & _LOW_32_BITS),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo  # (server, client): the client's address is stored inverted; this undoes it
    return ()


_HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$")
_HOST_PATTERN = re.compile(r"^[a-z0-9*?.-]+$")
_ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN)
_REGION = re.compile(REGION_PATTERN)
_ROLE_ARN = re.compile(ROLE_ARN_PATTERN)
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN_PATTERN)
_CLUSTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# ECR repository names: lowercase path segments; a prefix is such a name followed by "/" or a separator.
_ECR_NAME_PREFIX = re.compile(r"^([a-z0-9]+([._-][a-z0-9]+)*/)*([a-z0-9]+([._-][a-z0-9]+)*[._/-]?)?$")
_PREFIX_FIELDS = frozenset({"namespace", "cluster_id"})
_PULL_ROLE_FIELDS = frozenset({"accountId", "namespace", "region"})


class InvalidSettingsError(ValueError):
    """The environment holds settings the operator cannot run with; the message names every bad variable."""


def parse_duration(value: object) -> timedelta:
    """Read a Go-style duration (``90s``, ``10m``, ``1h30m``, ``6h``) as the CRDs do, or seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '10m' or '6h', got {type(value).__name__}")
    text = value.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"{value!r} is not a finite duration")
        return timedelta(seconds=seconds)
    return parse_go_duration(text)


def _require_positive(duration: timedelta) -> timedelta:
    if duration <= timedelta(0):
        raise ValueError("must be longer than zero")
    return duration


def _require_not_negative(duration: timedelta) -> timedelta:
    if duration < timedelta(0):
        raise ValueError("must not be negative")
    return duration


def _ip_address(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _decode_json(value: object) -> object:
    """Structured settings arrive as JSON text from the environment; already-parsed values pass through."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at position {error.pos})") from None


def _decode_name_list(value: object) -> object:
    """A list of names as JSON (``["a", "b"]``) or, for shell convenience, comma-separated (``a,b``)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return _decode_json(text)
    return [item.strip() for item in text.split(",") if item.strip()]


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_require_positive)]
NonNegativeDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_require_not_negative)
]
JsonValue = BeforeValidator(_decode_json)


def _shaped(pattern: re.Pattern[str], refusal: str) -> AfterValidator:
    """A check that a text matches ``pattern``; the error quotes the text, then says ``refusal``."""

    def check(text: str) -> str:
        if not pattern.match(text):
            raise ValueError(f"{text!r} {refusal}")
        return text

    return AfterValidator(check)


AccountIdText = Annotated[str, _shaped(_ACCOUNT_ID, "is not a 12-digit AWS account ID")]
RegionName = Annotated[str, _shaped(_REGION, "is not an AWS region name such as 'us-east-1'")]
RoleArnText = Annotated[str, _shaped(_ROLE_ARN, "is not an IAM role ARN")]
ClusterId = Annotated[str, _shaped(_CLUSTER_ID, "must be 1-128 letters, digits, '.', '_' or '-'")]


def _glob_matches(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


class _ChartModel(BaseModel):
    """Structured settings are written in chart values, so they use the chart's camelCase keys.

    Unknown keys are errors: a misspelt ``namespaceSelektor`` must not silently select every namespace.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class RoleArnRule(_ChartModel):
    """A role ARN pattern (``fnmatch`` glob) that objects may name in ``spec.registry.roleArn``.

    ``namespaces`` (globs) limits which namespaces may use it; empty means every namespace.
    """

    pattern: str
    namespaces: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_plain_pattern(cls, value: object) -> object:
        return {"pattern": value} if isinstance(value, str) else value

    @field_validator("pattern")
    @classmethod
    def _looks_like_arn(cls, pattern: str) -> str:
        if not pattern.startswith("arn:"):
            raise ValueError(
                f"{pattern!r} is not an ARN pattern (expected 'arn:aws:iam::<account>:role/...')"
            )
        return pattern

    def allows(self, role_arn: str, namespace: str | None) -> bool:
        in_namespace = namespace is None or not self.namespaces or _glob_matches(namespace, self.namespaces)
        return in_namespace and fnmatch.fnmatchcase(role_arn, self.pattern)


@dataclass(frozen=True)
class SourceRule:
    """One mirror-source rule: a CIDR (``10.1.0.0/16``) or a host glob (``*.corp.example``)."""

    text: str
    network: IPNetwork | None

    @classmethod
    def parse(cls, text: str) -> SourceRule:
        try:
            return cls(text, ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
        host = text.strip().lower()
        if not _HOST_PATTERN.match(host):
            raise ValueError(f"{text!r} is neither a CIDR nor a host name pattern")
        return cls(host, None)

    def matches_host(self, host: str) -> bool:
        return self.network is None and fnmatch.fnmatchcase(host.lower(), self.text)

    def matches_address(self, address: IPAddress) -> bool:
        return self.network is not None and address in self.network


def _parse_source_rules(value: object) -> object:
    decoded = _decode_name_list(value)
    if not isinstance(decoded, list | tuple):
        return decoded
    if not all(isinstance(item, str) for item in decoded):
        raise ValueError("expected a list of CIDRs and host name patterns (strings)")
    return [SourceRule.parse(item) for item in decoded]


SourceRules = Annotated[tuple[SourceRule, ...], NoDecode, BeforeValidator(_parse_source_rules)]


@dataclass(frozen=True)
class MirrorSourcePolicy:
    """Which registries an ImageMirror may read from.

    A source is refused when its host matches a denied host pattern, or one of its resolved addresses lies
    in a denied network (the built-in special-purpose ranges plus the admin's); an allowed host pattern
    admits the host whatever it resolves to, and an allowed network admits its addresses. An IPv6 address
    that embeds IPv4 addresses (``::ffff:10.0.0.1``, ``64:ff9b::a00:1``, 6to4, Teredo) is judged by those
    too: it is permitted only if each embedded address would be.
    """

    allowed: tuple[SourceRule, ...]
    denied: tuple[SourceRule, ...]

    def permits(self, host: str, addresses: Sequence[IPAddress]) -> bool:
        if any(rule.matches_host(host) for rule in self.allowed):
            return True
        if any(rule.matches_host(host) for rule in self.denied):
            return False
        return all(self._permits_address(address) for address in addresses)

    def _permits_address(self, address: IPAddress) -> bool:
        if any(rule.matches_address(address) for rule in self.allowed):
            return True
        denied_networks = (*DEFAULT_DENIED_SOURCE_NETWORKS, *(r.network for r in self.denied if r.network))
        if any(address in network for network in denied_networks):
            return False
        embedded = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else ()
        return all(self._permits_address(inner) for inner in embedded)


class PullSecretRegistry(_ChartModel):
    """An ECR registry whose pull credentials go into the cluster-wide pull secret."""

    account_id: AccountIdText
    region: RegionName
    role_arn: RoleArnText | None = None


class NamespaceSelector(_ChartModel):
    """Namespaces that get the cluster-wide pull secret: all labels must match, names are globs."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if _glob_matches(name, self.exclude):
            return False
        if self.include and not _glob_matches(name, self.include):
            return False
        return all(labels.get(key) == value for key, value in self.match_labels.items())


class ServiceAccountSelector(_ChartModel):
    """ServiceAccounts patched to use the pull secret: listed by name (globs) or carrying all the labels."""

    names: tuple[str, ...] = ("default",)
    match_labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if _glob_matches(name, self.names):
            return True
        return bool(self.match_labels) and all(
            labels.get(key) == value for key, value in self.match_labels.items()
        )


class PullSecretSettings(_ChartModel):
    """Cluster-wide pull-secret fan-out (admin-only). No registries means the feature is off."""

    registries: tuple[PullSecretRegistry, ...] = ()
    namespace_selector: NamespaceSelector = Field(default_factory=NamespaceSelector)
    service_account_selector: ServiceAccountSelector = Field(default_factory=ServiceAccountSelector)
    secret_name: str = "ecr-pull-secret"  # noqa: S105 -- the Secret object's name, not a secret

    @field_validator("secret_name")
    @classmethod
    def _secret_name_shape(cls, name: str) -> str:
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise ValueError(f"{name!r} is not a valid Secret name (lowercase DNS subdomain)")
        return name

    @property
    def enabled(self) -> bool:
        return bool(self.registries)


class Settings(BaseSettings):
    """Everything an admin can tune; each field is read from ``ECR_OPERATOR_<FIELD NAME IN CAPITALS>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # Helm renders an unset value as "": that means "use the default", not "an empty region".
        env_ignore_empty=True,
        frozen=True,
        extra="ignore",
        ser_json_timedelta="float",
    )

    # AWS
    aws_region: RegionName | None = None
    """Region for objects that name none; unset means boto3's own choice (AWS_REGION / AWS_DEFAULT_REGION)."""
    allowed_regions: Annotated[tuple[RegionName, ...], NoDecode, BeforeValidator(_decode_name_list)] = ()
    """Regions objects may use; empty means every region botocore knows ECR in (all partitions)."""
    registry_host_overrides: Annotated[dict[str, str], NoDecode, JsonValue] = Field(default_factory=dict)
    """ECR registry host (or ``*``) -> ``host:port`` really serving its registry API (moto has none)."""
    ca_bundle: Path | None = None
    """Extra PEM CA certificates trusted for registry TLS, on top of the system's."""
    allowed_role_arns: Annotated[tuple[RoleArnRule, ...], NoDecode, JsonValue] = ()
    """Role ARNs objects may ask the operator to assume; empty means none may."""
    cluster_id: ClusterId = "default"
    """Written into the owner tag of every repository, so two clusters sharing an account never collide."""
    repository_name_prefix: str = ""
    """Template every repository name in a namespace must start with, e.g. ``{namespace}/``; it ends with
    "/" so that a prefix is whole name segments (``{namespace}-`` would give namespace ``team`` the names
    of namespace ``team-a``)."""
    adoption_namespaces: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_decode_name_list)] = ()
    """Namespaces (globs) whose EcrRepositories may adopt an existing repository without owner tag; empty
    means none may (a tenant must not take over repositories made by hand or by Terraform)."""
    adopted_deletion_namespaces: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_decode_name_list)] = ()
    """Namespaces (globs) where deletionPolicy DeleteIfEmpty/ForceDelete applies to adopted repositories
    too; elsewhere an adopted repository is always retained."""
    allowed_identity_policy_roles: Annotated[tuple[RoleArnRule, ...], NoDecode, JsonValue] = ()
    """Roles (ARN globs, optionally per namespace) ``access.identityPolicies`` may put policies on;
    empty means none."""

    # Mirroring
    mirror_allowed_sources: SourceRules = ()
    """CIDRs and host globs mirrors may read from even though they are private (see MirrorSourcePolicy)."""
    mirror_denied_sources: SourceRules = ()
    """CIDRs and host globs mirrors may never read from, on top of the built-in private ranges."""
    mirror_concurrency: int = Field(default=4, ge=1, le=64)
    """ImageMirror syncs running at once, in all."""
    mirror_namespace_concurrency: int = Field(default=2, ge=1, le=64)
    """ImageMirror syncs of one namespace running at once: a tenant never holds every slot."""
    mirror_source_concurrency: int = Field(default=2, ge=1, le=64)
    """ImageMirror syncs reading from one source registry at once: a stuck upstream never holds every slot."""
    mirror_pass_timeout: Duration = timedelta(minutes=10)
    """Longest one mirror pass may run; then it ends as PassTimedOut, keeping what it copied."""
    mirror_blob_concurrency: int = Field(default=4, ge=1, le=64)
    """Blobs copied at once within one image."""

    # Pull secrets
    pull_secrets: Annotated[PullSecretSettings, NoDecode, JsonValue] = Field(
        default_factory=PullSecretSettings
    )
    token_refresh_lead: Duration = timedelta(hours=6)
    """Refresh a pull token this long before it expires, so failures have hours of retries left."""
    token_refresh_jitter: NonNegativeDuration = timedelta(minutes=10)
    token_fallback_lifetime: Duration = timedelta(hours=12)
    """Lifetime assumed when AWS reports an expiry that is missing or already past (moto says 2015)."""
    pull_secret_role_arn_template: str = ""
    """Pull-only role that ``EcrRepository.spec.pullSecret`` secrets are minted from, e.g.
    ``arn:aws:iam::{accountId}:role/ecr-pull-{namespace}``; empty means they have no pull identity."""
    pull_secrets_use_operator_credentials_single_tenant: bool = False
    """Single-tenant clusters only: mint pull secrets that have no pull role from the operator's own
    (push-capable) credentials, as if every namespace could be trusted with them."""

    # Kubernetes and kopf
    namespaces: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_decode_name_list)] = ()
    """Namespaces (globs) to serve; empty means cluster-wide."""
    peering_name: str | None = None
    """kopf peering object for active/standby replicas; unset means standalone (one replica)."""
    peering_priority: int = 0
    """Objects whose events kopf processes at once (kopf's queueing worker limit)."""
    aws_max_concurrency: int = Field(default=16, ge=1, le=256)
    """Blocking AWS SDK calls in flight at once (the size of the operator's thread pool)."""
    drift_interval: Duration = timedelta(minutes=10)
    """How often each object is compared with AWS to repair changes made outside the operator."""
    drift_jitter: NonNegativeDuration | None = None
    """Up to this much is added to each interval, drawn anew each time (default: a tenth of the interval,
    at most a minute), so that operators restarted together do not stay in lockstep."""
    drift_aws_requests_per_second: float = Field(default=50.0, gt=0, le=10_000)
    """AWS requests a drift pass makes per second at most (reconciles of new or changed specs are not
    slowed by it); a pass over N repositories takes at least about 3 * N / this many seconds."""
    repository_workers: int = Field(default=32, ge=1, le=1024)
    """EcrRepository reconciles (of new or changed specs, and retries) under way at once."""

    # Process
    bind_address: Annotated[str, AfterValidator(_ip_address)] = "127.0.0.1"
    """Address of the health and metrics servers: loopback locally, ``0.0.0.0`` in a pod."""
    metrics_port: int = Field(default=8080, ge=1, le=65535)
    health_port: int = Field(default=8081, ge=1, le=65535)
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("registry_host_overrides")
    @classmethod
    def _override_shapes(cls, overrides: dict[str, str]) -> dict[str, str]:
        for registry_host, target in overrides.items():
            if registry_host != "*" and not is_ecr_host(registry_host):
                raise ValueError(
                    f"key {registry_host!r} is not '*' or an ECR registry host "
                    "(<account>.dkr.ecr.<region>.amazonaws.com)"
                )
            if not _HOST_PORT.match(target):
                raise ValueError(f"value {target!r} for {registry_host!r} is not host:port")
        return overrides

    @field_validator("ca_bundle")
    @classmethod
    def _readable_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{str(path)!r} is not a readable file")
        return path

    @field_validator("repository_name_prefix")
    @classmethod
    def _prefix_template(cls, template: str) -> str:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = fields - _PREFIX_FIELDS
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {sorted(unknown)} (allowed: {{namespace}}, {{cluster_id}})"
            )
        sample = template.format(namespace="team-a", cluster_id="default")
        if not _ECR_NAME_PREFIX.match(sample):
            raise ValueError(f"{template!r} does not form an ECR repository name prefix (got {sample!r})")
        if template and not template.endswith("/"):
            raise ValueError(
                f"{template!r} must end with '/' so that a prefix is whole name segments: with"
                " '{namespace}-', namespace 'team' would own 'team-a-app', a name namespace 'team-a'"
                " needs. Use e.g. '{namespace}/'"
            )
        return template

    @field_validator("allowed_identity_policy_roles")
    @classmethod
    def _identity_role_patterns(cls, rules: tuple[RoleArnRule, ...]) -> tuple[RoleArnRule, ...]:
        for rule in rules:
            _, separator, name = rule.pattern.partition(":role/")
            if not separator or "/" in name:
                raise ValueError(
                    f"{rule.pattern!r} must look like 'arn:aws:iam::<account>:role/<name glob>' without a"
                    " role path: identity policies address a role by name, so the pattern is matched"
                    " against arn:<partition>:iam::<account>:role/<name>"
                )
        return rules

    @field_validator("pull_secret_role_arn_template")
    @classmethod
    def _pull_role_template(cls, template: str) -> str:
        if not template:
            return template
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = fields - _PULL_ROLE_FIELDS
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {sorted(unknown)}"
                " (allowed: {accountId}, {namespace}, {region})"
            )
        sample = template.format(accountId="123456789012", namespace="team-a", region="us-east-1")
        if not _ROLE_ARN.match(sample):
            raise ValueError(f"{template!r} does not form an IAM role ARN (got {sample!r})")
        return template

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.metrics_port == self.health_port:
            raise ValueError(
                f"{ENV_PREFIX}METRICS_PORT and {ENV_PREFIX}HEALTH_PORT are both {self.metrics_port}"
            )
        if self.drift_jitter is not None and self.drift_jitter >= self.drift_interval:
            raise ValueError(f"{ENV_PREFIX}DRIFT_JITTER must be shorter than {ENV_PREFIX}DRIFT_INTERVAL")
        if self.token_refresh_lead >= self.token_fallback_lifetime:
            raise ValueError(
                f"{ENV_PREFIX}TOKEN_REFRESH_LEAD must be shorter than {ENV_PREFIX}TOKEN_FALLBACK_LIFETIME"
            )
        return self

    @property
    def drift_pass_jitter(self) -> timedelta:
        """``drift_jitter``, or by default a tenth of the interval, at most a minute."""
        if self.drift_jitter is not None:
            return self.drift_jitter
        return min(timedelta(minutes=1), self.drift_interval / 10)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return self.peering_name is None

    @property
    def mirror_sources(self) -> MirrorSourcePolicy:
        return MirrorSourcePolicy(allowed=self.mirror_allowed_sources, denied=self.mirror_denied_sources)

    def repository_prefix(self, namespace: str) -> str:
        """The prefix every repository name owned by ``namespace`` must carry ("" when unrestricted)."""
        return self.repository_name_prefix.format(namespace=namespace, cluster_id=self.cluster_id)

    def role_arn_allowed(self, role_arn: str, namespace: str | None = None) -> bool:
        """The one role allow-list check: may objects in ``namespace`` name ``role_arn``? Without a namespace:
        may any namespace (for roles in the admin's own configuration, checked at startup)."""
        return any(rule.allows(role_arn, namespace) for rule in self.allowed_role_arns)

    def repository_name_allowed(self, repository_name: str, namespace: str) -> bool:
        """Whether ``namespace`` may own this name: it starts with the namespace's prefix, which ends at a
        "/" (validated), so the comparison is of whole segments."""
        return repository_name.startswith(self.repository_prefix(namespace))

    def adoption_allowed(self, namespace: str) -> bool:
        return _glob_matches(namespace, self.adoption_namespaces)

    def adopted_deletion_allowed(self, namespace: str) -> bool:
        return _glob_matches(namespace, self.adopted_deletion_namespaces)

    def identity_role_allowed(self, role_arn: str, namespace: str) -> bool:
        return any(rule.allows(role_arn, namespace) for rule in self.allowed_identity_policy_roles)


def load_settings() -> Settings:
    """Read the settings from the environment, or raise ``InvalidSettingsError`` naming each bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        raise InvalidSettingsError(describe_errors(error)) from None


def describe_errors(error: ValidationError) -> str:
    lines = []
    for detail in error.errors(include_url=False):
        field, *path = detail["loc"] or ("",)
        variable = f"{ENV_PREFIX}{str(field).upper()}" if field else "settings"
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
        message = str(detail["msg"]).removeprefix("Value error, ")
        lines.append(f"{variable}: {where + ': ' if where else ''}{message}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``ECR_OPERATOR_*`` variables that match no setting: almost always a typo worth a warning."""
    environ = os.environ if environ is None else environ
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | _NON_OPERATOR_VARIABLES
    return sorted(
        name for name in environ if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
    )


def settings_summary(settings: Settings) -> dict[str, Any]:
    """Settings as logged at startup: JSON-friendly, and free of anything secret (none of them is)."""
    return settings.model_dump(
        mode="json", by_alias=True, exclude={"mirror_allowed_sources", "mirror_denied_sources"}
    ) | {
        "mirror_allowed_sources": [rule.text for rule in settings.mirror_allowed_sources],
        "mirror_denied_sources": [rule.text for rule in settings.mirror_denied_sources],
    }
