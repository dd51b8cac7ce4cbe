"""Pull-secret decisions: who needs which registry, what the secret holds, what changes on ServiceAccounts."""

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

from ecr_operator.api.common import LabelSelector, RegistryIdentity
from ecr_operator.api.repository import PullSecret
from ecr_operator.aws.session import AwsIdentity
from ecr_operator.aws.tokens import (
    REGISTRY_REJECTED_TOKEN,
    TOKEN_REFRESH_FAILED,
    IdentityToken,
    RefreshProblem,
    TokenStatus,
)
from ecr_operator.config import PullSecretSettings
from ecr_operator.reconcile.pullsecrets import (
    DOCKER_CONFIG_KEY,
    EXPIRES_AT_ANNOTATION,
    MANAGED_LABELS,
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
    RepositoryView,
    SecretView,
    ServiceAccountView,
    WriteSecret,
    ecr_registry_host,
    label_selector_matches,
    namespace_demands,
    plan_namespace,
    repository_conditions_patch,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"
HOST = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
WEST_HOST = f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com"
OPERATOR = AwsIdentity(region="us-east-1")
ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecr-puller"
WEST_ROLE = AwsIdentity(region="us-west-2", role_arn=ROLE)
SECRET = "ecr-pull-secret"


def cluster_config(**overrides: Any) -> PullSecretSettings:
    values: dict[str, Any] = {
        "registries": [{"accountId": ACCOUNT, "region": "us-east-1"}],
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
    host: str = HOST,
    verified: bool = True,
    problem: RefreshProblem | None = None,
) -> TokenStatus:
    token = IdentityToken("AWS", password, host, issued, issued + timedelta(hours=12), verified)
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
) -> RepositoryView:
    registry = RegistryIdentity(region="us-east-1", account_id=ACCOUNT, role_arn=role_arn)
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
    statuses = {OPERATOR: token_status()} if tokens is None else tokens
    return plan_namespace(demands, accounts, secrets, statuses, foreign, now)


# --- hosts and selectors ------------------------------------------------------------------------------


def test_registry_hosts_are_the_names_pods_use() -> None:
    assert ecr_registry_host(ACCOUNT, "us-east-1") == HOST
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

    wanted = namespace_demands(selected(), config, [], allow_all)
    unlabelled = namespace_demands(NamespaceView("team-b", {}), config, [], allow_all)
    excluded = namespace_demands(NamespaceView("kube-system", {"team": "yes"}), config, [], allow_all)
    terminating = namespace_demands(NamespaceView("team-c", {"team": "yes"}, True), config, [], allow_all)

    assert [(d.secret_name, d.identity, d.account_id) for d in wanted.demands] == [
        (SECRET, OPERATOR, ACCOUNT)
    ]
    assert unlabelled == excluded == terminating == Demands()


def test_without_registries_the_cluster_wide_configuration_is_off() -> None:
    assert namespace_demands(selected(), PullSecretSettings(), [], allow_all) == Demands()


def test_a_repository_asks_for_its_own_namespace_only() -> None:
    asking = repository(pull_secret={"serviceAccounts": ["builder"]})
    elsewhere = replace(asking, namespace="victim")

    own = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all)
    victim = namespace_demands(NamespaceView("victim"), PullSecretSettings(), [elsewhere, asking], allow_all)

    assert [(d.repository, d.secret_name) for d in own.demands] == [("app", SECRET)]
    # Handed the repository of namespace team-a, the victim's demand ignores it.
    assert [d.repository for d in victim.demands] == ["app"]
    assert namespace_demands(NamespaceView("victim"), PullSecretSettings(), [asking], allow_all) == Demands()


def test_repositories_without_pull_secret_or_being_deleted_ask_for_nothing() -> None:
    deleting = replace(repository(pull_secret={}), deleting=True)

    demands = namespace_demands(selected(), PullSecretSettings(), [repository(), deleting], allow_all)

    assert demands == Demands()


def test_a_role_outside_the_allow_list_is_refused_for_repositories_and_cluster_registries() -> None:
    config = cluster_config(registries=[{"accountId": ACCOUNT, "region": "us-west-2", "roleArn": ROLE}])
    asking = repository(pull_secret={}, role_arn=ROLE)

    refused = namespace_demands(selected(), config, [asking], allow_none)
    allowed = namespace_demands(selected(), config, [asking], allow_all)

    assert refused.demands == ()
    assert [(r.repository, r.reason) for r in refused.refusals] == [
        (None, ROLE_NOT_ALLOWED),
        ("app", ROLE_NOT_ALLOWED),
    ]
    assert ROLE in refused.refusals[0].message
    assert {d.identity for d in allowed.demands} == {WEST_ROLE, AwsIdentity("us-east-1", ROLE)}


def test_secret_name_defaults_to_the_merged_secret_and_can_name_a_separate_one() -> None:
    repositories = [repository("a", pull_secret={}), repository("b", pull_secret={"secretName": "team-b"})]

    demands = namespace_demands(selected(), cluster_config(), repositories, allow_all)

    assert [(d.repository, d.secret_name) for d in demands.demands] == [
        (None, SECRET),
        ("a", SECRET),
        ("b", "team-b"),
    ]


# --- the secret ---------------------------------------------------------------------------------------


def two_registries() -> PullSecretSettings:
    return cluster_config(
        registries=[
            {"accountId": ACCOUNT, "region": "us-east-1"},
            {"accountId": OTHER_ACCOUNT, "region": "us-east-1"},
            {"accountId": ACCOUNT, "region": "us-west-2", "roleArn": ROLE},
        ]
    )


def test_a_new_namespace_gets_one_secret_merging_every_registry_it_needs() -> None:
    demands = namespace_demands(selected(), two_registries(), [], allow_all)
    tokens = {OPERATOR: token_status("pw-east"), WEST_ROLE: token_status("pw-west", host=WEST_HOST)}

    result = plan(demands, tokens=tokens)

    [write] = result.writes
    assert write.create
    manifest = write.manifest("team-a")
    assert (manifest["type"], manifest["metadata"]["name"]) == (SECRET_TYPE, SECRET)
    assert manifest["metadata"]["labels"] == MANAGED_LABELS
    auths = decoded_auths(write.data)
    assert sorted(auths) == sorted([HOST, WEST_HOST, f"{OTHER_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"])
    assert auths[HOST] == {
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
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)

    result = plan(demands, accounts=[service_account()], tokens={})

    assert result.empty
    assert [outcome.state for outcome in result.outcomes] == [DemandState.PENDING]


def test_a_planned_state_once_applied_plans_nothing() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
    first = plan(demands, accounts=[service_account()])

    again = plan(
        demands,
        accounts=[service_account(references=[SECRET], managed=[SECRET])],
        secrets=[applied(first.writes[0])],
    )

    assert again.empty
    assert again.events == ()


def test_a_refresh_patches_the_same_secret_in_place() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
    current = applied(plan(demands).writes[0])
    later = NOW + timedelta(hours=6)

    # moto's token never changes; the refresh still rewrites the secret with the token and its new times.
    result = plan(demands, secrets=[current], tokens={OPERATOR: token_status(issued=later)}, now=later)

    [write] = result.writes
    assert not write.create
    assert result.deletes == ()
    assert write.merge_patch()["data"] == {DOCKER_CONFIG_KEY: current.data[DOCKER_CONFIG_KEY]}
    assert write.annotations[REFRESHED_AT_ANNOTATION] == "2026-01-01T18:00:00Z"
    assert write.annotations[EXPIRES_AT_ANNOTATION] == "2026-01-02T06:00:00Z"


def test_a_failed_refresh_keeps_the_secret_and_says_so_once() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
    current = applied(plan(demands).writes[0])
    problem = RefreshProblem(TOKEN_REFRESH_FAILED, "GetAuthorizationToken failed (AccessDeniedException)")
    failing = {OPERATOR: token_status(problem=problem)}

    failed = plan(demands, secrets=[current], tokens=failing)
    retried = plan(demands, secrets=[applied(failed.writes[0])], tokens=failing)

    [write] = failed.writes
    assert write.data == current.data
    assert write.annotations[REFRESH_ERROR_ANNOTATION] == f"{HOST}: {problem.message}"
    [event] = failed.events
    assert (event.type, event.reason, event.secret_name) == ("Warning", TOKEN_REFRESH_FAILED, SECRET)
    assert "keeps its current credentials" in event.message
    assert retried.empty
    assert retried.events == ()
    assert [outcome.state for outcome in failed.outcomes] == [DemandState.FAILING]


def test_recovery_clears_the_error_and_says_so() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
    problem = RefreshProblem(TOKEN_REFRESH_FAILED, "GetAuthorizationToken failed (ThrottlingException)")
    failed = plan(demands, tokens={OPERATOR: token_status(problem=problem)})

    recovered = plan(demands, secrets=[applied(failed.writes[0])])

    [write] = recovered.writes
    assert write.annotations[REFRESH_ERROR_ANNOTATION] is None
    assert [(event.type, event.reason) for event in recovered.events] == [("Normal", TOKEN_REFRESH_RECOVERED)]


def test_a_token_the_registry_refused_never_replaces_credentials_that_still_work() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
    current = applied(plan(demands, tokens={OPERATOR: token_status("working")}).writes[0])
    problem = RefreshProblem(REGISTRY_REJECTED_TOKEN, f"{HOST} refused the new token (HTTP 401)")
    refused = {OPERATOR: token_status("refused", verified=False, problem=problem)}

    result = plan(demands, secrets=[current], tokens=refused, now=NOW + timedelta(hours=6))

    [write] = result.writes
    assert decoded_auths(write.data)[HOST]["password"] == "working"
    assert write.annotations[EXPIRES_AT_ANNOTATION] == current.annotations[EXPIRES_AT_ANNOTATION]


def test_after_a_restart_the_secret_keeps_its_entries_until_a_token_arrives() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
    current = applied(plan(demands).writes[0])

    result = plan(demands, secrets=[current], tokens={})

    assert result.empty


def test_stray_keys_in_the_operators_secret_are_removed() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
    current = applied(plan(demands).writes[0])
    tampered = replace(current, data={**current.data, "extra": "eA=="})

    [write] = plan(demands, secrets=[tampered]).writes

    assert write.data["extra"] is None


def test_a_secret_no_longer_needed_is_deleted_and_its_references_removed() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
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
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
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
    demands = namespace_demands(selected(), config, [], allow_all)
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
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
    account = service_account(references=[SECRET])

    assert plan(demands, accounts=[account]).service_accounts == ()
    assert plan(Demands(), accounts=[account]).service_accounts == ()


def test_a_reference_the_user_removed_is_put_back_while_the_secret_is_wanted() -> None:
    demands = namespace_demands(selected(), cluster_config(), [], allow_all)
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
    demands = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all)
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
    demands = namespace_demands(selected(), cluster_config(), [], allow_all) if wanted else Demands()
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
    demands = namespace_demands(selected(), PullSecretSettings(), [asking], allow_all)
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
    demands = namespace_demands(selected(), PullSecretSettings(), [asking], allow_none)

    conditions = repository_conditions_patch(asking, plan(demands).outcome_for("app"), NOW)

    assert conditions is not None
    assert (conditions[0]["status"], conditions[0]["reason"]) == ("False", ROLE_NOT_ALLOWED)


def test_the_condition_leaves_with_the_pull_secret_and_other_conditions_stay() -> None:
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Synced",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    ours = {"type": PULL_SECRET_CONDITION, "status": "True", "reason": SECRET_UP_TO_DATE}

    assert repository_conditions_patch(repository(conditions=[ready, ours]), None, NOW) == [ready]
    assert repository_conditions_patch(repository(conditions=[ready]), None, NOW) is None


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
