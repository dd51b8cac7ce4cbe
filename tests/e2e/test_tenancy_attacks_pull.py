"""Issue 8, F1: a tenant's pull secret must never carry the operator's own (push-capable) ECR token.

Reproduced as a tenant does it: an ``EcrRepository`` with ``spec.pullSecret`` in its own namespace, then a
look at the Secret it gets. moto's call log names the access key ID behind every AWS call: the operator's
own credentials are the world's static test key, and each role moto's ``AssumeRole`` hands out has a key of
its own (``ASIA...``), so the log proves which identity minted each token.
"""

from __future__ import annotations

import json
import secrets as random_names
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from repository_support import short_token_lives
from test_pullsecrets import (
    SECRET,
    StartOperator,
    apply,
    assert_log_holds_no_credentials,
    auths_of,
    condition,
    events_about,
    labelled_namespaces,
    login_status,
    pull_secret_names,
    pull_secrets_config,
    read,
    refreshed_secret,
    repository,
    secret_of,
    service_account_of,
)

from ecr_sandbox.aws import AwsCall, callers_by_role
from ecr_sandbox.world import AWS_TEST_CREDENTIAL, World
from waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TEMPLATE = "arn:aws:iam::{accountId}:role/ecr-pull-{namespace}"
TEMPLATE_SETTING = "ECR_OPERATOR_PULL_SECRET_ROLE_ARN_TEMPLATE"
SINGLE_TENANT_SETTING = "ECR_OPERATOR_PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT"
# Short token lives, so a test also sees tokens minted by refreshes, not only the first one.
FAST_REFRESH = short_token_lives(lifetime=4, lead=2)


@pytest.fixture
def tenant(world: World) -> Iterator[Callable[..., str]]:
    """A factory of tenant namespaces (labels optional), deleted afterwards."""
    yield from labelled_namespaces(world, "tenant-")


def token_calls(calls: list[AwsCall]) -> list[AwsCall]:
    return [call for call in calls if call.operation == "GetAuthorizationToken"]


def operators_secrets(world: World, namespace: str) -> list[dict[str, Any]]:
    listing = read(world, f"/api/v1/namespaces/{namespace}/secrets?labelSelector=ecr-operator.io/pull-secret")
    items: list[dict[str, Any]] = (listing or {}).get("items", [])
    return items


def condition_with(world: World, namespace: str, name: str, status: str) -> dict[str, Any]:
    found: dict[str, Any] = eventually(
        f"PullSecretReady={status}",
        lambda: (
            (found := condition(world, namespace, name, "PullSecretReady"))
            and found["status"] == status
            and found
        ),
    )
    return found


def selected_tenant_without_a_pull_role(
    world: World, tenant: Callable[..., str], **config: Any
) -> tuple[str, str]:
    """A labelled tenant namespace, and the ECR_OPERATOR_PULL_SECRETS that selects it for the world's registry
    without naming a roleArn (``config``: more of that setting)."""
    label = {"ecr-operator-test": random_names.token_hex(4)}
    registries = [{"accountId": world.account_id, "region": world.region}]
    return tenant(label), pull_secrets_config({"matchLabels": label}, registries=registries, **config)


def test_f1_without_a_pull_identity_a_tenant_gets_no_secret_and_is_told_why(
    world: World, operator: StartOperator, tenant: Callable[..., str]
) -> None:
    namespace = tenant()
    mark = len(world.aws_calls())
    running = operator()

    apply(world, repository(namespace, "app", {"serviceAccounts": ["default"]}))

    refused = condition_with(world, namespace, "app", "False")
    assert refused["reason"] == "NoPullIdentity"
    assert TEMPLATE_SETTING in refused["message"]
    assert SINGLE_TENANT_SETTING in refused["message"]
    told = eventually(
        "a Warning Event on the repository", lambda: events_about(world, namespace, "EcrRepository", "app")
    )
    assert ("Warning", "NoPullIdentity") in {(event["type"], event["reason"]) for event in told}
    assert any(TEMPLATE_SETTING in event["message"] for event in told)
    # The repository itself is served: only the secret is refused.
    eventually(
        "the repository Ready",
        lambda: (condition(world, namespace, "app", "Ready") or {}).get("status") == "True",
    )
    assert operators_secrets(world, namespace) == []
    assert SECRET not in pull_secret_names(service_account_of(world, namespace))
    assert token_calls(world.aws_calls()[mark:]) == []
    assert_log_holds_no_credentials(running)


def test_f1_with_the_pull_role_template_every_token_is_minted_by_the_tenants_pull_role(
    world: World, operator: StartOperator, tenant: Callable[..., str]
) -> None:
    namespace = tenant()
    pull_role = f"arn:aws:iam::{world.account_id}:role/ecr-pull-{namespace}"
    mark = len(world.aws_calls())
    running = operator(
        ECR_OPERATOR_PULL_SECRET_ROLE_ARN_TEMPLATE=TEMPLATE,
        # Bound to its namespace: no other tenant's repository could ever be served with this role.
        ECR_OPERATOR_ALLOWED_ROLE_ARNS=json.dumps([{"pattern": pull_role, "namespaces": [namespace]}]),
        **FAST_REFRESH,
    )

    # No accountId: the template's {accountId} is learned from STS (the operator's own account), not status.
    document = repository(namespace, "app", {"serviceAccounts": ["default"]})
    del document["spec"]["registry"]["accountId"]
    apply(world, document)

    first = eventually("the tenant's secret", lambda: secret_of(world, namespace))
    ready = condition_with(world, namespace, "app", "True")
    assert ready["reason"] == "SecretUpToDate"
    entry = auths_of(first)[world.ecr_registry_host()]
    assert login_status(world, entry) == 200
    eventually("the SA patched", lambda: SECRET in pull_secret_names(service_account_of(world, namespace)))
    # A few refreshes later: every token behind the secret so far, first and renewed.
    last = refreshed_secret(world, namespace, first, refreshes=2)

    calls = world.aws_calls()[mark:]
    issued_to = callers_by_role(calls)
    minted = token_calls(calls)
    assert len(minted) >= 3
    assert {call.access_key_id for call in minted} <= set(issued_to), "a token not minted by an assumed role"
    assert {issued_to[str(call.access_key_id)] for call in minted} == {pull_role}
    assert all(call.access_key_id != AWS_TEST_CREDENTIAL for call in minted)
    assert all(str(call.access_key_id).startswith("ASIA") for call in minted)
    # The pull role is assumed from the operator's own (base) credentials; its account asked for once.
    assumed = [call for call in calls if call.operation == "AssumeRole"]
    assert assumed
    assert {call.access_key_id for call in assumed} == {AWS_TEST_CREDENTIAL}
    assert {call.role_arn for call in assumed} == {pull_role}
    asked = [call.access_key_id for call in calls if call.operation == "GetCallerIdentity"]
    assert asked
    assert set(asked) == {AWS_TEST_CREDENTIAL}
    assert_log_holds_no_credentials(running, last)


def test_f1_a_cluster_wide_registry_without_a_pull_role_writes_nothing(
    world: World, operator: StartOperator, tenant: Callable[..., str]
) -> None:
    namespace, pull_secrets = selected_tenant_without_a_pull_role(world, tenant)
    mark = len(world.aws_calls())

    running = operator(ECR_OPERATOR_PULL_SECRETS=pull_secrets)

    warning = running.wait_for_log(lambda record: "names no roleArn" in record["message"])
    assert warning["level"] == "WARNING"
    assert SINGLE_TENANT_SETTING in warning["message"]
    told = eventually(
        "a Warning Event on the namespace", lambda: events_about(world, "default", "Namespace", namespace)
    )
    assert [(event["type"], event["reason"]) for event in told] == [("Warning", "NoPullIdentity")]
    assert "roleArn" in told[0]["message"]
    assert operators_secrets(world, namespace) == []
    assert pull_secret_names(service_account_of(world, namespace)) == []
    assert token_calls(world.aws_calls()[mark:]) == []
    assert_log_holds_no_credentials(running)


def test_single_tenant_opt_in_mints_from_the_operators_own_credentials_and_says_so(
    world: World, operator: StartOperator, tenant: Callable[..., str]
) -> None:
    namespace, pull_secrets = selected_tenant_without_a_pull_role(world, tenant, secretName="cluster-pull")
    mark = len(world.aws_calls())

    running = operator(
        ECR_OPERATOR_PULL_SECRETS=pull_secrets,
        ECR_OPERATOR_PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT="true",
    )
    apply(world, repository(namespace, "app", {"secretName": "app-pull"}))

    cluster_secret = eventually(
        "the cluster-wide secret", lambda: secret_of(world, namespace, "cluster-pull")
    )
    repository_secret = eventually("the repository's secret", lambda: secret_of(world, namespace, "app-pull"))
    assert condition_with(world, namespace, "app", "True")["reason"] == "SecretUpToDate"
    for document in (cluster_secret, repository_secret):
        assert login_status(world, auths_of(document)[world.ecr_registry_host()]) == 200
    minted = token_calls(world.aws_calls()[mark:])
    assert minted
    assert {call.access_key_id for call in minted} == {AWS_TEST_CREDENTIAL}
    warning = running.wait_for_log(lambda record: SINGLE_TENANT_SETTING in record["message"])
    assert "single-tenant" in warning["message"]
    assert_log_holds_no_credentials(running, cluster_secret, repository_secret)
