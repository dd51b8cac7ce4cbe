"""The EcrRepository controller driven through small in-memory adapters (ECR, IAM, Kubernetes): what it
asks AWS to do, and how often it writes status and posts Events. No I/O, no kopf."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ecr_fakes import ACCOUNT, repository_description
from ecr_operator.api.common import ResourceInfo
from ecr_operator.aws.calls import AwsCallFailed
from ecr_operator.aws.ecr import REPOSITORY_ALREADY_EXISTS, REPOSITORY_NOT_EMPTY, RegistryRef
from ecr_operator.config import Settings
from ecr_operator.controllers.repository import RepositoryController, RepositoryObject, RetryLater
from ecr_operator.kube import ObjectReference
from ecr_operator.locks import KeyedLocks
from ecr_operator.metrics import Metrics, ObjectReadiness
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.repository.actions import (
    ClaimRepository,
    CreateRepository,
    DeleteRepository,
    DeleteRolePolicy,
    PutImageScanningConfiguration,
    PutRolePolicy,
    RepositoryAction,
    TagRepository,
    UntagRepository,
)
from ecr_operator.reconcile.repository.identity_policies import ManagedPolicy
from ecr_operator.reconcile.repository.observed import ObservedRepository, RepositoryDescription
from ecr_operator.reconcile.repository.vocabulary import ADOPTED_TAG, OWNER_TAG, owner_tag_value

pytestmark = pytest.mark.unit

NAMESPACE = "team"
NAME = "app"
OWNER = owner_tag_value("default", NAMESPACE, NAME)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclasses.dataclass
class StoredRepository:
    description: RepositoryDescription
    tags: dict[str, str]
    images: int = 0


class FakeEcr:
    """EcrRepositories in memory: ``failures`` makes the named action fail as AWS would."""

    def __init__(self) -> None:
        self.repositories: dict[str, StoredRepository] = {}
        self.applied: list[RepositoryAction] = []
        self.reads = 0
        self.create_attempts = 0
        self.failures: dict[type[RepositoryAction], AwsCallFailed] = {}

    def add(self, name: str, tags: dict[str, str], images: int = 0) -> None:
        self.repositories[name] = StoredRepository(repository_description(name), dict(tags), images)

    async def observe(self, registry: RegistryRef, name: str) -> ObservedRepository | None:
        self.reads += 1
        stored = self.repositories.get(name)
        return None if stored is None else ObservedRepository(stored.description, dict(stored.tags))

    async def observe_ownership(self, registry: RegistryRef, name: str) -> ObservedRepository | None:
        return await self.observe(registry, name)

    async def apply(self, registry: RegistryRef, action: RepositoryAction) -> RepositoryDescription | None:
        if type(action) in self.failures:
            raise self.failures[type(action)]
        self.applied.append(action)
        match action:
            case CreateRepository():
                self.create_attempts += 1
                if action.repository in self.repositories:
                    self.applied.pop()
                    raise AwsCallFailed("ecr", "CreateRepository", REPOSITORY_ALREADY_EXISTS, "exists")
                self.add(action.repository, dict(action.tags))
                return self.repositories[action.repository].description
            case ClaimRepository():
                self.by_arn(action.arn).tags |= {OWNER_TAG: action.owner, ADOPTED_TAG: "true"}
            case PutImageScanningConfiguration():
                stored = self.repositories[action.repository]
                stored.description = dataclasses.replace(stored.description, scan_on_push=action.scan_on_push)
            case TagRepository():
                self.by_arn(action.arn).tags |= dict(action.tags)
            case UntagRepository():
                for key in action.keys:
                    self.by_arn(action.arn).tags.pop(key, None)
            case DeleteRepository():
                if self.repositories[action.repository].images and not action.force:
                    raise AwsCallFailed("ecr", "DeleteRepository", REPOSITORY_NOT_EMPTY, "not empty")
                del self.repositories[action.repository]
        return None

    def by_arn(self, arn: str) -> StoredRepository:
        return next(stored for stored in self.repositories.values() if stored.description.arn == arn)


class FakeIam:
    def __init__(self) -> None:
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[PutRolePolicy | DeleteRolePolicy] = []

    async def document(self, identity: AwsIdentity, policy: ManagedPolicy) -> dict[str, Any] | None:
        return self.policies.get((policy.role_name, policy.policy_name))

    async def apply(self, identity: AwsIdentity, action: PutRolePolicy | DeleteRolePolicy) -> None:
        self.applied.append(action)
        if isinstance(action, PutRolePolicy):
            self.policies[(action.role_name, action.policy_name)] = json.loads(action.text)
        else:
            self.policies.pop((action.role_name, action.policy_name), None)


class FakeKube:
    """The Kubernetes adapter's status and Event calls, recorded."""

    def __init__(self) -> None:
        self.status_writes: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str]] = []

    async def apply_status(
        self, resource: ResourceInfo, namespace: str, name: str, manager: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.status_writes.append((manager, status))
        return status

    async def post_event(self, about: ObjectReference, event_type: str, reason: str, message: str) -> None:
        self.events.append((event_type, reason))


@dataclasses.dataclass
class Harness:
    controller: RepositoryController
    ecr: FakeEcr
    iam: FakeIam
    kube: FakeKube

    def reconcile(self, obj: RepositoryObject) -> RetryLater | None:
        return asyncio.run(self.controller.reconcile(obj, retry=0))

    def delete(self, obj: RepositoryObject) -> RetryLater | None:
        return asyncio.run(self.controller.delete(obj, retry=0))

    def stored_status(self) -> dict[str, Any]:
        """What the object's status is after the last write (no other writer here)."""
        return self.kube.status_writes[-1][1] if self.kube.status_writes else {}


def harness(**settings: Any) -> Harness:
    ecr, iam, kube, metrics = FakeEcr(), FakeIam(), FakeKube(), Metrics()
    controller = RepositoryController(
        Settings(**settings),
        ecr=ecr,
        iam=iam,
        kube=kube,
        locks=KeyedLocks(),
        metrics=metrics,
        readiness=ObjectReadiness(metrics.objects),
        now=lambda: NOW,
        jitter=lambda: 0.5,
    )
    return Harness(controller, ecr, iam, kube)


def repository_object(
    status: dict[str, Any] | None = None, generation: int = 1, **spec: Any
) -> RepositoryObject:
    return RepositoryObject(
        namespace=NAMESPACE,
        name=NAME,
        uid="uid-1",
        generation=generation,
        spec={"registry": {"region": "us-east-1"}, **spec},
        status=status or {},
    )


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {entry["type"]: (entry["status"], entry["reason"]) for entry in status["conditions"]}


def test_create_writes_the_status_once_and_announces_it() -> None:
    world = harness()

    assert world.reconcile(repository_object(tags={"team": "a"})) is None

    assert [type(action) for action in world.ecr.applied] == [CreateRepository]
    assert world.ecr.repositories[NAME].tags == {"team": "a", OWNER_TAG: OWNER}
    [(manager, status)] = world.kube.status_writes
    assert manager == "repository"
    assert conditions(status) == {"Ready": ("True", "RepositoryReady"), "Synced": ("True", "UpToDate")}
    assert status["repositoryUri"] == repository_description(NAME).uri
    assert status["observedGeneration"] == 1
    assert world.kube.events == [("Normal", "RepositoryCreated")]


def test_an_idle_pass_writes_nothing_at_all() -> None:
    world = harness()
    world.reconcile(repository_object())
    converged = world.stored_status()
    writes, events = len(world.kube.status_writes), len(world.kube.events)

    assert asyncio.run(world.controller.check_drift(repository_object(converged), retry=0)) is None

    assert len(world.kube.status_writes) == writes
    assert len(world.kube.events) == events
    assert [type(action) for action in world.ecr.applied] == [CreateRepository]


def test_another_controllers_condition_is_never_part_of_the_write() -> None:
    world = harness()
    world.reconcile(repository_object())
    pull_secret_ready = {"type": "PullSecretReady", "status": "True", "reason": "SecretsWritten"}
    on_the_object = world.stored_status()
    on_the_object = {**on_the_object, "conditions": [*on_the_object["conditions"], pull_secret_ready]}

    world.reconcile(repository_object(on_the_object, generation=2, scanOnPush=True))

    _, status = world.kube.status_writes[-1]
    assert set(conditions(status)) == {"Ready", "Synced"}


def test_an_unowned_repository_is_adopted_where_the_admin_allows_it() -> None:
    world = harness(adoption_namespaces=(NAMESPACE,))
    world.ecr.add(NAME, {"cost-centre": "1"})

    world.reconcile(repository_object(tags={"cost-centre": "1"}))

    assert [type(action) for action in world.ecr.applied] == [ClaimRepository]
    assert world.ecr.repositories[NAME].tags[ADOPTED_TAG] == "true"
    assert world.kube.events == [("Normal", "RepositoryAdopted")]


def test_a_repository_of_another_owner_is_refused_without_any_aws_write() -> None:
    world = harness()
    world.ecr.add(NAME, {OWNER_TAG: "default/other/app"})

    assert world.reconcile(repository_object()) is None

    assert world.ecr.applied == []
    assert conditions(world.stored_status()) == {
        "Ready": ("False", "Conflict"),
        "Synced": ("False", "Conflict"),
    }
    assert "repositoryUri" not in world.stored_status()
    assert world.kube.events == [("Warning", "Conflict")]


def test_drift_is_repaired_counted_and_announced() -> None:
    world = harness()
    world.reconcile(repository_object())
    stored = world.ecr.repositories[NAME]
    stored.description = dataclasses.replace(stored.description, scan_on_push=True)  # changed by a human

    asyncio.run(world.controller.check_drift(repository_object(world.stored_status()), retry=0))

    assert world.ecr.repositories[NAME].description.scan_on_push is False
    assert world.stored_status()["driftCorrections"] == 1
    assert world.kube.events[-1] == ("Warning", "DriftCorrected")


def test_a_throttled_create_is_retried_with_backoff_and_reconciles_no_generation() -> None:
    world = harness()
    world.ecr.failures[CreateRepository] = AwsCallFailed(
        "ecr", "CreateRepository", "ThrottlingException", "slow down", http_status=400, throttled=True
    )

    later = world.reconcile(repository_object())

    assert later is not None
    assert later.delay == pytest.approx(3.75)  # base 5 s, half fixed plus half of the 0.5 jitter
    status = world.stored_status()
    assert conditions(status) == {"Ready": ("False", "Throttled"), "Synced": ("False", "Throttled")}
    assert "observedGeneration" not in status


def test_retain_deletes_identity_policies_only_and_reads_no_repository() -> None:
    world = harness(allowed_identity_policy_roles=({"pattern": f"arn:aws:iam::{ACCOUNT}:role/ci"},))
    spec = {"access": {"identityPolicies": [{"roleName": "ci", "actions": "pull"}]}}
    world.reconcile(repository_object(**spec))
    created = world.stored_status()
    assert created["identityPolicies"] == [{"roleName": "ci", "policyName": world.iam.applied[0].policy_name}]
    reads, writes = world.ecr.reads, len(world.kube.status_writes)

    assert world.delete(repository_object(created, **spec)) is None

    assert [type(action) for action in world.iam.applied] == [PutRolePolicy, DeleteRolePolicy]
    assert world.iam.policies == {}
    assert world.ecr.reads == reads
    assert NAME in world.ecr.repositories
    assert len(world.kube.status_writes) == writes


def test_delete_if_empty_deletes_an_empty_repository() -> None:
    world = harness()
    world.reconcile(repository_object(deletionPolicy="DeleteIfEmpty"))

    assert world.delete(repository_object(world.stored_status(), deletionPolicy="DeleteIfEmpty")) is None

    assert NAME not in world.ecr.repositories
    assert world.kube.events[-1] == ("Normal", "RepositoryDeleted")


def test_a_repository_that_is_not_empty_holds_the_deletion_and_says_so_once() -> None:
    world = harness()
    world.reconcile(repository_object(deletionPolicy="DeleteIfEmpty"))
    world.ecr.repositories[NAME].images = 3
    writes = len(world.kube.status_writes)

    first = world.delete(repository_object(world.stored_status(), deletionPolicy="DeleteIfEmpty"))
    second = world.delete(repository_object(world.stored_status(), deletionPolicy="DeleteIfEmpty"))

    assert first is not None
    assert second is not None
    assert first.delay <= 60.0
    assert len(world.kube.status_writes) == writes + 1
    assert conditions(world.stored_status())["Ready"] == ("False", "RepositoryNotEmpty")
    assert [event for event in world.kube.events if event[1] == "RepositoryNotEmpty"] == [
        ("Warning", "RepositoryNotEmpty")
    ]
    assert NAME in world.ecr.repositories


def test_a_field_someone_else_patched_in_is_taken_over_then_dropped() -> None:
    world = harness()
    world.reconcile(repository_object())
    forged = {**world.stored_status(), "identityPolicies": [{"roleName": "victim", "policyName": "p"}]}
    writes = len(world.kube.status_writes)

    world.reconcile(repository_object(forged, generation=2))

    take_over, final = (status for _, status in world.kube.status_writes[writes:])
    assert take_over["identityPolicies"] == forged["identityPolicies"]
    assert "identityPolicies" not in final


def test_a_field_this_controller_applied_is_dropped_in_one_write() -> None:
    world = harness()
    world.reconcile(repository_object())
    ours = {**world.stored_status(), "identityPolicies": [{"roleName": "ci", "policyName": "p"}]}
    applied = {
        "manager": "ecr-operator-repository",
        "operation": "Apply",
        "subresource": "status",
        "fieldsV1": {"f:status": {"f:identityPolicies": {}, "f:conditions": {}}},
    }
    writes = len(world.kube.status_writes)

    world.reconcile(dataclasses.replace(repository_object(ours, generation=2), managed_fields=(applied,)))

    [(_, final)] = world.kube.status_writes[writes:]
    assert "identityPolicies" not in final


def test_a_new_object_creates_without_describing_first() -> None:
    world = harness()

    world.reconcile(repository_object())

    assert world.ecr.reads == 0
    assert [type(action) for action in world.ecr.applied] == [CreateRepository]


def test_a_repository_that_exists_already_is_looked_at_after_the_create_fails() -> None:
    world = harness()
    world.ecr.add(NAME, {OWNER_TAG: OWNER})  # created by this object before its status was written

    assert world.reconcile(repository_object()) is None

    assert world.ecr.reads == 1
    assert world.ecr.applied == []
    assert conditions(world.stored_status())["Ready"] == ("True", "RepositoryReady")


def test_no_reconcile_acts_once_the_objects_deletion_has_begun() -> None:
    world = harness()
    world.controller.deletion_started("uid-1")

    assert world.reconcile(repository_object()) is None

    assert world.ecr.applied == []
    assert world.kube.status_writes == []


def test_a_foreign_repository_is_refused_after_the_create_fails_when_adoption_is_fail() -> None:
    world = harness()
    world.ecr.add(NAME, {})

    world.reconcile(repository_object(adoption="Fail"))

    assert world.ecr.create_attempts == 1
    assert world.ecr.reads == 1
    assert world.ecr.applied == []
    assert conditions(world.stored_status())["Ready"] == ("False", "AdoptionRefused")
