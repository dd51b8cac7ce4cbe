"""Pull-secret decisions: who needs which registry, what the secret holds, what changes on ServiceAccounts.

Every secret is minted from a pull identity (a pull role); the cluster-wide registries here name one and
repositories get theirs from the admin's role template (``PULL_ROLES``), as a secure configuration does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_fakes import ACCOUNT, ECR_HOST, issued_token
from ecr_operator.api.common import LabelSelector, RegistryIdentity
from ecr_operator.api.repository import PullSecret
from ecr_operator.config import PullSecretSettings
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.pullsecrets import (
    DOCKER_CONFIG_KEY,
    EXPIRES_AT_ANNOTATION,
    MANAGED_LABELS,
    NO_PULL_IDENTITY,
    PULL_ROLE_INVALID,
    PULL_SECRET_CONDITION,
    REFRESH_ERROR_ANNOTATION,
    REFRESHED_AT_ANNOTATION,
    REGISTRIES_ANNOTATION,
    ROLE_NOT_ALLOWED,
    SECRET_NAME_CONFLICT,
    SECRET_TYPE,
    SECRET_UP_TO_DATE,
    SERVICE_ACCOUNT_ANNOTATION,
    TOKEN_REFRESH_RECOVERED,
    DeleteSecret,
    Demands,
    DemandState,
    NamespacePlan,
    NamespaceView,
    PatchServiceAccount,
    PullIdentityPolicy,
    RepositoryView,
    SecretView,
    ServiceAccountView,
    WriteSecret,
    ecr_registry_host,
    label_selector_matches,
    namespace_demands,
    operator_account_region,
    plan_namespace,
    pull_secret_status,
    repository_conditions_patch,
)
from ecr_operator.reconcile.tokens import (
    REGISTRY_REJECTED_TOKEN,
    TOKEN_REFRESH_FAILED,
    RefreshProblem,
    TokenStatus,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OTHER_ACCOUNT = "210987654321"
WEST_HOST = f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecr-puller"
CLUSTER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecr-pull-cluster"
# The cluster-wide pull identity in us-east-1 (the registries of cluster_config() name CLUSTER_ROLE).
PULLER = AwsIdentity(region="us-east-1", role_arn=CLUSTER_ROLE)
WEST_ROLE = AwsIdentity(region="us-west-2", role_arn=ROLE)
TEMPLATE = "arn:aws:iam::{accountId}:role/ecr-pull-{namespace}"
PULL_ROLES = PullIdentityPolicy(role_template=TEMPLATE)
TEAM_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecr-pull-team-a"
# A repository's pull identity in namespace team-a, rendered from TEMPLATE.
TEAM_PULLER = AwsIdentity(region="us-east-1", role_arn=TEAM_ROLE)
OPERATOR = AwsIdentity(region="us-east-1")
SECRET = "ecr-pull-secret"


def cluster_config(**overrides: Any) -> PullSecretSettings:
    values: dict[str, Any] = {
        "registries": [{"accountId": ACCOUNT, "region": "us-east-1", "roleArn": CLUSTER_ROLE}],
        "namespaceSelector": {"matchLabels": {"team": "yes"}, "exclude": ["kube-*"]},
    }
    return PullSecretSettings.model_validate(values | overrides)


def allow_all(role_arn: str, namespace: str) -> bool:
    return True


def allow_none(role_arn: str, namespace: str) -> bool:
    return False


def selected(name: str = "team-a") -> NamespaceView:
    return NamespaceView(name, {"team": "yes"})


def token_status(
    password: str = "pw-1",  # noqa: S107 -- a fake token
    *,
    issued: datetime = NOW,
    host: str = ECR_HOST,
    verified: bool = True,
    problem: RefreshProblem | None = None,
) -> TokenStatus:
    token = issued_token(issued, password=password, host=host, verified=verified)
    return TokenStatus(token, problem, 1 if problem else 0, issued + timedelta(hours=6), issued)


def service_account(
    name: str = "default", references: Sequence[str] = (), managed: Sequence[str] = (), **labels: str
) -> ServiceAccountView:
    return ServiceAccountView(name, "17", labels, tuple(references), frozenset(managed))


def repository(
    name: str = "app",
    namespace: str = "team-a",
    *,
    pull_secret: Mapping[str, Any] | None = None,
    role_arn: str | None = None,
    conditions: Sequence[Mapping[str, Any]] = (),
    account_id: str | None = ACCOUNT,
    region: str = "us-east-1",
) -> RepositoryView:
    registry = RegistryIdentity(region=region, account_id=account_id, role_arn=role_arn)
    wanted = PullSecret.model_validate(pull_secret) if pull_secret is not None else None
    return RepositoryView(namespace, name, f"uid-{name}", "5", 3, registry, wanted, False, tuple(conditions))


def decoded_auths(data: Mapping[str, str | None]) -> dict[str, Any]:
    encoded = data[DOCKER_CONFIG_KEY]
    assert encoded is not None
    document: dict[str, Any] = json.loads(base64.b64decode(encoded))
    auths: dict[str, Any] = document["auths"]
    return auths


def applied(write: WriteSecret, uid: str = "uid-secret") -> SecretView:
    """The secret as the apiserver stores it after ``write``."""
    return SecretView(
        name=write.name,
        uid=uid,
        secret_type=SECRET_TYPE,
        labels=dict(MANAGED_LABELS),
        annotations={key: value for key, value in write.annotations.items() if value is not None},
        data={key: value for key, value in write.data.items() if value is not None},
    )


def plan(
    demands: Demands,
    *,
    accounts: Sequence[ServiceAccountView] = (),
    secrets: Sequence[SecretView] = (),
    tokens: Mapping[AwsIdentity, TokenStatus] | None = None,
    foreign: Sequence[str] = (),
    now: datetime = NOW,
) -> NamespacePlan:
    statuses = {PULLER: token_status(), TEAM_PULLER: token_status()} if tokens is None else tokens
    return plan_namespace(demands, accounts, secrets, statuses, foreign, now)


# --- hosts and selectors ------------------------------------------------------------------------------


def test_registry_hosts_are_the_names_pods_use() -> None:
    assert ecr_registry_host(ACCOUNT, "us-east-1") == ECR_HOST
    assert ecr_registry_host(ACCOUNT, "cn-north-1") == f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn"


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ],
)
def test_label_selectors_follow_kubernetes_semantics(
    selector: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    assert label_selector_matches(LabelSelector.model_validate(selector), labels) is matches


# --- demand -------------------------------------------------------------------------------------------


def test_the_cluster_wide_configuration_reaches_selected_namespaces_only() -> None:
    config = cluster_config()

    wanted = namespace_demands(selected(), config, [], allow_all, PULL_ROLES)
    unlabelled = namespace_demands(NamespaceView("team-b", {}), config, [], allow_all, PULL_ROLES)
    excluded = namespace_demands(
        NamespaceView("kube-system", {"team": "yes"}), config, [], allow_all, PULL_ROLES
    )
    terminating = namespace_demands(
        NamespaceView("team-c", {"team": "yes"}, True), config, [], allow_all, PULL_ROLES
    )

    assert [(d.secret_name, d.identity, d.account_id) for d in wanted.demands] == [(SECRET, PULLER, ACCOUNT)]
    assert unlabelled == excluded == terminating == Demands()


def test_without_registries_the_cluster_wide_configuration_is_off() -> None:
    assert namespace_demands(selected(), PullSecretSettings(), [], allow_all, PULL_ROLES) == Demands()


def test_a_repository_asks_for_its_own_namespace_only() -> None:
    asking = repository(pull_secret={"serviceAccounts": ["builder"]})
    elsewhere = replace(asking, namespace="victim")

    own = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all, PULL_ROLES)
    victim = namespace_demands(
        NamespaceView("victim"), PullSecretSettings(), [elsewhere, asking], allow_all, PULL_ROLES
    )

    assert [(d.repository, d.secret_name) for d in own.demands] == [("app", SECRET)]
    # Handed the repository of namespace team-a, the victim's demand ignores it.
    assert [d.repository for d in victim.demands] == ["app"]
    assert (
        namespace_demands(NamespaceView("victim"), PullSecretSettings(), [asking], allow_all, PULL_ROLES)
        == Demands()
    )


def test_repositories_without_pull_secret_or_being_deleted_ask_for_nothing() -> None:
    deleting = replace(repository(pull_secret={}), deleting=True)

    demands = namespace_demands(
        selected(), PullSecretSettings(), [repository(), deleting], allow_all, PULL_ROLES
    )

    assert demands == Demands()


def test_a_role_outside_the_allow_list_is_refused_for_repositories_and_cluster_registries() -> None:
    config = cluster_config(registries=[{"accountId": ACCOUNT, "region": "us-west-2", "roleArn": ROLE}])
    asking = repository(pull_secret={}, role_arn=ROLE)

    refused = namespace_demands(selected(), config, [asking], allow_none, PULL_ROLES)
    allowed = namespace_demands(selected(), config, [asking], allow_all, PULL_ROLES)

    assert refused.demands == ()
    assert [(r.repository, r.reason) for r in refused.refusals] == [
        (None, ROLE_NOT_ALLOWED),
        ("app", ROLE_NOT_ALLOWED),
    ]
    assert ROLE in refused.refusals[0].message
    # registry.roleArn manages the repository; its secret pulls with the namespace's pull role.
    assert {d.identity for d in allowed.demands} == {WEST_ROLE, TEAM_PULLER}


def test_secret_name_defaults_to_the_merged_secret_and_can_name_a_separate_one() -> None:
    repositories = [repository("a", pull_secret={}), repository("b", pull_secret={"secretName": "team-b"})]

    demands = namespace_demands(selected(), cluster_config(), repositories, allow_all, PULL_ROLES)

    assert [(d.repository, d.secret_name) for d in demands.demands] == [
        (None, SECRET),
        ("a", SECRET),
        ("b", "team-b"),
    ]


# --- pull identities ----------------------------------------------------------------------------------


def test_without_a_pull_role_a_repository_gets_no_secret_and_is_told_why() -> None:
    asking = repository(pull_secret={"serviceAccounts": ["default"]})

    demands = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all)
    result = plan(demands, accounts=[service_account()], tokens={OPERATOR: token_status()})

    assert demands.demands == ()
    [refusal] = demands.refusals
    assert (refusal.repository, refusal.reason) == ("app", NO_PULL_IDENTITY)
    # The message names what an admin would change.
    assert "ECR_OPERATOR_PULL_SECRET_ROLE_ARN_TEMPLATE" in refusal.message
    assert "ECR_OPERATOR_PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT" in refusal.message
    assert result.writes == ()
    assert result.service_accounts == ()
    conditions = repository_conditions_patch(asking, result.outcome_for("app"), NOW)
    assert conditions is not None
    assert (conditions[0]["status"], conditions[0]["reason"]) == ("False", NO_PULL_IDENTITY)
    assert conditions[0]["message"] == refusal.message


def test_a_cluster_wide_registry_without_a_role_gets_no_secret() -> None:
    config = cluster_config(
        registries=[
            {"accountId": ACCOUNT, "region": "us-east-1"},
            {"accountId": ACCOUNT, "region": "us-west-2", "roleArn": ROLE},
        ]
    )

    demands = namespace_demands(selected(), config, [], allow_all)
    result = plan(demands, tokens={OPERATOR: token_status(), WEST_ROLE: token_status(host=WEST_HOST)})

    assert [d.identity for d in demands.demands] == [WEST_ROLE]
    [refusal] = demands.refusals
    assert (refusal.repository, refusal.reason) == (None, NO_PULL_IDENTITY)
    assert "roleArn" in refusal.message
    assert ACCOUNT in refusal.message
    [write] = result.writes
    assert list(decoded_auths(write.data)) == [WEST_HOST]


def test_a_secret_minted_before_pull_roles_existed_is_deleted() -> None:
    """Upgrading: a secret holding the operator's own token goes once its demand has no pull identity."""
    insecure = PullIdentityPolicy(operator_credentials_single_tenant=True)
    asking = repository(pull_secret={})
    before = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all, insecure)
    current = applied(plan(before, tokens={OPERATOR: token_status()}).writes[0], uid="uid-old")

    after = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all)
    result = plan(after, secrets=[current], tokens={OPERATOR: token_status()})

    assert result.writes == ()
    assert result.deletes == (DeleteSecret(SECRET, "uid-old"),)


@pytest.mark.parametrize(
    ("template", "registry", "role", "registry_account"),
    [
        # {accountId} is the repository's registry account, named in the spec...
        (TEMPLATE, {"account_id": ACCOUNT}, TEAM_ROLE, ACCOUNT),
        # ... or that of the role managing it ...
        (
            TEMPLATE,
            {"account_id": None, "role_arn": f"arn:aws:iam::{OTHER_ACCOUNT}:role/manager"},
            f"arn:aws:iam::{OTHER_ACCOUNT}:role/ecr-pull-team-a",
            OTHER_ACCOUNT,
        ),
        # ... or that of the operator's own credentials (learned from STS).
        (TEMPLATE, {"account_id": None}, f"arn:aws:iam::{OTHER_ACCOUNT}:role/ecr-pull-team-a", OTHER_ACCOUNT),
        # The pull role may live in another account than the registry.
        (
            "arn:aws:iam::999999999999:role/pull/{region}/{namespace}",
            {"region": "eu-west-1"},
            "arn:aws:iam::999999999999:role/pull/eu-west-1/team-a",
            ACCOUNT,
        ),
    ],
)
def test_the_pull_role_is_rendered_from_the_template(
    template: str, registry: dict[str, Any], role: str, registry_account: str
) -> None:
    region = registry.get("region", "us-east-1")
    asking = repository(pull_secret={}, **registry)
    policy = PullIdentityPolicy(role_template=template, operator_account=OTHER_ACCOUNT)

    [demand] = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all, policy).demands

    assert demand.identity == AwsIdentity(region=region, role_arn=role)
    # The secret's host is the repository's registry, whatever account the pull role lives in.
    assert demand.host(None) == ecr_registry_host(registry_account, region)


def test_the_account_is_never_read_from_status() -> None:
    """A tenant may write status: a registryId there must not choose whose pull role renders."""
    body = {
        "metadata": {"name": "app", "namespace": "team-a", "generation": 1},
        "spec": {"registry": {"region": "us-east-1"}, "pullSecret": {}},
        "status": {"registryId": OTHER_ACCOUNT, "repositoryUri": f"{OTHER_ACCOUNT}.dkr.ecr.x/app"},
    }
    asking = RepositoryView.from_body(body)

    unknown = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all, PULL_ROLES)
    known = namespace_demands(
        selected(),
        PullSecretSettings(),
        [asking],
        allow_all,
        replace(PULL_ROLES, operator_account=ACCOUNT),
    )

    assert unknown.demands == ()
    assert [(w.repository, w.reason) for w in unknown.waiting] == [("app", "AccountPending")]
    assert [d.identity.role_arn for d in known.demands] == [TEAM_ROLE]
    assert known.demands[0].host(None) == ECR_HOST


def test_while_the_account_is_unknown_the_demand_waits() -> None:
    asking = repository(pull_secret={}, account_id=None)

    demands = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all, PULL_ROLES)
    result = plan(demands, tokens={})

    assert result.empty
    outcome = result.outcome_for("app")
    assert outcome is not None
    assert outcome.state is DemandState.PENDING
    conditions = repository_conditions_patch(asking, outcome, NOW)
    assert conditions is not None
    assert (conditions[0]["status"], conditions[0]["reason"]) == ("Unknown", "AccountPending")
    assert "GetCallerIdentity" in conditions[0]["message"]


def test_the_operators_account_is_asked_for_only_when_a_template_needs_it() -> None:
    unnamed = repository(pull_secret={}, account_id=None, region="eu-west-1")
    named = repository("named", pull_secret={})
    no_secret = repository("plain", account_id=None)

    assert operator_account_region("team-a", [named, no_secret, unnamed], PULL_ROLES) == "eu-west-1"
    assert operator_account_region("team-a", [named, no_secret], PULL_ROLES) is None
    assert operator_account_region("other", [unnamed], PULL_ROLES) is None
    assert operator_account_region("team-a", [unnamed], replace(PULL_ROLES, operator_account=ACCOUNT)) is None
    fixed = PullIdentityPolicy(role_template="arn:aws:iam::123456789012:role/pull-{namespace}")
    assert operator_account_region("team-a", [unnamed], fixed) is None


def test_a_rendered_role_outside_the_allow_list_is_refused() -> None:
    def only_own_namespace(role_arn: str, namespace: str) -> bool:
        return role_arn == f"arn:aws:iam::{ACCOUNT}:role/ecr-pull-{namespace}" and namespace == "team-b"

    asking = repository(pull_secret={})

    demands = namespace_demands(selected(), PullSecretSettings(), [asking], only_own_namespace, PULL_ROLES)

    assert demands.demands == ()
    [refusal] = demands.refusals
    assert refusal.reason == ROLE_NOT_ALLOWED
    assert TEAM_ROLE in refusal.message
    assert "ECR_OPERATOR_PULL_SECRET_ROLE_ARN_TEMPLATE" in refusal.message
    assert "ECR_OPERATOR_ALLOWED_ROLE_ARNS" in refusal.message


def test_a_template_rendering_no_valid_role_is_refused() -> None:
    long_namespace = "n" * 60
    asking = repository(pull_secret={}, namespace=long_namespace)

    demands = namespace_demands(
        NamespaceView(long_namespace), PullSecretSettings(), [asking], allow_all, PULL_ROLES
    )

    assert [(r.reason, "at most 64 characters" in r.message) for r in demands.refusals] == [
        (PULL_ROLE_INVALID, True)
    ]


def test_single_tenant_opt_in_uses_the_operators_own_credentials() -> None:
    opted_in = PullIdentityPolicy(operator_credentials_single_tenant=True)
    config = cluster_config(registries=[{"accountId": ACCOUNT, "region": "us-east-1"}])
    repositories = [repository("a", pull_secret={}), repository("b", pull_secret={}, role_arn=ROLE)]

    demands = namespace_demands(selected(), config, repositories, allow_all, opted_in)
    with_template = namespace_demands(
        selected(), config, repositories, allow_all, replace(opted_in, role_template=TEMPLATE)
    )

    assert demands.refusals == ()
    assert [(d.repository, d.identity) for d in demands.demands] == [
        (None, OPERATOR),
        ("a", OPERATOR),
        ("b", AwsIdentity("us-east-1", ROLE)),
    ]
    # A pull role, where one is configured, always wins over the operator's own credentials.
    assert [(d.repository, d.identity) for d in with_template.demands] == [
        (None, OPERATOR),
        ("a", TEAM_PULLER),
        ("b", TEAM_PULLER),
    ]


# --- the secret ---------------------------------------------------------------------------------------


def two_registries() -> PullSecretSettings:
    return cluster_config(
        registries=[
            {"accountId": ACCOUNT, "region": "us-east-1", "roleArn": CLUSTER_ROLE},
            {"accountId": OTHER_ACCOUNT, "region": "us-east-1", "roleArn": CLUSTER_ROLE},
            {"accountId": ACCOUNT, "region": "us-west-2", "roleArn": ROLE},
        ]
    )


def test_a_new_namespace_gets_one_secret_merging_every_registry_it_needs() -> None:
    demands = namespace_demands(selected(), two_registries(), [], allow_all, PULL_ROLES)
    tokens = {PULLER: token_status("pw-east"), WEST_ROLE: token_status("pw-west", host=WEST_HOST)}

    result = plan(demands, tokens=tokens)

    [write] = result.writes
    assert write.create
    manifest = write.manifest("team-a")
    assert (manifest["type"], manifest["metadata"]["name"]) == (SECRET_TYPE, SECRET)
    assert manifest["metadata"]["labels"] == MANAGED_LABELS
    auths = decoded_auths(write.data)
    assert sorted(auths) == sorted([ECR_HOST, WEST_HOST, f"{OTHER_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"])
    assert auths[ECR_HOST] == {
        "username": "AWS",
        "password": "pw-east",
        "auth": base64.b64encode(b"AWS:pw-east").decode(),
    }
    # One token per identity opens every registry it may reach: the other account's entry reuses it.
    assert auths[f"{OTHER_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"]["password"] == "pw-east"
    assert auths[WEST_HOST]["password"] == "pw-west"
    assert write.annotations[REGISTRIES_ANNOTATION] == ",".join(sorted(auths))
    assert write.annotations[EXPIRES_AT_ANNOTATION] == "2026-01-02T00:00:00Z"
    assert write.annotations[REFRESH_ERROR_ANNOTATION] is None
    assert all(outcome.state is DemandState.READY for outcome in result.outcomes)


def test_nothing_is_written_before_any_token_exists() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)

    result = plan(demands, accounts=[service_account()], tokens={})

    assert result.empty
    assert [outcome.state for outcome in result.outcomes] == [DemandState.PENDING]


def test_a_planned_state_once_applied_plans_nothing() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    first = plan(demands, accounts=[service_account()])

    again = plan(
        demands,
        accounts=[service_account(references=[SECRET], managed=[SECRET])],
        secrets=[applied(first.writes[0])],
    )

    assert again.empty
    assert again.events == ()


def test_a_refresh_patches_the_same_secret_in_place() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    current = applied(plan(demands).writes[0])
    later = NOW + timedelta(hours=6)

    # moto's token never changes; the refresh still rewrites the secret with the token and its new times.
    result = plan(demands, secrets=[current], tokens={PULLER: token_status(issued=later)}, now=later)

    [write] = result.writes
    assert not write.create
    assert result.deletes == ()
    assert write.merge_patch()["data"] == {DOCKER_CONFIG_KEY: current.data[DOCKER_CONFIG_KEY]}
    assert write.annotations[REFRESHED_AT_ANNOTATION] == "2026-01-01T18:00:00Z"
    assert write.annotations[EXPIRES_AT_ANNOTATION] == "2026-01-02T06:00:00Z"


def test_a_failed_refresh_keeps_the_secret_and_says_so_once() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    current = applied(plan(demands).writes[0])
    problem = RefreshProblem(TOKEN_REFRESH_FAILED, "GetAuthorizationToken failed (AccessDeniedException)")
    failing = {PULLER: token_status(problem=problem)}

    failed = plan(demands, secrets=[current], tokens=failing)
    retried = plan(demands, secrets=[applied(failed.writes[0])], tokens=failing)

    [write] = failed.writes
    assert write.data == current.data
    assert write.annotations[REFRESH_ERROR_ANNOTATION] == f"{ECR_HOST}: {problem.message}"
    [event] = failed.events
    assert (event.type, event.reason, event.secret_name) == ("Warning", TOKEN_REFRESH_FAILED, SECRET)
    assert "keeps its current credentials" in event.message
    assert retried.empty
    assert retried.events == ()
    assert [outcome.state for outcome in failed.outcomes] == [DemandState.FAILING]


def test_recovery_clears_the_error_and_says_so() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    problem = RefreshProblem(TOKEN_REFRESH_FAILED, "GetAuthorizationToken failed (ThrottlingException)")
    failed = plan(demands, tokens={PULLER: token_status(problem=problem)})

    recovered = plan(demands, secrets=[applied(failed.writes[0])])

    [write] = recovered.writes
    assert write.annotations[REFRESH_ERROR_ANNOTATION] is None
    assert [(event.type, event.reason) for event in recovered.events] == [("Normal", TOKEN_REFRESH_RECOVERED)]


def test_a_token_the_registry_refused_never_replaces_credentials_that_still_work() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    current = applied(plan(demands, tokens={PULLER: token_status("working")}).writes[0])
    problem = RefreshProblem(REGISTRY_REJECTED_TOKEN, f"{ECR_HOST} refused the new token (HTTP 401)")
    refused = {PULLER: token_status("refused", verified=False, problem=problem)}

    result = plan(demands, secrets=[current], tokens=refused, now=NOW + timedelta(hours=6))

    [write] = result.writes
    assert decoded_auths(write.data)[ECR_HOST]["password"] == "working"
    assert write.annotations[EXPIRES_AT_ANNOTATION] == current.annotations[EXPIRES_AT_ANNOTATION]


def test_after_a_restart_the_secret_keeps_its_entries_until_a_token_arrives() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    current = applied(plan(demands).writes[0])

    result = plan(demands, secrets=[current], tokens={})

    assert result.empty


def test_stray_keys_in_the_operators_secret_are_removed() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    current = applied(plan(demands).writes[0])
    tampered = replace(current, data={**current.data, "extra": "eA=="})

    [write] = plan(demands, secrets=[tampered]).writes

    assert write.data["extra"] is None


def test_a_secret_no_longer_needed_is_deleted_and_its_references_removed() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    current = applied(plan(demands).writes[0], uid="uid-1")
    account = service_account(references=["mine", SECRET], managed=[SECRET])

    result = plan(Demands(), accounts=[account], secrets=[current])

    assert result.writes == ()
    assert result.deletes == (DeleteSecret(SECRET, "uid-1"),)
    assert result.service_accounts == (PatchServiceAccount("default", ("mine",), frozenset(), "17"),)
    assert result.service_accounts[0].merge_patch() == {
        "metadata": {"resourceVersion": "17", "annotations": {SERVICE_ACCOUNT_ANNOTATION: None}},
        "imagePullSecrets": [{"name": "mine"}],
    }


def test_a_name_taken_by_someone_elses_secret_is_left_alone() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    opaque = SecretView(SECRET, "uid-theirs", "Opaque", dict(MANAGED_LABELS))

    taken = plan(demands, accounts=[service_account()], foreign=[SECRET])
    wrong_type = plan(demands, accounts=[service_account()], secrets=[opaque])

    for result in (taken, wrong_type):
        assert result.empty
        assert [(o.state, o.reason) for o in result.outcomes] == [
            (DemandState.CONFLICT, SECRET_NAME_CONFLICT)
        ]


# --- ServiceAccounts ----------------------------------------------------------------------------------


def test_selected_service_accounts_get_the_secret_and_keep_their_own_entries() -> None:
    config = cluster_config(
        serviceAccountSelector={"names": ["default", "build-*"], "matchLabels": {"pull": "1"}}
    )
    demands = namespace_demands(selected(), config, [], allow_all, PULL_ROLES)
    accounts = [
        service_account("default", references=["users-own"]),
        service_account("build-1"),
        service_account("labelled", pull="1"),
        service_account("other"),
    ]

    result = plan(demands, accounts=accounts)

    assert {patch.name: patch.image_pull_secrets for patch in result.service_accounts} == {
        "build-1": (SECRET,),
        "default": ("users-own", SECRET),
        "labelled": (SECRET,),
    }
    assert all(patch.managed == {SECRET} for patch in result.service_accounts)


def test_a_reference_the_user_made_first_stays_the_users() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    account = service_account(references=[SECRET])

    assert plan(demands, accounts=[account]).service_accounts == ()
    assert plan(Demands(), accounts=[account]).service_accounts == ()


def test_a_reference_the_user_removed_is_put_back_while_the_secret_is_wanted() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES)
    current = applied(plan(demands).writes[0])

    result = plan(demands, accounts=[service_account(managed=[SECRET])], secrets=[current])

    assert result.service_accounts == (PatchServiceAccount("default", (SECRET,), frozenset({SECRET}), "17"),)
    assert result.service_accounts[0].merge_patch() == {
        "metadata": {"resourceVersion": "17", "annotations": {SERVICE_ACCOUNT_ANNOTATION: SECRET}},
        "imagePullSecrets": [{"name": SECRET}],
    }


def test_repository_service_accounts_by_name_and_label_selector() -> None:
    asking = repository(
        pull_secret={
            "serviceAccounts": ["builder"],
            "serviceAccountSelector": {"matchExpressions": [{"key": "pulls", "operator": "Exists"}]},
            "secretName": "app-pull",
        }
    )
    demands = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all, PULL_ROLES)
    accounts = [service_account("default"), service_account("builder"), service_account("job", pulls="")]

    result = plan(demands, accounts=accounts)

    assert [write.name for write in result.writes] == ["app-pull"]
    assert {patch.name: patch.image_pull_secrets for patch in result.service_accounts} == {
        "builder": ("app-pull",),
        "job": ("app-pull",),
    }


@given(
    user_refs=st.lists(st.sampled_from(["a", "b", SECRET, "other"]), unique=True, max_size=4),
    managed=st.sets(st.sampled_from([SECRET, "other"])),
    wanted=st.booleans(),
)
def test_service_account_edits_only_ever_touch_the_operators_own_references(
    user_refs: list[str], managed: set[str], wanted: bool
) -> None:
    demands = (
        namespace_demands(selected(), cluster_config(), [], allow_all, PULL_ROLES) if wanted else Demands()
    )
    account = service_account(references=user_refs, managed=managed)

    patches = plan(demands, accounts=[account]).service_accounts

    after = list(patches[0].image_pull_secrets) if patches else user_refs
    removed = set(user_refs) - set(after)
    assert removed <= managed
    assert [ref for ref in after if ref in user_refs] == [ref for ref in user_refs if ref not in removed]
    assert (SECRET in after) is (wanted or (SECRET in user_refs and SECRET not in managed))


# --- EcrRepository status -----------------------------------------------------------------------------


def test_a_served_repository_reports_pull_secret_ready() -> None:
    asking = repository(pull_secret={})
    demands = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all, PULL_ROLES)
    result = plan(demands)

    conditions = repository_conditions_patch(asking, result.outcome_for("app"), NOW)

    assert conditions is not None
    [condition] = conditions
    assert condition["type"] == PULL_SECRET_CONDITION
    assert (condition["status"], condition["reason"]) == ("True", SECRET_UP_TO_DATE)
    assert condition["observedGeneration"] == 3
    assert (
        repository_conditions_patch(
            replace(asking, conditions=tuple(conditions)), result.outcome_for("app"), NOW
        )
        is None
    )


def test_a_refused_role_shows_on_the_repository() -> None:
    asking = repository(pull_secret={}, role_arn=ROLE)
    demands = namespace_demands(selected(), PullSecretSettings(), [asking], allow_none, PULL_ROLES)

    conditions = repository_conditions_patch(asking, plan(demands).outcome_for("app"), NOW)

    assert conditions is not None
    assert (conditions[0]["status"], conditions[0]["reason"]) == ("False", ROLE_NOT_ALLOWED)


# The repository controller's own condition: pull-secret status never touches it.
READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Synced",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
}


def test_the_condition_leaves_with_the_pull_secret_and_other_conditions_stay() -> None:
    ours = {"type": PULL_SECRET_CONDITION, "status": "True", "reason": SECRET_UP_TO_DATE}

    assert repository_conditions_patch(repository(conditions=[READY, ours]), None, NOW) == [READY]
    assert repository_conditions_patch(repository(conditions=[READY]), None, NOW) is None


def test_the_applied_status_carries_only_the_pull_secret_condition() -> None:
    asking = repository(pull_secret={}, conditions=[READY])
    demands = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all, PULL_ROLES)
    outcome = plan(demands).outcome_for("app")

    status = pull_secret_status(asking, outcome, NOW)

    assert status is not None
    assert [entry["type"] for entry in status["conditions"]] == [PULL_SECRET_CONDITION]
    applied = replace(asking, conditions=(READY, *status["conditions"]))
    assert pull_secret_status(applied, outcome, NOW) is None
    # Once nothing asks, the applied list is empty: server-side apply removes the condition it owned.
    assert pull_secret_status(replace(applied, pull_secret=None), None, NOW) == {"conditions": []}


# --- parsing cluster objects --------------------------------------------------------------------------


def test_views_read_what_the_apiserver_sends() -> None:
    account = ServiceAccountView.from_body(
        {
            "metadata": {
                "name": "default",
                "resourceVersion": "42",
                "annotations": {SERVICE_ACCOUNT_ANNOTATION: f"{SECRET}, other"},
            },
            "imagePullSecrets": [{"name": "users-own"}, {"name": SECRET}, {}],
        }
    )
    terminating = NamespaceView.from_body({"metadata": {"name": "a"}, "status": {"phase": "Terminating"}})
    deleting = NamespaceView.from_body(
        {"metadata": {"name": "b", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    )

    assert account == ServiceAccountView(
        "default", "42", {}, ("users-own", SECRET), frozenset({SECRET, "other"})
    )
    assert terminating.terminating
    assert deleting.terminating
    assert not NamespaceView.from_body({"metadata": {"name": "c"}, "status": {"phase": "Active"}}).terminating


@pytest.mark.parametrize("data", [{}, {DOCKER_CONFIG_KEY: "not base64"}, {DOCKER_CONFIG_KEY: "W10="}])
def test_a_malformed_docker_config_reads_as_no_auths(data: dict[str, str]) -> None:
    assert SecretView(SECRET, "uid", data=data).auths() == {}


def test_a_repository_the_operator_cannot_parse_asks_for_nothing() -> None:
    body = {
        "metadata": {"name": "app", "namespace": "team-a", "generation": 2},
        "spec": {"registry": {"region": "nowhere"}, "pullSecret": {}},
    }

    view = RepositoryView.from_body(body)

    assert (view.namespace, view.generation, view.registry, view.pull_secret) == ("team-a", 2, None, None)
    assert not view.wants_pull_secret


def test_a_repository_view_keeps_only_what_pull_secrets_read() -> None:
    # Every repository is in kopf's index: one that asks for no secret is held as little as possible.
    ours = {"type": PULL_SECRET_CONDITION, "status": "True", "reason": SECRET_UP_TO_DATE}
    body = {
        "metadata": {"name": "app", "namespace": "team-a", "generation": 2},
        "spec": {"registry": {"region": "us-east-1"}},
        "status": {"conditions": [READY, ours]},
    }

    view = RepositoryView.from_body(body)

    assert (view.registry, view.pull_secret, view.conditions) == (None, None, (ours,))
    asking = RepositoryView.from_body({**body, "spec": {**body["spec"], "pullSecret": {}}})
    assert asking.registry == RegistryIdentity(region="us-east-1")
    assert asking.wants_pull_secret
