"""The pull-secret controller with fake adapters: an in-memory Kubernetes adapter and the real token cache
over a fake ECR token source and registry login. No I/O; kopf's indexes are plain dicts the test refills
from the fake apiserver, as kopf would after each write."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from ecr_fakes import ACCOUNT, ECR_HOST
from ecr_operator.api.common import ResourceInfo
from ecr_operator.aws.tokens import CallerAccount, EcrTokenCache, TokenRefreshError
from ecr_operator.config import Settings
from ecr_operator.controllers.pullsecrets import (
    STATUS_MANAGER,
    PullSecretController,
    PullSecretIndexes,
    warn_about_unusable_roles,
)
from ecr_operator.kube import KubeApiError, ObjectReference
from ecr_operator.kube import SecretView as StoredSecret
from ecr_operator.metrics import Metrics
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.pullsecrets import (
    DOCKER_CONFIG_KEY,
    MANAGED_LABELS,
    NO_PULL_IDENTITY,
    PULL_SECRET_CONDITION,
    SECRET_NAME_CONFLICT,
    SECRET_TYPE,
    SECRET_UP_TO_DATE,
    NamespaceView,
    RepositoryView,
    SecretView,
    ServiceAccountView,
)
from ecr_operator.reconcile.tokens import TOKEN_REFRESH_FAILED, FetchedToken, IdentityToken, RefreshSchedule

pytestmark = pytest.mark.unit

TEMPLATE = "arn:aws:iam::{accountId}:role/ecr-pull-{namespace}"
SECRET = "ecr-pull-secret"  # the default name of a namespace's merged secret


def pull_identity(namespace: str) -> AwsIdentity:
    return AwsIdentity(region="us-east-1", role_arn=f"arn:aws:iam::{ACCOUNT}:role/ecr-pull-{namespace}")


# --- fake adapters --------------------------------------------------------------------------------------


@dataclass
class FakeKube:
    """The controller's Kubernetes calls, against dicts; each write is recorded."""

    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    status_applies: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    service_account_patches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    deletes: list[tuple[str, str, str]] = field(default_factory=list)
    events: list[tuple[ObjectReference, str, str]] = field(default_factory=list)
    writes: int = 0

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> str:
        name = body["metadata"]["name"]
        if (namespace, name) in self.secrets:
            raise KubeApiError(409, "Conflict", f"create Secret {namespace}/{name}")
        self.writes += 1
        stored = json.loads(json.dumps(body))
        stored["metadata"]["uid"] = f"uid-{namespace}-{name}"
        self.secrets[namespace, name] = stored
        return str(stored["metadata"]["uid"])

    async def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any]) -> str:
        stored = self.secrets[namespace, name]
        self.writes += 1
        for section in ("labels", "annotations"):
            merged = {**stored["metadata"].get(section, {}), **patch["metadata"].get(section, {})}
            stored["metadata"][section] = {key: value for key, value in merged.items() if value is not None}
        data = {**stored.get("data", {}), **patch.get("data", {})}
        stored["data"] = {key: value for key, value in data.items() if value is not None}
        return str(stored["metadata"]["uid"])

    async def read_secret(self, namespace: str, name: str) -> StoredSecret | None:
        stored = self.secrets.get((namespace, name))
        if stored is None:
            return None
        metadata = stored["metadata"]
        return StoredSecret(
            metadata["uid"], stored.get("type", ""), metadata.get("labels", {}), stored["data"]
        )

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        self.writes += 1
        self.deletes.append((namespace, name, uid))
        self.secrets.pop((namespace, name), None)

    async def patch_service_account(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.writes += 1
        self.service_account_patches.append((namespace, name, dict(patch)))

    async def apply_status(
        self, resource: ResourceInfo, namespace: str, name: str, manager: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert resource.kind == "EcrRepository"
        self.writes += 1
        self.status_applies.append((namespace, name, manager, dict(status)))
        return dict(status)

    async def post_event(self, about: ObjectReference, event_type: str, reason: str, message: str) -> None:
        self.events.append((about, event_type, reason))

    def owned_secrets(self, namespace: str) -> list[SecretView]:
        """What kopf's label-selected index holds for ``namespace``."""
        return [
            SecretView.from_body(body)
            for (where, _), body in self.secrets.items()
            if where == namespace
            and all(body["metadata"].get("labels", {}).get(k) == v for k, v in MANAGED_LABELS.items())
        ]


class FakeEcr:
    """GetAuthorizationToken per identity (moto's answer), unless told to fail."""

    def __init__(self) -> None:
        self.calls: list[AwsIdentity] = []
        self.failing = False

    async def __call__(self, identity: AwsIdentity) -> FetchedToken:
        self.calls.append(identity)
        if self.failing:
            raise TokenRefreshError(TOKEN_REFRESH_FAILED, "GetAuthorizationToken failed (AccessDenied)")
        return FetchedToken("AWS", f"{ACCOUNT}-auth-token", ECR_HOST, None)


async def accepting_login(token: IdentityToken) -> None:
    return None


async def no_account_lookup(region: str) -> str:
    raise AssertionError("the account is given in every spec here")


# --- the world the controller sees ----------------------------------------------------------------------


@dataclass
class Cluster:
    kube: FakeKube
    ecr: FakeEcr
    tokens: EcrTokenCache
    controller: PullSecretController
    namespaces: dict[str, list[NamespaceView]] = field(default_factory=dict)
    service_accounts: dict[str, list[ServiceAccountView]] = field(default_factory=dict)
    secrets: dict[str, list[SecretView]] = field(default_factory=dict)
    repositories: dict[str, list[RepositoryView]] = field(default_factory=dict)

    def add_namespace(self, name: str) -> None:
        self.namespaces[name] = [NamespaceView(name)]
        self.service_accounts[name] = [ServiceAccountView("default", "1")]

    def add_repository(
        self,
        namespace: str,
        name: str = "app",
        conditions: list[dict[str, Any]] | None = None,
        pull_secret: dict[str, Any] | None = None,
    ) -> None:
        body = {
            "metadata": {
                "namespace": namespace,
                "name": name,
                "uid": f"uid-{name}",
                "resourceVersion": "1",
                "generation": 1,
            },
            "spec": {
                "registry": {"region": "us-east-1", "accountId": ACCOUNT},
                "pullSecret": pull_secret or {},
            },
            "status": {"conditions": conditions or []},
        }
        self.repositories[namespace] = [RepositoryView.from_body(body)]

    async def add_tenant(self, namespace: str, **repository: Any) -> None:
        """A namespace with one EcrRepository asking for a pull secret, and its pull role's token cached."""
        self.add_namespace(namespace)
        self.add_repository(namespace, **repository)
        await self.tokens.refresh(pull_identity(namespace))

    def reindex(self) -> None:
        """kopf's indexes after the writes: the operator's Secrets and the applied PullSecretReady."""
        for namespace in self.namespaces:
            self.secrets[namespace] = self.kube.owned_secrets(namespace)
        for namespace, views in self.repositories.items():
            self.repositories[namespace] = [self._with_applied_status(view) for view in views]

    def _with_applied_status(self, view: RepositoryView) -> RepositoryView:
        applied = [
            status
            for where, name, _, status in self.kube.status_applies
            if (where, name) == (view.namespace, view.name)
        ]
        if not applied:
            return view
        others = [entry for entry in view.conditions if entry.get("type") != PULL_SECRET_CONDITION]
        return replace(view, conditions=(*others, *applied[-1]["conditions"]))


@pytest.fixture(autouse=True)
def no_operator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ECR_OPERATOR_"):
            monkeypatch.delenv(name)


def make_cluster(settings: Settings) -> Cluster:
    kube, ecr = FakeKube(), FakeEcr()
    schedule = RefreshSchedule(
        lead=settings.token_refresh_lead,
        jitter=settings.token_refresh_jitter,
        fallback_lifetime=settings.token_fallback_lifetime,
    )
    tokens = EcrTokenCache(ecr, accepting_login, schedule)
    controller = PullSecretController(settings, Metrics(), tokens, kube, CallerAccount(no_account_lookup))
    cluster = Cluster(kube, ecr, tokens, controller)
    controller.attach(
        PullSecretIndexes(cluster.namespaces, cluster.service_accounts, cluster.secrets, cluster.repositories)
    )
    return cluster


def pull_role_settings() -> Settings:
    """Every namespace's pull role rendered from TEMPLATE, and allow-listed."""
    return Settings(
        pull_secret_role_arn_template=TEMPLATE, allowed_role_arns=(f"arn:aws:iam::{ACCOUNT}:role/ecr-pull-*",)
    )


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    made = make_cluster(pull_role_settings())
    yield made
    await made.controller.stop()


def pull_secret_ready(cluster: Cluster, namespace: str) -> dict[str, Any]:
    [*_, (_, _, manager, status)] = [entry for entry in cluster.kube.status_applies if entry[0] == namespace]
    assert manager == STATUS_MANAGER
    [condition] = status["conditions"]
    assert condition["type"] == PULL_SECRET_CONDITION
    return dict(condition)


def auths(cluster: Cluster, namespace: str) -> dict[str, Any]:
    data = cluster.kube.secrets[namespace, SECRET]["data"][DOCKER_CONFIG_KEY]
    document: dict[str, Any] = json.loads(base64.b64decode(data))
    return dict(document["auths"])


# --- tests ----------------------------------------------------------------------------------------------


async def test_each_namespace_gets_its_own_secret_from_its_own_pull_role(cluster: Cluster) -> None:
    for namespace in ("team-a", "team-b"):
        await cluster.add_tenant(namespace)

    for namespace in ("team-a", "team-b"):
        await cluster.controller.sync(namespace)

    for namespace in ("team-a", "team-b"):
        stored = cluster.kube.secrets[namespace, SECRET]
        assert stored["type"] == SECRET_TYPE
        assert stored["metadata"]["labels"] == dict(MANAGED_LABELS)
        assert auths(cluster, namespace)[ECR_HOST]["password"] == f"{ACCOUNT}-auth-token"
        condition = pull_secret_ready(cluster, namespace)
        assert (condition["status"], condition["reason"]) == ("True", SECRET_UP_TO_DATE)
    # Each token came from its namespace's pull role; a ServiceAccount no spec names is left alone.
    assert cluster.ecr.calls == [pull_identity("team-a"), pull_identity("team-b")]
    assert cluster.kube.service_account_patches == []


async def test_the_service_accounts_a_repository_names_reference_the_secret(cluster: Cluster) -> None:
    await cluster.add_tenant("team-a", pull_secret={"serviceAccounts": ["default"]})

    await cluster.controller.sync("team-a")

    [(namespace, name, patch)] = cluster.kube.service_account_patches
    assert (namespace, name, patch["imagePullSecrets"]) == ("team-a", "default", [{"name": SECRET}])


async def test_a_name_taken_by_someone_elses_secret_is_left_alone(cluster: Cluster) -> None:
    cluster.add_namespace("team-a")
    cluster.add_repository("team-a")
    foreign = {
        "metadata": {"name": SECRET, "uid": "uid-theirs", "labels": {}},
        "type": "Opaque",
        "data": {"k": "dg=="},
    }
    cluster.kube.secrets["team-a", SECRET] = foreign
    await cluster.tokens.refresh(pull_identity("team-a"))

    await cluster.controller.sync("team-a")
    cluster.reindex()
    await cluster.controller.sync("team-a")

    assert cluster.kube.secrets["team-a", SECRET] is foreign
    assert foreign["data"] == {"k": "dg=="}
    [(about, event_type, reason)] = [event for event in cluster.kube.events if event[0].kind == "Secret"]
    assert (about.uid, event_type, reason) == ("uid-theirs", "Warning", SECRET_NAME_CONFLICT)
    condition = pull_secret_ready(cluster, "team-a")
    assert (condition["status"], condition["reason"]) == ("False", SECRET_NAME_CONFLICT)


async def test_a_secret_whose_demand_is_gone_is_removed(cluster: Cluster) -> None:
    await cluster.add_tenant("team-a")
    await cluster.controller.sync("team-a")
    cluster.reindex()

    cluster.repositories["team-a"] = []  # the EcrRepository was deleted
    await cluster.controller.sync("team-a")

    assert cluster.kube.deletes == [("team-a", SECRET, f"uid-team-a-{SECRET}")]
    assert ("team-a", SECRET) not in cluster.kube.secrets


async def test_without_a_pull_identity_no_secret_is_written_and_the_repository_is_told() -> None:
    cluster = make_cluster(Settings())
    try:
        cluster.add_namespace("team-a")
        cluster.add_repository("team-a")

        await cluster.controller.sync("team-a")
    finally:
        await cluster.controller.stop()

    assert cluster.kube.secrets == {}
    assert cluster.ecr.calls == []
    condition = pull_secret_ready(cluster, "team-a")
    assert (condition["status"], condition["reason"]) == ("False", NO_PULL_IDENTITY)
    [(about, event_type, reason)] = cluster.kube.events
    assert (about.kind, about.name, event_type, reason) == (
        "EcrRepository",
        "app",
        "Warning",
        NO_PULL_IDENTITY,
    )


async def test_a_failed_token_refresh_shows_in_the_condition(cluster: Cluster) -> None:
    cluster.add_namespace("team-a")
    cluster.add_repository("team-a")
    cluster.ecr.failing = True
    await cluster.tokens.refresh(pull_identity("team-a"))

    await cluster.controller.sync("team-a")

    assert cluster.kube.secrets == {}
    condition = pull_secret_ready(cluster, "team-a")
    assert (condition["status"], condition["reason"]) == ("False", TOKEN_REFRESH_FAILED)
    assert "AccessDenied" in condition["message"]


async def test_status_is_applied_only_when_it_changes_and_never_touches_other_conditions(
    cluster: Cluster,
) -> None:
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Synced",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    await cluster.add_tenant("team-a", conditions=[ready])

    await cluster.controller.sync("team-a")
    cluster.reindex()
    writes = cluster.kube.writes
    await cluster.controller.sync("team-a")

    assert len(cluster.kube.status_applies) == 1
    assert cluster.kube.writes == writes  # an idle pass writes nothing at all
    [(_, _, _, status)] = cluster.kube.status_applies
    assert [entry["type"] for entry in status["conditions"]] == [PULL_SECRET_CONDITION]


async def test_a_repository_that_stops_asking_has_its_condition_removed(cluster: Cluster) -> None:
    await cluster.add_tenant("team-a")
    await cluster.controller.sync("team-a")
    cluster.reindex()
    [view] = cluster.repositories["team-a"]

    cluster.repositories["team-a"] = [replace(view, pull_secret=None, resource_version="2")]
    await cluster.controller.sync("team-a")

    assert cluster.kube.status_applies[-1] == ("team-a", "app", STATUS_MANAGER, {"conditions": []})


async def test_a_terminating_namespace_is_not_written() -> None:
    cluster = make_cluster(pull_role_settings())
    try:
        cluster.add_namespace("team-a")
        cluster.namespaces["team-a"] = [NamespaceView("team-a", terminating=True)]
        cluster.add_repository("team-a")

        assert await cluster.controller.sync("team-a") is None
    finally:
        await cluster.controller.stop()

    assert cluster.kube.writes == 0


async def test_syncs_wait_until_kopf_has_filled_the_indexes(cluster: Cluster) -> None:
    await cluster.add_tenant("team-a")
    await cluster.controller.start()

    cluster.controller.request_sync("team-a")
    await asyncio.sleep(0.2)
    assert cluster.kube.secrets == {}

    cluster.controller.mark_ready()
    for _ in range(100):
        if ("team-a", SECRET) in cluster.kube.secrets:
            break
        await asyncio.sleep(0.02)
    assert ("team-a", SECRET) in cluster.kube.secrets


def test_a_configured_role_outside_the_allow_list_is_named_at_startup(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registries = [
        {
            "accountId": ACCOUNT,
            "region": "us-east-1",
            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/ecr-pull-cluster",
        },
        {"accountId": ACCOUNT, "region": "us-east-1", "roleArn": f"arn:aws:iam::{ACCOUNT}:role/admin"},
    ]
    settings = Settings(
        pull_secrets={"registries": registries},
        # Allowed for some namespaces only: still a role the configuration may name.
        allowed_role_arns=({"pattern": f"arn:aws:iam::{ACCOUNT}:role/ecr-pull-*", "namespaces": ["team-*"]},),
    )

    with caplog.at_level(logging.WARNING, logger="ecr_operator.controllers.pullsecrets"):
        warn_about_unusable_roles(settings)

    skipped = [record for record in caplog.records if "outside the role allow-list" in record.getMessage()]
    assert [getattr(record, "role_arn", None) for record in skipped] == [f"arn:aws:iam::{ACCOUNT}:role/admin"]


async def test_only_repositories_that_concern_pull_secrets_ask_for_a_namespace_sync(cluster: Cluster) -> None:
    # A sync plans every repository of its namespace: the status writes of 10,000 repositories that ask
    # for no secret must not each plan it again.
    controller, synced = cluster.controller, list[str]()
    controller.request_sync = lambda namespace, delay=0.0: synced.append(namespace)  # type: ignore[method-assign]
    cluster.add_repository("team", "asking")
    [asking] = cluster.repositories["team"]
    plain = replace(asking, name="plain", uid="uid-plain", pull_secret=None)
    condition = {"type": PULL_SECRET_CONDITION, "status": "True", "reason": "SecretUpToDate"}

    controller.repository_seen(plain)
    controller.repository_gone("uid-plain", "team")
    assert synced == []

    controller.repository_seen(asking)
    controller.repository_seen(replace(asking, pull_secret=None, conditions=(condition,)))
    controller.repository_seen(replace(asking, pull_secret=None))  # it stopped asking: the condition goes
    controller.repository_seen(replace(asking, pull_secret=None))  # nothing left that concerns it
    assert synced == ["team", "team", "team"]

    controller.repository_seen(asking)
    controller.repository_gone("uid-asking", "team")
    controller.repository_gone("uid-asking", "team")
    assert synced == ["team"] * 5
