"""kopf wiring of the EcrRepository controller: create/update/resume, the drift timer, and delete.

Each handler parses the object, asks the adapters what AWS holds, lets ``reconcile.repository`` decide,
executes the decision in order, and writes status and Events only when they change. Errors a human must
fix are reported and retried once per drift pass (the timer); throttling and AWS outages raise
``kopf.TemporaryError`` with a jittered exponential delay.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from ecr_operator.api.common import GROUP, VERSION, RegistryIdentity
from ecr_operator.api.repository import ECR_REPOSITORY, DeletionPolicy, EcrRepositorySpec
from ecr_operator.aws.calls import AwsCallFailed
from ecr_operator.aws.ecr import (
    REPOSITORY_ALREADY_EXISTS,
    REPOSITORY_NOT_EMPTY,
    RegistryRef,
    RepositoryClaimedElsewhere,
)
from ecr_operator.conditions import READY, SYNCED, DesiredCondition, EventNote, conditions_patch
from ecr_operator.reconcile.backoff import backoff_delay
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.repository.actions import Action, DeleteRolePolicy, PutRolePolicy, changed_aspects
from ecr_operator.reconcile.repository.deletion import plan_deletion
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
    repository_events,
    repository_status_patch,
    was_converged,
)
from ecr_operator.reconcile.repository.vocabulary import (
    PolicyStamp,
    Reason,
    describe_owner,
    identity_policy_stamp,
    owner_tag_value,
    partition_of,
)
from ecr_operator.runtime import Runtime

KIND = ECR_REPOSITORY.kind
PLURAL = ECR_REPOSITORY.plural
# How soon a drift timer asks again whether its pass is due after returning. Each call waits for the
# pass itself (DriftSchedule), so this only bounds how late a timer notices a pass.
DRIFT_TIMER_TICK = 1.0
# A repository that still holds images under DeleteIfEmpty is looked at again this often (at most).
NOT_EMPTY_RETRY_CAP = 60.0


# --- create / update / resume -----------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_repository(
    body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, memo: Runtime, retry: int, **_: Any
) -> None:
    await _reconcile(body, patch, logger, memo, retry)


@kopf.timer(GROUP, VERSION, PLURAL, id="drift", interval=DRIFT_TIMER_TICK)
async def check_drift(
    body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, memo: Runtime, **kwargs: Any
) -> None:
    """Once per drift pass: compare AWS with the spec and repair what was changed outside the operator."""
    # kopf passes these to timers, but its TimerFn protocol does not declare them.
    stopped: kopf.DaemonStopped = kwargs["stopped"]
    retry: int = kwargs["retry"]
    uid = body.metadata.uid or ""
    delay = memo.drift.delay(uid)
    if delay > 0:
        await stopped.wait(delay)
        if stopped:
            return
    # ``body`` is kept current by kopf while the timer sleeps. A spec change not handled yet belongs to
    # its update handler; the check resumes at the next pass.
    if (body.get("status") or {}).get("observedGeneration") == body.metadata.get("generation"):
        await _reconcile(body, patch, logger, memo, retry)
    memo.drift.checked(uid)


async def _reconcile(
    body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, memo: Runtime, retry: int
) -> None:
    started = time.monotonic()
    status: Mapping[str, Any] = body.get("status") or {}
    generation = body.metadata.get("generation")
    drift = was_converged(status, generation)
    result = await _sync(body, status, memo)

    status_patch = repository_status_patch(
        status, result, generation=generation, now=datetime.now(UTC), drift=drift
    )
    if status_patch is not None:
        patch.status.update(status_patch)
    _post(body, repository_events(status, result, drift=drift))
    _log(logger, result, drift=drift)

    metrics = memo.metrics
    if drift and result.applied:
        metrics.drift_corrections.labels(kind=KIND).inc(len(changed_aspects(result.applied)))
    problem = result.problem
    metrics.reconciles.labels(kind=KIND, result=_result_label(problem)).inc()
    metrics.reconcile_duration.labels(kind=KIND).observe(time.monotonic() - started)
    ready = (status_patch or {}).get("conditions") or status.get("conditions") or []
    memo.readiness.set(KIND, body.metadata.uid or "", _ready_status(ready))
    if problem is not None and problem.kind == "transient":
        raise kopf.TemporaryError(problem.message, delay=backoff_delay(retry, random.random))


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


def _target(body: kopf.Body, memo: Runtime) -> _Target | Refusal:
    settings = memo.settings
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    try:
        spec = EcrRepositorySpec.model_validate(dict(body.spec))
        repository_name = spec.effective_repository_name(name)
    except ValidationError as error:
        return Refusal(Reason.INVALID_SPEC, _validation_message(error))
    except ValueError as error:
        return Refusal(Reason.INVALID_SPEC, str(error))
    refusal = tenancy_refusal(spec, repository_name, namespace, settings)
    if refusal is not None:
        return refusal
    try:
        desired = desired_repository(
            spec,
            repository_name=repository_name,
            owner=owner_tag_value(settings.cluster_id, namespace, name),
            namespace=namespace,
            partition=partition_of(spec.registry.region),
        )
    except SpecError as error:
        return Refusal(Reason.INVALID_SPEC, str(error))
    return _Target(
        desired=desired,
        registry=_registry(spec.registry),
        stamp=identity_policy_stamp(settings.cluster_id, namespace, name),
        adoption_allowed=settings.adoption_allowed(namespace),
        namespace=namespace,
    )


def _registry(identity: RegistryIdentity) -> RegistryRef:
    return RegistryRef(AwsIdentity(identity.region, identity.role_arn), identity.account_id)


async def _sync(body: kopf.Body, status: Mapping[str, Any], memo: Runtime) -> SyncResult:
    target = _target(body, memo)
    if isinstance(target, Refusal):
        return SyncResult(problem=Problem.refused(target))
    async with memo.repository_locks.hold(target.lock_key):
        return await _converge(target, status, memo)


async def _converge(target: _Target, status: Mapping[str, Any], memo: Runtime) -> SyncResult:
    """Status is output here, never input: ownership comes from the owner tag in AWS, and the roles status
    lists are only looked at (in IAM) for policies this object provably wrote."""
    desired, registry = target.desired, target.registry
    applied: list[Action] = []
    repository: RepositoryDescription | None = None
    # The roles IAM showed carrying this object's policy; None until they were looked at.
    in_place: list[str] | None = None
    try:
        # A second look only when CreateRepository lost a race (another cluster, or a human, was faster).
        for attempt in range(2):
            observed = await memo.ecr.observe(registry, desired.name)
            plan = plan_repository(desired, observed, adoption_allowed=target.adoption_allowed)
            if plan.refusal is not None:
                return SyncResult(problem=Problem.refused(plan.refusal))
            repository = observed.description if observed else None
            try:
                for action in plan.actions:
                    repository = await memo.ecr.apply(registry, action) or repository
                    applied.append(action)
            except AwsCallFailed as error:
                if error.code == REPOSITORY_ALREADY_EXISTS and attempt == 0:
                    continue
                raise
            break
        assert repository is not None  # observed, or created by the plan
        in_place = []
        problem = await _converge_identity_policies(
            target, repository, identity_roles_in_status(status), in_place, applied, memo
        )
    except RepositoryClaimedElsewhere as error:
        holder = describe_owner(error.owner) if error.owner else "someone else"
        return SyncResult(
            problem=Problem(
                Reason.CONFLICT,
                f"ECR repository {desired.name} was claimed by {holder} at the same time; nothing else"
                " was changed.",
                "refused",
            )
        )
    except AwsCallFailed as error:
        problem = classify_aws_failure(
            error.service,
            error.operation,
            error.code,
            error.message,
            http_status=error.http_status,
            throttled=error.throttled,
        )
    managed = None
    if in_place is not None:
        managed = tuple(ManagedPolicy(role, target.stamp.name) for role in roles_after(in_place, applied))
    return SyncResult(
        repository=repository,
        applied=tuple(applied),
        problem=problem,
        managed_policies=managed,
    )


async def _converge_identity_policies(
    target: _Target,
    repository: RepositoryDescription,
    hinted: tuple[str, ...],
    in_place: list[str],
    applied: list[Action],
    memo: Runtime,
) -> Problem | None:
    """Put and remove this object's identity policies. ``in_place`` receives the roles IAM showed carrying
    one before, and ``applied`` grows with each action done, so a failure half-way still reports the truth."""
    roles = target.desired.identity_roles
    identity = target.registry.identity
    observed = await _identity_documents(
        identity, target.stamp, {*(role.name for role in roles), *hinted}, memo
    )
    settings, namespace = memo.settings, target.namespace
    plan = plan_identity_policies(
        roles,
        stamp=target.stamp,
        repository=repository,
        observed=observed,
        role_allowed=lambda role_arn: settings.identity_role_allowed(role_arn, namespace),
        namespace=namespace,
    )
    if plan.left_alone:
        logging.getLogger(__name__).warning(
            "inline policies of this object's name that it did not write were left alone",
            extra={"roles": list(plan.left_alone), "policy": target.stamp.name},
        )
    in_place.extend(plan.in_place)
    if plan.refusal is not None:
        return Problem.refused(plan.refusal)
    for action in plan.actions:
        await memo.iam.apply(identity, action)
        applied.append(action)
    return None


async def _identity_documents(
    identity: AwsIdentity, stamp: PolicyStamp, roles: Iterable[str], memo: Runtime
) -> dict[str, Mapping[str, Any] | None]:
    """The document each role holds under this object's policy name (None: no such policy or role)."""
    ordered = sorted(set(roles))
    documents = await asyncio.gather(
        *(memo.iam.document(identity, ManagedPolicy(role, stamp.name)) for role in ordered)
    )
    return dict(zip(ordered, documents, strict=True))


# --- delete -----------------------------------------------------------------------------------------


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete_repository(
    body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, memo: Runtime, retry: int, **_: Any
) -> None:
    """Remove the object's identity policies, then delete, or leave, the repository as deletionPolicy says."""
    started = time.monotonic()
    uid = body.metadata.uid or ""
    status: Mapping[str, Any] = body.get("status") or {}
    try:
        await _delete(body, status, patch, logger, memo, retry)
    except kopf.TemporaryError:
        memo.metrics.reconciles.labels(kind=KIND, result="temporary_error").inc()
        raise
    finally:
        memo.metrics.reconcile_duration.labels(kind=KIND).observe(time.monotonic() - started)
    memo.metrics.reconciles.labels(kind=KIND, result="success").inc()
    memo.drift.forget(uid)
    memo.readiness.forget(KIND, uid)


@dataclass(frozen=True)
class _DeletionTarget:
    registry: RegistryRef
    repository_name: str
    deletion_policy: DeletionPolicy
    roles: tuple[IdentityRole, ...]


def _deletion_target(body: kopf.Body, memo: Runtime) -> _DeletionTarget | str:
    """What deletion needs, read leniently: a spec the operator refused (say, invalid policy JSON) must
    still be deletable. Returns why nothing can be done in AWS instead, when that is so."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    spec: Mapping[str, Any] = body.spec
    try:
        registry = RegistryIdentity.model_validate(spec.get("registry"))
        deletion_policy = DeletionPolicy(spec.get("deletionPolicy", DeletionPolicy.RETAIN))
    except (ValidationError, ValueError):
        return "its spec names no valid registry"
    repository_name = spec.get("repositoryName") or name
    if registry.role_arn is not None and not memo.settings.role_arn_allowed(registry.role_arn, namespace):
        return (
            f"registry.roleArn {registry.role_arn} is not allowed for namespace {namespace}"
            " (ECR_OPERATOR_ALLOWED_ROLE_ARNS)"
        )
    if not isinstance(repository_name, str) or not memo.settings.repository_name_allowed(
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
    return _DeletionTarget(_registry(registry), repository_name, deletion_policy, roles)


async def _delete(
    body: kopf.Body,
    status: Mapping[str, Any],
    patch: kopf.Patch,
    logger: kopf.Logger,
    memo: Runtime,
    retry: int,
) -> None:
    target = _deletion_target(body, memo)
    if isinstance(target, str):
        message = f"Nothing was deleted in AWS: {target}."
        logger.warning(message)
        kopf.warn(body, reason="RepositoryRetained", message=message)
        return
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    settings = memo.settings
    stamp = identity_policy_stamp(settings.cluster_id, namespace, name)
    # Where this object's policies may be: the roles the spec names (a crash between PutRolePolicy and the
    # status write must not leave a policy behind) and the roles status lists. Each is read from IAM
    # under this object's own policy name, and deleted only if its document carries this object's stamp.
    candidates = {*identity_roles_in_status(status), *(role.name for role in target.roles)}
    applied: list[Action] = []
    own: tuple[str, ...] = ()
    try:
        async with memo.repository_locks.hold((target.registry, target.repository_name)):
            documents = await _identity_documents(target.registry.identity, stamp, candidates, memo)
            own = tuple(sorted(role for role, doc in documents.items() if is_own_identity_policy(doc, stamp)))
            retain = target.deletion_policy is DeletionPolicy.RETAIN
            observed = (
                None if retain else await memo.ecr.observe_ownership(target.registry, target.repository_name)
            )
            plan = plan_deletion(
                repository_name=target.repository_name,
                deletion_policy=target.deletion_policy,
                owner=owner_tag_value(settings.cluster_id, namespace, name),
                observed=observed,
                stamp=stamp,
                identity_policies=documents,
                adopted_deletion_allowed=settings.adopted_deletion_allowed(namespace),
                namespace=namespace,
            )
            for action in plan.actions:
                if isinstance(action, PutRolePolicy | DeleteRolePolicy):
                    await memo.iam.apply(target.registry.identity, action)
                else:
                    await memo.ecr.apply(target.registry, action)
                applied.append(action)
    except AwsCallFailed as error:
        if own or applied:
            remaining = [ManagedPolicy(role, stamp.name).to_wire() for role in roles_after(own, applied)]
            _patch_status(patch, status, "identityPolicies", remaining or None)
        if error.code == REPOSITORY_NOT_EMPTY:
            problem = Problem(
                Reason.REPOSITORY_NOT_EMPTY,
                f"deletionPolicy DeleteIfEmpty: ECR repository {target.repository_name} still holds"
                " images, so this object waits. Delete the images, or set deletionPolicy: ForceDelete.",
                "failed",
            )
            delay = backoff_delay(retry, random.random, cap=NOT_EMPTY_RETRY_CAP)
        else:
            problem = classify_aws_failure(
                error.service,
                error.operation,
                error.code,
                error.message,
                http_status=error.http_status,
                throttled=error.throttled,
            )
            cap = 300.0 if problem.kind == "transient" else settings.drift_interval.total_seconds()
            delay = backoff_delay(retry, random.random, cap=cap)
        _report_deletion_problem(body, status, patch, problem, logger)
        raise kopf.TemporaryError(problem.message, delay=delay) from None
    # Retain is the expected default and "gone" needs no explanation: only a deletion, or a repository
    # left alone because it is not this object's, is worth an Event.
    if plan.outcome == "delete":
        kopf.info(body, reason="RepositoryDeleted", message=plan.message)
    elif plan.outcome == "not-owned":
        kopf.warn(body, reason="RepositoryNotOwned", message=plan.message)
    elif plan.outcome == "adopted":
        kopf.warn(body, reason="RepositoryRetained", message=plan.message)
    if plan.left_alone:
        kopf.warn(
            body,
            reason="IdentityPolicyNotOwned",
            message=f"Inline policy {stamp.name} on role(s) {', '.join(plan.left_alone)} was left alone:"
            " its document does not carry this object's stamp, so the operator did not write it.",
        )
    logger.info(plan.message, extra={"outcome": plan.outcome, "repository": target.repository_name})


def _report_deletion_problem(
    body: kopf.Body, status: Mapping[str, Any], patch: kopf.Patch, problem: Problem, logger: kopf.Logger
) -> None:
    generation = body.metadata.get("generation")
    conditions = conditions_patch(
        status,
        [
            DesiredCondition(READY, "False", problem.reason, problem.message, generation),
            DesiredCondition(SYNCED, "False", problem.reason, problem.message, generation),
        ],
        datetime.now(UTC),
    )
    if conditions is not None:
        patch.status["conditions"] = conditions
        kopf.warn(body, reason=problem.reason, message=problem.message)
    logger.warning(problem.message)


def _patch_status(patch: kopf.Patch, status: Mapping[str, Any], key: str, value: Any) -> None:
    if status.get(key) != value:
        patch.status[key] = value


# --- helpers ----------------------------------------------------------------------------------------


def _post(body: kopf.Body, events: list[EventNote]) -> None:
    for event in events:
        if event.type == "Warning":
            kopf.warn(body, reason=event.reason, message=event.message)
        else:
            kopf.info(body, reason=event.reason, message=event.message)


def _log(logger: kopf.Logger, result: SyncResult, *, drift: bool) -> None:
    aspects = changed_aspects(result.applied)
    if aspects:
        what = "repaired drift in" if drift else "changed"
        logger.info(f"{what} {', '.join(aspects)}", extra={"changed": list(aspects), "drift": drift})
    problem = result.problem
    if problem is not None:
        logger.log(
            logging.WARNING if problem.kind != "refused" else logging.INFO,
            problem.message,
            extra={"reason": str(problem.reason)},
        )


def _result_label(problem: Problem | None) -> str:
    """The ``result`` label of ``ecr_operator_reconciles_total``."""
    if problem is None:
        return "success"
    return "temporary_error" if problem.kind == "transient" else "permanent_error"


def _ready_status(conditions: Iterable[Any]) -> str:
    for condition in conditions:
        if isinstance(condition, Mapping) and condition.get("type") == READY:
            return str(condition.get("status", "Unknown"))
    return "Unknown"


def _validation_message(error: ValidationError) -> str:
    problems = []
    for detail in error.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in detail["loc"])
        problems.append(
            f"{where}: {str(detail['msg']).removeprefix('Value error, ')}" if where else detail["msg"]
        )
    return "the spec is invalid: " + "; ".join(problems)
