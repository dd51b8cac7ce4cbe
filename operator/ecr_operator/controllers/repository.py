"""The EcrRepository controller: reconcile (create/update/resume and the drift pass) and delete.

Each is a chain of small steps: parse the object, observe AWS through the adapters, let
``reconcile.repository`` decide, execute the decision in order, then write the whole status this controller
owns in one server-side apply (none at all when it would change nothing) and post Events for real
changes. Errors a human must fix are reported and retried once per drift pass; throttling and AWS outages
come back as ``RetryLater`` with a jittered exponential delay, which the handler turns into kopf's retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ecr_operator.api.common import GROUP, VERSION, RegistryIdentity, validation_problems
from ecr_operator.api.repository import ECR_REPOSITORY, DeletionPolicy, EcrRepositorySpec
from ecr_operator.aws.calls import AwsCallFailed
from ecr_operator.aws.ecr import (
    REPOSITORY_ALREADY_EXISTS,
    REPOSITORY_NOT_EMPTY,
    EcrRepositories,
    RegistryRef,
    RepositoryClaimedElsewhere,
)
from ecr_operator.aws.iam import IamRolePolicies
from ecr_operator.conditions import EventNote
from ecr_operator.config import Settings
from ecr_operator.kube import Kube, KubeApiError, ObjectReference, status_field_manager
from ecr_operator.locks import KeyedLocks
from ecr_operator.logs import object_logger
from ecr_operator.metrics import Metrics, ObjectReadiness
from ecr_operator.reconcile.backoff import backoff_delay
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.repository.actions import (
    Action,
    DeleteRolePolicy,
    PutRolePolicy,
    RepositoryAction,
    changed_aspects,
)
from ecr_operator.reconcile.repository.deletion import DeletionPlan, plan_deletion
from ecr_operator.reconcile.repository.desired import (
    DesiredRepository,
    IdentityRole,
    Refusal,
    SpecError,
    desired_repository,
    identity_roles,
    tenancy_refusal,
)
from ecr_operator.reconcile.repository.failures import Problem, classify_aws_failure
from ecr_operator.reconcile.repository.identity_policies import (
    ManagedPolicy,
    identity_roles_in_status,
    is_own_identity_policy,
    plan_identity_policies,
    roles_after,
)
from ecr_operator.reconcile.repository.observed import RepositoryDescription
from ecr_operator.reconcile.repository.plan import plan_repository
from ecr_operator.reconcile.repository.status import (
    SyncResult,
    applied_status_fields,
    deletion_status,
    owned_status,
    ready_status,
    repository_events,
    repository_status,
    stranded_fields,
    was_converged,
)
from ecr_operator.reconcile.repository.vocabulary import (
    EventReason,
    PolicyStamp,
    Reason,
    describe_owner,
    identity_policy_stamp,
    owner_tag_value,
    partition_of,
)

KIND = ECR_REPOSITORY.kind
STATUS_MANAGER = "repository"
"""This controller's field manager for status (``ecr-operator-repository``): it owns Ready, Synced and
the repository fields; ``PullSecretReady`` is the pull-secret controller's."""
# A repository that still holds images under DeleteIfEmpty is looked at again this often (at most).
NOT_EMPTY_RETRY_CAP = 60.0
TRANSIENT_RETRY_CAP = 300.0

logger = logging.getLogger(__name__)
ObjectLogger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass(frozen=True)
class RepositoryObject:
    """What the controller reads of one EcrRepository object (the handlers unpack it from kopf's body)."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    managed_fields: tuple[Mapping[str, Any], ...] = ()
    """``metadata.managedFields``: which status fields this controller's applies own."""
    log: ObjectLogger = logger
    """Where to log about this object (kopf's per-object logger adds the object to every record)."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any], log: ObjectLogger | None = None) -> RepositoryObject:
        """From the object as the apiserver returns it (or kopf's view of it)."""
        metadata = body.get("metadata") or {}
        namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
        return cls(
            namespace=namespace,
            name=name,
            uid=metadata.get("uid") or "",
            generation=metadata.get("generation"),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            managed_fields=tuple(metadata.get("managedFields") or ()),
            log=log or object_logger(logger, KIND, namespace, name),
        )

    @property
    def reference(self) -> ObjectReference:
        return ObjectReference(f"{GROUP}/{VERSION}", KIND, self.name, self.namespace, self.uid)


@dataclass(frozen=True)
class RetryLater:
    """The object is to be handled again after ``delay`` seconds (kopf's TemporaryError)."""

    message: str
    delay: float


@dataclass(frozen=True)
class _Target:
    """Everything a reconcile needs to know about the object once its spec has been accepted."""

    desired: DesiredRepository
    registry: RegistryRef
    stamp: PolicyStamp
    adoption_allowed: bool
    namespace: str

    @property
    def lock_key(self) -> Hashable:
        return (self.registry, self.desired.name)


@dataclass
class _Progress:
    """What a reconcile has found and done so far, so that a failure half-way still reports the truth."""

    repository: RepositoryDescription | None = None
    applied: list[Action] = field(default_factory=list)
    in_place: list[str] | None = None
    """The roles IAM showed carrying this object's policy; None until they were looked at."""

    def result(self, problem: Problem | None, stamp: PolicyStamp) -> SyncResult:
        managed = None
        if self.in_place is not None:
            managed = tuple(
                ManagedPolicy(role, stamp.name) for role in roles_after(self.in_place, self.applied)
            )
        return SyncResult(self.repository, tuple(self.applied), problem, managed)


@dataclass(frozen=True)
class _DeletionTarget:
    registry: RegistryRef
    repository_name: str
    deletion_policy: DeletionPolicy
    roles: tuple[IdentityRole, ...]
    stamp: PolicyStamp
    owner: str
    namespace: str

    @property
    def lock_key(self) -> Hashable:
        return (self.registry, self.repository_name)


@dataclass
class _DeletionProgress:
    own: tuple[str, ...] = ()
    """Roles IAM showed carrying this object's policy before the deletion's actions."""
    applied: list[Action] = field(default_factory=list)

    def managed_policies(self, stamp: PolicyStamp) -> tuple[ManagedPolicy, ...] | None:
        """The policies still in place, or None when the deletion had not got to any."""
        if not (self.own or self.applied):
            return None
        return tuple(ManagedPolicy(role, stamp.name) for role in roles_after(self.own, self.applied))


class RepositoryController:
    """Reconciles and deletes EcrRepository objects; one per process, held by the Runtime."""

    def __init__(
        self,
        settings: Settings,
        *,
        ecr: EcrRepositories,
        iam: IamRolePolicies,
        kube: Kube,
        locks: KeyedLocks,
        metrics: Metrics,
        readiness: ObjectReadiness,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._ecr = ecr
        self._iam = iam
        self._kube = kube
        self._locks = locks
        self._deleting: set[str] = set()
        """UIDs whose deletion has begun: no reconcile may act for them any more."""
        self._metrics = metrics
        self._readiness = readiness
        self._now = now
        self._jitter = jitter

    # --- reconcile ----------------------------------------------------------------------------------

    async def reconcile(self, obj: RepositoryObject, retry: int) -> RetryLater | None:
        """Make AWS match the spec, then report it; a transient failure asks to be retried."""
        started = time.monotonic()
        drift = was_converged(obj.status, obj.generation)
        result = await self._sync(obj)
        if result is None:
            return None
        status = repository_status(
            obj.status, result, generation=obj.generation, now=self._now(), drift=drift
        )
        # Events first: whoever sees the new status can already read the Events that explain it.
        await self._post(obj, repository_events(obj.status, result, drift=drift))
        await self._write_status(obj, status)
        _log(obj.log, result, drift=drift)
        self._count(obj, result, status, drift=drift, started=started)
        problem = result.problem
        if problem is not None and problem.kind == "transient":
            return RetryLater(problem.message, backoff_delay(retry, self._jitter))
        return None

    async def check_drift(self, obj: RepositoryObject, retry: int) -> RetryLater | None:
        """One drift check: compare AWS with the spec and repair what was changed outside the operator.

        A spec change not reconciled yet is left to the reconcile its event asked for.
        """
        if obj.status.get("observedGeneration") != obj.generation:
            return None
        return await self.reconcile(obj, retry)

    def deletion_started(self, uid: str) -> None:
        """The object is being deleted: a reconcile already under way for it must not act (it would
        re-create what the deletion removes)."""
        self._deleting.add(uid)

    def forget(self, uid: str) -> None:
        """The object is gone from the apiserver."""
        self._deleting.discard(uid)
        self._readiness.forget(KIND, uid)

    async def _sync(self, obj: RepositoryObject) -> SyncResult | None:
        """None when the object's deletion began before the repository's lock was got."""
        target = self._target(obj)
        if isinstance(target, Refusal):
            return SyncResult(problem=Problem.refused(target))
        async with self._locks.hold(target.lock_key):
            if obj.uid in self._deleting:
                return None
            return await self._converge(target, obj.status)

    def _target(self, obj: RepositoryObject) -> _Target | Refusal:
        settings = self._settings
        try:
            spec = EcrRepositorySpec.model_validate(dict(obj.spec))
            repository_name = spec.effective_repository_name(obj.name)
        except ValidationError as error:
            return Refusal(Reason.INVALID_SPEC, "the spec is invalid: " + validation_problems(error))
        except ValueError as error:
            return Refusal(Reason.INVALID_SPEC, str(error))
        refusal = tenancy_refusal(spec, repository_name, obj.namespace, settings)
        if refusal is not None:
            return refusal
        try:
            desired = desired_repository(
                spec,
                repository_name=repository_name,
                owner=owner_tag_value(settings.cluster_id, obj.namespace, obj.name),
                namespace=obj.namespace,
                partition=partition_of(spec.registry.region),
            )
        except SpecError as error:
            return Refusal(Reason.INVALID_SPEC, str(error))
        return _Target(
            desired=desired,
            registry=registry_ref(spec.registry),
            stamp=identity_policy_stamp(settings.cluster_id, obj.namespace, obj.name),
            adoption_allowed=settings.adoption_allowed(obj.namespace),
            namespace=obj.namespace,
        )

    async def _converge(self, target: _Target, status: Mapping[str, Any]) -> SyncResult:
        """Status is output here, never input: ownership comes from the owner tag in AWS, and the roles
        status lists are only looked at (in IAM) for policies this object provably wrote."""
        progress = _Progress()
        problem: Problem | None = None
        try:
            for step in (self._converge_repository, self._converge_identity_policies):
                problem = await step(target, status, progress)
                if problem is not None:
                    break
        except RepositoryClaimedElsewhere as error:
            return SyncResult(problem=_claimed_elsewhere(target.desired.name, error))
        except AwsCallFailed as error:
            problem = aws_problem(error)
        return progress.result(problem, target.stamp)

    async def _converge_repository(
        self, target: _Target, status: Mapping[str, Any], progress: _Progress
    ) -> Problem | None:
        # An object that never reported a repository most likely has none yet: CreateRepository is tried
        # without a describe first (a DescribeRepositories of a missing name fails anyway). Status is only
        # a hint here: a repository that exists makes CreateRepository fail, and then it is observed and
        # adopted or refused as ``adoption`` says (one failed call, paid only by adoptions).
        observe = bool(status.get("repositoryArn"))
        try:
            return await self._observe_plan_apply(target, progress, observe=observe)
        except AwsCallFailed as error:
            if error.code != REPOSITORY_ALREADY_EXISTS:
                raise
        # The repository exists (made elsewhere, or another cluster or a human was faster): look at it.
        return await self._observe_plan_apply(target, progress, observe=True)

    async def _observe_plan_apply(
        self, target: _Target, progress: _Progress, *, observe: bool
    ) -> Problem | None:
        observed = await self._ecr.observe(target.registry, target.desired.name) if observe else None
        plan = plan_repository(target.desired, observed, adoption_allowed=target.adoption_allowed)
        if plan.refusal is not None:
            return Problem.refused(plan.refusal)
        progress.repository = observed.description if observed else None
        for action in plan.actions:
            progress.repository = await self._ecr.apply(target.registry, action) or progress.repository
            progress.applied.append(action)
        return None

    async def _converge_identity_policies(
        self, target: _Target, status: Mapping[str, Any], progress: _Progress
    ) -> Problem | None:
        """Put and remove this object's identity policies, recording each one done in ``progress``."""
        repository = progress.repository
        assert repository is not None  # observed, or created by the plan
        in_place: list[str] = []
        progress.in_place = in_place
        roles = target.desired.identity_roles
        identity = target.registry.identity
        hinted = identity_roles_in_status(status)
        observed = await self._identity_documents(identity, target.stamp, {*(r.name for r in roles), *hinted})
        settings, namespace = self._settings, target.namespace
        plan = plan_identity_policies(
            roles,
            stamp=target.stamp,
            repository=repository,
            observed=observed,
            role_allowed=lambda role_arn: settings.identity_role_allowed(role_arn, namespace),
            namespace=namespace,
        )
        if plan.left_alone:
            logger.warning(
                "inline policies of this object's name that it did not write were left alone",
                extra={"roles": list(plan.left_alone), "policy": target.stamp.name},
            )
        in_place.extend(plan.in_place)
        if plan.refusal is not None:
            return Problem.refused(plan.refusal)
        for action in plan.actions:
            await self._iam.apply(identity, action)
            progress.applied.append(action)
        return None

    async def _identity_documents(
        self, identity: AwsIdentity, stamp: PolicyStamp, roles: Iterable[str]
    ) -> dict[str, Mapping[str, Any] | None]:
        """The document each role holds under this object's policy name (None: no such policy or role)."""
        ordered = sorted(set(roles))
        documents = await asyncio.gather(
            *(self._iam.document(identity, ManagedPolicy(role, stamp.name)) for role in ordered)
        )
        return dict(zip(ordered, documents, strict=True))

    def _count(
        self,
        obj: RepositoryObject,
        result: SyncResult,
        status: Mapping[str, Any],
        *,
        drift: bool,
        started: float,
    ) -> None:
        metrics = self._metrics
        if drift and result.applied:
            metrics.drift_corrections.labels(kind=KIND).inc(len(changed_aspects(result.applied)))
        metrics.reconciles.labels(kind=KIND, result=_result_label(result.problem)).inc()
        metrics.reconcile_duration.labels(kind=KIND).observe(time.monotonic() - started)
        self._readiness.set(KIND, obj.uid, ready_status(status))

    # --- delete -------------------------------------------------------------------------------------

    async def delete(self, obj: RepositoryObject, retry: int) -> RetryLater | None:
        """Remove the object's identity policies, then delete, or leave, the repository as deletionPolicy
        says; a failure asks to be retried (the object keeps its finalizer)."""
        started = time.monotonic()
        try:
            later = await self._delete(obj, retry)
        finally:
            self._metrics.reconcile_duration.labels(kind=KIND).observe(time.monotonic() - started)
        if later is not None:
            self._metrics.reconciles.labels(kind=KIND, result="temporary_error").inc()
            return later
        self._metrics.reconciles.labels(kind=KIND, result="success").inc()
        self._readiness.forget(KIND, obj.uid)
        return None

    async def _delete(self, obj: RepositoryObject, retry: int) -> RetryLater | None:
        self.deletion_started(obj.uid)
        target = self._deletion_target(obj)
        if isinstance(target, str):
            message = f"Nothing was deleted in AWS: {target}."
            obj.log.warning(message)
            await self._post(obj, [EventNote("Warning", EventReason.RETAINED, message)])
            return None
        progress = _DeletionProgress()
        try:
            async with self._locks.hold(target.lock_key):
                plan = await self._plan_deletion(target, obj.status, progress)
                await self._apply_deletion(target, plan, progress)
        except AwsCallFailed as error:
            return await self._deletion_failed(obj, target, progress, error, retry)
        await self._post(obj, _deletion_events(plan, target.stamp))
        obj.log.info(plan.message, extra={"outcome": plan.outcome, "repository": target.repository_name})
        return None

    def _deletion_target(self, obj: RepositoryObject) -> _DeletionTarget | str:
        """What deletion needs, read leniently: a spec the operator refused (say, invalid policy JSON) must
        still be deletable. Returns why nothing can be done in AWS instead, when that is so."""
        namespace, spec, settings = obj.namespace, obj.spec, self._settings
        try:
            registry = RegistryIdentity.model_validate(spec.get("registry"))
            deletion_policy = DeletionPolicy(spec.get("deletionPolicy", DeletionPolicy.RETAIN))
        except (ValidationError, ValueError):
            return "its spec names no valid registry"
        repository_name = spec.get("repositoryName") or obj.name
        if registry.role_arn is not None and not settings.role_arn_allowed(registry.role_arn, namespace):
            return (
                f"registry.roleArn {registry.role_arn} is not allowed for namespace {namespace}"
                " (ECR_OPERATOR_ALLOWED_ROLE_ARNS)"
            )
        if not isinstance(repository_name, str) or not settings.repository_name_allowed(
            repository_name, namespace
        ):
            return (
                f"repository name {repository_name!r} is not allowed in namespace {namespace}"
                " (ECR_OPERATOR_REPOSITORY_NAME_PREFIX)"
            )
        try:
            roles = identity_roles(EcrRepositorySpec.model_validate(dict(spec)).access)
        except ValidationError:
            roles = ()
        return _DeletionTarget(
            registry=registry_ref(registry),
            repository_name=repository_name,
            deletion_policy=deletion_policy,
            roles=roles,
            stamp=identity_policy_stamp(settings.cluster_id, namespace, obj.name),
            owner=owner_tag_value(settings.cluster_id, namespace, obj.name),
            namespace=namespace,
        )

    async def _plan_deletion(
        self, target: _DeletionTarget, status: Mapping[str, Any], progress: _DeletionProgress
    ) -> DeletionPlan:
        # Where this object's policies may be: the roles the spec names (a crash between PutRolePolicy and
        # the status write must not leave a policy behind) and the roles status lists. Each is read from
        # IAM under this object's own policy name, and deleted only if its document carries its stamp.
        stamp = target.stamp
        candidates = {*identity_roles_in_status(status), *(role.name for role in target.roles)}
        documents = await self._identity_documents(target.registry.identity, stamp, candidates)
        progress.own = tuple(
            sorted(role for role, doc in documents.items() if is_own_identity_policy(doc, stamp))
        )
        # Under Retain nothing about the repository can change the outcome: it is not even read.
        retain = target.deletion_policy is DeletionPolicy.RETAIN
        observed = (
            None if retain else await self._ecr.observe_ownership(target.registry, target.repository_name)
        )
        return plan_deletion(
            repository_name=target.repository_name,
            deletion_policy=target.deletion_policy,
            owner=target.owner,
            observed=observed,
            stamp=stamp,
            identity_policies=documents,
            adopted_deletion_allowed=self._settings.adopted_deletion_allowed(target.namespace),
            namespace=target.namespace,
        )

    async def _apply_deletion(
        self, target: _DeletionTarget, plan: DeletionPlan, progress: _DeletionProgress
    ) -> None:
        for action in plan.actions:
            if isinstance(action, PutRolePolicy | DeleteRolePolicy):
                await self._iam.apply(target.registry.identity, action)
            else:
                await self._ecr.apply(target.registry, _repository_action(action))
            progress.applied.append(action)

    async def _deletion_failed(
        self,
        obj: RepositoryObject,
        target: _DeletionTarget,
        progress: _DeletionProgress,
        error: AwsCallFailed,
        retry: int,
    ) -> RetryLater:
        """Report why the deletion cannot finish (status once, an Event when the reason is new) and when
        to try again."""
        if error.code == REPOSITORY_NOT_EMPTY:
            problem = Problem(
                Reason.REPOSITORY_NOT_EMPTY,
                f"deletionPolicy DeleteIfEmpty: ECR repository {target.repository_name} still holds"
                " images, so this object waits. Delete the images, or set deletionPolicy: ForceDelete.",
                "failed",
            )
            cap = NOT_EMPTY_RETRY_CAP
        else:
            problem = aws_problem(error)
            transient = problem.kind == "transient"
            cap = TRANSIENT_RETRY_CAP if transient else self._settings.drift_interval.total_seconds()
        status = deletion_status(
            obj.status,
            problem,
            generation=obj.generation,
            now=self._now(),
            managed_policies=progress.managed_policies(target.stamp),
        )
        if status["conditions"] != owned_status(obj.status)["conditions"]:
            await self._post(obj, [EventNote("Warning", problem.reason, problem.message)])
        await self._write_status(obj, status)
        obj.log.warning(problem.message)
        return RetryLater(problem.message, backoff_delay(retry, self._jitter, cap=cap))

    # --- writing to Kubernetes ----------------------------------------------------------------------

    async def _write_status(self, obj: RepositoryObject, status: Mapping[str, Any]) -> None:
        """One server-side apply of the whole status this controller owns, or none when it is unchanged.

        Its own field manager means a condition another controller owns (PullSecretReady) is never dropped.
        """
        if status == owned_status(obj.status):
            return
        applied = applied_status_fields(obj.managed_fields, status_field_manager(STATUS_MANAGER))
        stranded = stranded_fields(obj.status, status, applied)
        try:
            if stranded:
                # An apply removes only fields this manager owns: take the others over first (rare: a
                # status someone else patched), so that the apply of the real status drops them.
                await self._apply_status(obj, {**status, **stranded})
            await self._apply_status(obj, status)
        except KubeApiError as error:
            if not error.not_found:
                raise
            # The object was deleted meanwhile: there is no status left to tell the truth in.

    async def _apply_status(self, obj: RepositoryObject, status: Mapping[str, Any]) -> None:
        await self._kube.apply_status(ECR_REPOSITORY, obj.namespace, obj.name, STATUS_MANAGER, status)

    async def _post(self, obj: RepositoryObject, events: Iterable[EventNote]) -> None:
        for event in events:
            try:
                await self._kube.post_event(obj.reference, event.type, event.reason, event.message)
            except KubeApiError as error:
                # An Event is a courtesy: failing to post one must not fail the reconcile.
                logger.warning("could not post an Event", extra={"reason": event.reason, "error": str(error)})


def registry_ref(identity: RegistryIdentity) -> RegistryRef:
    """The registry a spec's ``registry`` names, reached with its identity."""
    return RegistryRef(AwsIdentity(identity.region, identity.role_arn), identity.account_id)


def aws_problem(error: AwsCallFailed) -> Problem:
    return classify_aws_failure(
        error.service,
        error.operation,
        error.code,
        error.message,
        http_status=error.http_status,
        throttled=error.throttled,
    )


def _claimed_elsewhere(repository_name: str, error: RepositoryClaimedElsewhere) -> Problem:
    holder = describe_owner(error.owner) if error.owner else "someone else"
    return Problem(
        Reason.CONFLICT,
        f"ECR repository {repository_name} was claimed by {holder} at the same time; nothing else"
        " was changed.",
        "refused",
    )


def _repository_action(action: Action) -> RepositoryAction:
    assert not isinstance(action, PutRolePolicy | DeleteRolePolicy)
    return action


def _deletion_events(plan: DeletionPlan, stamp: PolicyStamp) -> list[EventNote]:
    """Retain is the expected default and "gone" needs no explanation: only a deletion, or a repository
    left alone because it is not this object's, is worth an Event."""
    events: list[EventNote] = []
    if plan.outcome == "delete":
        events.append(EventNote("Normal", EventReason.DELETED, plan.message))
    elif plan.outcome == "not-owned":
        events.append(EventNote("Warning", EventReason.NOT_OWNED, plan.message))
    elif plan.outcome == "adopted":
        events.append(EventNote("Warning", EventReason.RETAINED, plan.message))
    if plan.left_alone:
        events.append(
            EventNote(
                "Warning",
                EventReason.IDENTITY_POLICY_NOT_OWNED,
                f"Inline policy {stamp.name} on role(s) {', '.join(plan.left_alone)} was left alone:"
                " its document does not carry this object's stamp, so the operator did not write it.",
            )
        )
    return events


def _log(log: ObjectLogger, result: SyncResult, *, drift: bool) -> None:
    aspects = changed_aspects(result.applied)
    if aspects:
        what = "repaired drift in" if drift else "changed"
        log.info(f"{what} {', '.join(aspects)}", extra={"changed": list(aspects), "drift": drift})
    problem = result.problem
    if problem is not None:
        log.log(
            logging.WARNING if problem.kind != "refused" else logging.INFO,
            problem.message,
            extra={"reason": str(problem.reason)},
        )


def _result_label(problem: Problem | None) -> str:
    """The ``result`` label of ``ecr_operator_reconciles_total``."""
    if problem is None:
        return "success"
    return "temporary_error" if problem.kind == "transient" else "permanent_error"
