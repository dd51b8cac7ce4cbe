"""Pull-secret rotation: a sync queue of namespaces and one token refresh loop per AWS identity.

- kopf's indexes (Namespaces, ServiceAccounts, the operator's own Secrets, EcrRepositories) are handed in
  by the handlers once kopf has them (``attach``); a change there asks for a sync of its namespace.
- A worker syncs one namespace at a time: demand and plan from ``reconcile.pullsecrets``, then the writes,
  through the process's one Kubernetes adapter.
- One loop per identity refreshes its token on schedule, in the process's one ECR token cache (mirrors
  pushing as the same identity share it), and asks for a sync of every namespace that uses it.
- Identities are pull identities (roles the admin named, assumed from the operator's base credentials);
  the operator's own credentials only with the single-tenant opt-in. The operator's own account (for a
  pull role template's ``{accountId}``) is asked of STS once.

Where a failure shows: logs and metrics for the identity; the ``refresh-error`` annotation and a Warning
Event (on transitions only) on each Secret; the ``PullSecretReady`` condition (and a Warning Event when it
turns False) on an EcrRepository asking for a secret; a Warning Event on a Namespace that the cluster-wide
configuration selects but that has no secret to carry the news.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ecr_operator.api.common import API_VERSION
from ecr_operator.api.repository import ECR_REPOSITORY
from ecr_operator.aws.tokens import AccountLookupError, CallerAccount, EcrTokenCache
from ecr_operator.conditions import find_condition, format_time
from ecr_operator.config import Settings
from ecr_operator.kube import Kube, KubeApiError, ObjectReference
from ecr_operator.metrics import Metrics
from ecr_operator.reconcile.backoff import backoff_delay
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.pullsecrets import (
    MANAGED_LABELS,
    PULL_SECRET_CONDITION,
    REGISTRIES_ANNOTATION,
    SECRET_NAME_CONFLICT,
    Demands,
    DemandState,
    NamespacePlan,
    NamespaceView,
    PullIdentityPolicy,
    RepositoryView,
    SecretView,
    ServiceAccountView,
    WriteSecret,
    namespace_demands,
    namespace_served,
    operator_account_region,
    plan_namespace,
    pull_secret_status,
)
from ecr_operator.reconcile.tokens import TokenStatus

logger = logging.getLogger(__name__)

# The field manager of this controller's status writes: it owns the PullSecretReady condition only.
STATUS_MANAGER = "pullsecrets"
# Bursts (a new namespace brings its ServiceAccount and ConfigMaps within milliseconds) become one sync.
COALESCE_SECONDS = 0.05
SYNC_WORKERS = 4
CONFLICT_RETRY_SECONDS = 1.0
# Failed syncs back off from 1 s (doubling, with jitter) up to this.
MAX_SYNC_BACKOFF_SECONDS = 60.0
# A name found taken by someone else's Secret is retried this long after (its owner may delete it).
FOREIGN_SECRET_MEMORY_SECONDS = 300.0
UNEXPECTED_ERROR_PAUSE_SECONDS = 30.0
# A failed GetCallerIdentity (needed to render a pull role) is retried for the namespace after this long.
ACCOUNT_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class PullSecretIndexes:
    """kopf's live indexes, each keyed by namespace (Namespaces by name)."""

    namespaces: Mapping[str, Collection[NamespaceView]]
    service_accounts: Mapping[str, Collection[ServiceAccountView]]
    secrets: Mapping[str, Collection[SecretView]]
    repositories: Mapping[str, Collection[RepositoryView]]


NO_INDEXES = PullSecretIndexes({}, {}, {}, {})


class PullSecretController:
    """The pull-secret machinery of one operator process. The Runtime creates, starts and stops it; the
    handlers hand it kopf's indexes (``attach``), say when they are filled (``mark_ready``) and ask for
    syncs (``request_sync``)."""

    def __init__(
        self, settings: Settings, metrics: Metrics, tokens: EcrTokenCache, kube: Kube, accounts: CallerAccount
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._tokens = tokens
        self._kube = kube
        self._accounts = accounts
        self._indexes = NO_INDEXES
        self._ready = asyncio.Event()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._scheduled: set[str] = set()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._failures: dict[str, int] = {}
        self._foreign: dict[tuple[str, str], float] = {}
        self._namespace_reports: dict[str, str] = {}
        self._concerned: set[str] = set()
        """UIDs of the EcrRepositories whose last view concerned pull secrets (``repository_seen``)."""
        self._workers: list[asyncio.Task[None]] = []
        self._refreshers: dict[AwsIdentity, asyncio.Task[None]] = {}
        self._metric_hosts: dict[AwsIdentity, frozenset[str]] = {}
        metrics.pull_secrets_managed.set_function(self._count_secrets)
        metrics.service_accounts_managed.set_function(self._count_service_accounts)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        warn_about_unusable_roles(self._settings)
        self._workers = [
            asyncio.create_task(self._work(), name=f"pull-secret sync {number}")
            for number in range(SYNC_WORKERS)
        ]

    async def stop(self) -> None:
        tasks = [*self._workers, *self._refreshers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._refreshers.clear()

    def attach(self, indexes: PullSecretIndexes) -> None:
        """kopf's indexes exist only once kopf runs its startup handlers; they are handed in from there."""
        self._indexes = indexes

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def mark_ready(self) -> None:
        """kopf calls handlers only once every index is filled: from then on plans see the whole cluster."""
        self._ready.set()

    # --- the sync queue -------------------------------------------------------------------------------

    def repository_seen(self, view: RepositoryView) -> None:
        """An EcrRepository as its watch event shows it. Its namespace is synced only when the repository
        asks for a secret or carries PullSecretReady, now or the last time it was seen: a sync plans every
        repository of the namespace, and most events are the repository controller's status writes (one
        per object, 10,000 in a large namespace, each of which used to plan the whole namespace again)."""
        if view.wants_pull_secret or view.has_pull_secret_condition():
            self._concerned.add(view.uid)
        elif view.uid in self._concerned:
            self._concerned.discard(view.uid)
        else:
            return
        self.request_sync(view.namespace)

    def repository_gone(self, uid: str, namespace: str) -> None:
        if uid in self._concerned:
            self._concerned.discard(uid)
            self.request_sync(namespace)

    def request_sync(self, namespace: str, delay: float = COALESCE_SECONDS) -> None:
        if namespace in self._running:
            self._again.add(namespace)
        elif namespace not in self._scheduled:
            self._scheduled.add(namespace)
            asyncio.get_running_loop().call_later(delay, self._queue.put_nowait, namespace)

    async def _work(self) -> None:
        await self._ready.wait()
        while True:
            namespace = await self._queue.get()
            self._scheduled.discard(namespace)
            self._running.add(namespace)
            try:
                retry_in = await self._sync_safely(namespace)
            finally:
                self._running.discard(namespace)
            if namespace in self._again:
                self._again.discard(namespace)
                self.request_sync(namespace)
            elif retry_in is not None:
                self.request_sync(namespace, retry_in)

    async def _sync_safely(self, namespace: str) -> float | None:
        """Sync; on failure, seconds until the next attempt."""
        try:
            retry_in = await self.sync(namespace)
        except KubeApiError as error:
            return self._after_kube_error(namespace, error)
        except Exception:
            logger.exception("pull secret sync failed unexpectedly", extra={"namespace": namespace})
            return UNEXPECTED_ERROR_PAUSE_SECONDS
        self._failures.pop(namespace, None)
        return retry_in

    def _after_kube_error(self, namespace: str, error: KubeApiError) -> float:
        if error.conflict or error.not_found:
            # Someone wrote first or the object is gone: the index catches up, the next plan is right.
            logger.debug("pull secret sync raced a change", extra={"namespace": namespace})
            return CONFLICT_RETRY_SECONDS
        failures = self._failures.get(namespace, 0) + 1
        self._failures[namespace] = failures
        delay = backoff_delay(failures, random.random, base=1.0, cap=MAX_SYNC_BACKOFF_SECONDS)
        logger.warning(
            "pull secret sync failed, retrying",
            extra={"namespace": namespace, "error": str(error), "retry_in_seconds": delay},
        )
        return delay

    # --- one namespace --------------------------------------------------------------------------------

    async def sync(self, namespace: str) -> float | None:
        """Plan and write one namespace; returns seconds until it must be planned again, if it must."""
        view = self._served_namespace(namespace)
        if view is None:
            self._namespace_reports.pop(namespace, None)
            return None
        repositories = list(self._indexes.repositories.get(namespace, ()))
        account_known = await self._learn_operator_account(namespace, repositories)
        plan = self._plan(view, repositories)
        await self._apply(namespace, plan)
        await self._report_repositories(namespace, plan, repositories)
        await self._report_namespace(view, plan)
        return None if account_known else ACCOUNT_RETRY_SECONDS

    def _served_namespace(self, namespace: str) -> NamespaceView | None:
        view = _first(self._indexes.namespaces.get(namespace))
        # A terminating namespace is being emptied by the namespace controller: writing there is wasted.
        if view is None or view.terminating or not namespace_served(namespace, self._settings.namespaces):
            return None
        return view

    def _demands(self, view: NamespaceView, repositories: Iterable[RepositoryView]) -> Demands:
        return namespace_demands(
            view,
            self._settings.pull_secrets,
            repositories,
            self._settings.role_arn_allowed,
            self._pull_identity(),
        )

    def _plan(self, view: NamespaceView, repositories: Iterable[RepositoryView]) -> NamespacePlan:
        demands = self._demands(view, repositories)
        self._keep_refreshing(demands.identities)
        tokens = {
            identity: status
            for identity in demands.identities
            if (status := self._tokens.status(identity)) is not None
        }
        return plan_namespace(
            demands,
            list(self._indexes.service_accounts.get(view.name, ())),
            list(self._indexes.secrets.get(view.name, ())),
            tokens,
            self._foreign_names(view.name),
            datetime.now(UTC),
        )

    def _pull_identity(self) -> PullIdentityPolicy:
        return PullIdentityPolicy(
            role_template=self._settings.pull_secret_role_arn_template,
            operator_credentials_single_tenant=self._settings.pull_secrets_use_operator_credentials_single_tenant,
            operator_account=self._accounts.known,
        )

    async def _learn_operator_account(self, namespace: str, repositories: list[RepositoryView]) -> bool:
        """Ask STS once for the account a pull role template needs; False while that fails (the demand
        waits, the namespace is retried). The account is never taken from status, which a tenant may write."""
        region = operator_account_region(namespace, repositories, self._pull_identity())
        if region is None:
            return True
        try:
            account = await self._accounts.resolve(region)
        except AccountLookupError as error:
            logger.warning(
                "could not learn the operator's AWS account for a pull role; retrying",
                extra={
                    "namespace": namespace,
                    "error": str(error),
                    "retry_in_seconds": ACCOUNT_RETRY_SECONDS,
                },
            )
            return False
        logger.info("learned the operator's AWS account for pull roles", extra={"account_id": account})
        return True

    # --- the writes -----------------------------------------------------------------------------------

    async def _apply(self, namespace: str, plan: NamespacePlan) -> None:
        """Secrets first, then the ServiceAccounts that reference them, then deletions of unneeded ones."""
        await self._write_secrets(namespace, plan)
        await self._patch_service_accounts(namespace, plan)
        await self._delete_secrets(namespace, plan)

    async def _write_secrets(self, namespace: str, plan: NamespacePlan) -> None:
        for write in plan.writes:
            uid = await self._write_secret(namespace, write)
            if uid is None:
                continue
            # Posted right after the write that changed the refresh-error annotation: once that is stored,
            # no later plan sees the transition again.
            for event in plan.events:
                if event.secret_name == write.name:
                    secret = ObjectReference("v1", "Secret", write.name, namespace, uid)
                    await self._post_event(secret, event.type, event.reason, event.message)

    async def _patch_service_accounts(self, namespace: str, plan: NamespacePlan) -> None:
        for patch in plan.service_accounts:
            await self._kube.patch_service_account(namespace, patch.name, patch.merge_patch())
            logger.info(
                "service account pull secrets updated",
                extra={
                    "namespace": namespace,
                    "service_account": patch.name,
                    "image_pull_secrets": list(patch.image_pull_secrets),
                },
            )

    async def _delete_secrets(self, namespace: str, plan: NamespacePlan) -> None:
        for delete in plan.deletes:
            await self._kube.delete_secret(namespace, delete.name, delete.uid)
            logger.info("pull secret deleted", extra={"namespace": namespace, "secret_name": delete.name})

    async def _write_secret(self, namespace: str, write: WriteSecret) -> str | None:
        """The secret's UID, or None when the name turned out to belong to someone else's Secret."""
        registries = write.annotations.get(REGISTRIES_ANNOTATION)
        if not write.create:
            uid = await self._kube.patch_secret(namespace, write.name, write.merge_patch())
            logger.debug(
                "pull secret updated",
                extra={"namespace": namespace, "secret_name": write.name, "registries": registries},
            )
            return uid
        try:
            uid = await self._kube.create_secret(namespace, write.manifest(namespace))
        except KubeApiError as error:
            if not error.conflict:
                raise
            return await self._name_taken(namespace, write)
        logger.info(
            "pull secret created",
            extra={"namespace": namespace, "secret_name": write.name, "registries": registries},
        )
        return uid

    async def _name_taken(self, namespace: str, write: WriteSecret) -> str | None:
        found = await self._kube.read_secret(namespace, write.name)
        if found is None:
            # Deleted since the create was refused: the next pass creates it.
            self.request_sync(namespace, CONFLICT_RETRY_SECONDS)
            return None
        if all(found.labels.get(key) == value for key, value in MANAGED_LABELS.items()):
            # Ours, created by an earlier pass the index has not shown yet: patch it in place.
            return await self._kube.patch_secret(namespace, write.name, write.merge_patch())
        self._foreign[(namespace, write.name)] = asyncio.get_running_loop().time()
        message = (
            "ecr-operator was asked to keep a pull secret with this name, but this Secret is not one of"
            " its own; it is left unchanged."
        )
        logger.warning(
            "pull secret name taken by another secret",
            extra={"namespace": namespace, "secret_name": write.name},
        )
        secret = ObjectReference("v1", "Secret", write.name, namespace, found.uid)
        await self._post_event(secret, "Warning", SECRET_NAME_CONFLICT, message)
        self.request_sync(namespace)
        return None

    def _foreign_names(self, namespace: str) -> frozenset[str]:
        now = asyncio.get_running_loop().time()
        expired = [key for key, seen in self._foreign.items() if now - seen > FOREIGN_SECRET_MEMORY_SECONDS]
        for key in expired:
            del self._foreign[key]
        return frozenset(name for (where, name) in self._foreign if where == namespace)

    # --- reports --------------------------------------------------------------------------------------

    async def _report_repositories(
        self, namespace: str, plan: NamespacePlan, repositories: Iterable[RepositoryView]
    ) -> None:
        now = datetime.now(UTC)
        for repository in repositories:
            status = pull_secret_status(repository, plan.outcome_for(repository.name), now)
            if status is None:
                continue
            # Server-side apply under this controller's own field manager: it owns PullSecretReady only,
            # so the repository controller's conditions are never touched, and it never touches this one.
            await self._kube.apply_status(ECR_REPOSITORY, namespace, repository.name, STATUS_MANAGER, status)
            await self._warn_if_newly_failing(
                repository, find_condition(status["conditions"], PULL_SECRET_CONDITION)
            )

    async def _warn_if_newly_failing(
        self, repository: RepositoryView, after: Mapping[str, Any] | None
    ) -> None:
        if after is None or after["status"] != "False":
            return
        before = find_condition(repository.conditions, PULL_SECRET_CONDITION) or {}
        if (before.get("status"), before.get("reason")) == ("False", after["reason"]):
            return
        logger.warning(
            "pull secret not served",
            extra={
                "namespace": repository.namespace,
                "repository": repository.name,
                "reason": after["reason"],
                "detail": after["message"],
            },
        )
        about = ObjectReference(
            API_VERSION, ECR_REPOSITORY.kind, repository.name, repository.namespace, repository.uid
        )
        await self._post_event(about, "Warning", str(after["reason"]), str(after["message"]))

    async def _report_namespace(self, namespace: NamespaceView, plan: NamespacePlan) -> None:
        """A cluster-wide demand that cannot be served and has no Secret to say so: tell the Namespace."""
        unserved = [
            outcome
            for outcome in plan.outcomes
            if outcome.repository is None
            and outcome.state in (DemandState.FAILING, DemandState.REFUSED, DemandState.CONFLICT)
            and not outcome.secret_exists
        ]
        if not unserved:
            self._namespace_reports.pop(namespace.name, None)
            return
        message = " ".join(dict.fromkeys(outcome.message for outcome in unserved))
        if self._namespace_reports.get(namespace.name) == message:
            return
        self._namespace_reports[namespace.name] = message
        logger.warning(
            "pull secret not served",
            extra={"namespace": namespace.name, "reason": unserved[0].reason, "detail": message},
        )
        about = ObjectReference("v1", "Namespace", namespace.name, None)
        await self._post_event(about, "Warning", unserved[0].reason, message)

    async def _post_event(self, about: ObjectReference, event_type: str, reason: str, message: str) -> None:
        try:
            await self._kube.post_event(about, event_type, reason, message)
        except KubeApiError as error:
            # An Event is a courtesy; failing to post one must not fail the sync.
            logger.warning("could not post an event", extra={"reason": reason, "error": str(error)})

    # --- tokens ---------------------------------------------------------------------------------------

    def _keep_refreshing(self, identities: Iterable[AwsIdentity]) -> None:
        for identity in identities:
            if identity not in self._refreshers:
                self._refreshers[identity] = asyncio.create_task(
                    self._refresh_forever(identity), name=f"pull token {identity.describe()}"
                )

    async def _refresh_forever(self, identity: AwsIdentity) -> None:
        while True:
            await asyncio.sleep(self._tokens.seconds_until_refresh(identity))
            try:
                namespaces, hosts = self._users_of(identity)
                if not namespaces:
                    self._retire(identity)
                    return
                # A mirror pushing as this identity may have refreshed it already: that token is used.
                status = await self._tokens.refresh_if_due(identity)
                self._record_refresh(identity, status, hosts, len(namespaces))
            except Exception:
                logger.exception("pull token refresh crashed", extra={"identity": identity.describe()})
                await asyncio.sleep(UNEXPECTED_ERROR_PAUSE_SECONDS)
                continue
            for namespace in namespaces:
                self.request_sync(namespace)

    def _users_of(self, identity: AwsIdentity) -> tuple[list[str], frozenset[str]]:
        """Namespaces whose demands use ``identity``, and the registry hosts it serves (for metric labels)."""
        namespaces: list[str] = []
        hosts: set[str] = set()
        status = self._tokens.status(identity)
        token = status.token if status is not None else None
        for name in self._indexes.namespaces:
            view = self._served_namespace(name)
            if view is None:
                continue
            demands = self._demands(view, self._indexes.repositories.get(name, ()))
            using = [demand for demand in demands.demands if demand.identity == identity]
            if using:
                namespaces.append(name)
                hosts.update(host for demand in using if (host := demand.host(token)) is not None)
        return namespaces, frozenset(hosts)

    def _retire(self, identity: AwsIdentity) -> None:
        """Nothing uses the identity any more: drop its token, its loop and its gauges."""
        self._tokens.forget(identity)
        self._refreshers.pop(identity, None)
        for host in self._metric_hosts.pop(identity, frozenset()):
            for gauge in (self._metrics.token_expiry, self._metrics.token_last_refresh):
                with contextlib.suppress(KeyError):
                    gauge.remove(host)
        logger.info("pull token no longer needed", extra={"identity": identity.describe()})

    def _record_refresh(
        self, identity: AwsIdentity, status: TokenStatus, hosts: frozenset[str], namespaces: int
    ) -> None:
        token = status.token
        if not hosts and token is not None:
            hosts = frozenset({token.registry_host})
        self._metric_hosts[identity] = hosts | self._metric_hosts.get(identity, frozenset())
        self._count_refresh(status, hosts)
        self._log_refresh(identity, status, hosts, namespaces)

    def _count_refresh(self, status: TokenStatus, hosts: frozenset[str]) -> None:
        result = "success" if status.problem is None else "failure"
        for host in hosts:
            self._metrics.token_refreshes.labels(registry=host, result=result).inc()
            if status.token is not None:
                self._metrics.token_expiry.labels(registry=host).set(status.token.expires_at.timestamp())
            if status.last_success is not None:
                self._metrics.token_last_refresh.labels(registry=host).set(status.last_success.timestamp())

    @staticmethod
    def _log_refresh(
        identity: AwsIdentity, status: TokenStatus, hosts: frozenset[str], namespaces: int
    ) -> None:
        facts: dict[str, Any] = {
            "identity": identity.describe(),
            "registries": sorted(hosts),
            "namespaces": namespaces,
            "next_refresh": format_time(status.next_refresh),
        }
        if status.token is not None:
            facts["expires_at"] = format_time(status.token.expires_at)
        if status.problem is None:
            logger.info("pull token refreshed", extra=facts)
        else:
            facts |= {"reason": status.problem.reason, "detail": status.problem.message}
            logger.warning("pull token refresh failed", extra=facts)

    # --- gauges, computed when Prometheus scrapes -----------------------------------------------------

    def _count_secrets(self) -> float:
        return float(sum(len(store) for store in self._indexes.secrets.values()))

    def _count_service_accounts(self) -> float:
        return float(
            sum(
                1 for store in self._indexes.service_accounts.values() for account in store if account.managed
            )
        )


def _first(values: Iterable[NamespaceView] | None) -> NamespaceView | None:
    return next(iter(values or ()), None)


def warn_about_unusable_roles(settings: Settings) -> None:
    """The allow-list governs every role the operator assumes, the admin's own configuration included; and
    a tenant-visible secret is minted from a pull role, so configuration without one is said out loud."""
    single_tenant = settings.pull_secrets_use_operator_credentials_single_tenant
    for registry in settings.pull_secrets.registries:
        role_arn = registry.role_arn
        if role_arn is None and not single_tenant:
            logger.warning(
                "a cluster-wide pull-secret registry names no roleArn (pull role); no secret is written for"
                " it. Set pullSecrets.registries[].roleArn to a pull-only role, or"
                " ECR_OPERATOR_PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT=true on a single-tenant"
                " cluster",
                extra={"account_id": registry.account_id, "region": registry.region},
            )
        if role_arn and not settings.role_arn_allowed(role_arn):
            logger.warning(
                "a cluster-wide pull-secret registry names a role outside the role allow-list; it is skipped",
                extra={"role_arn": role_arn, "account_id": registry.account_id},
            )
    template = settings.pull_secret_role_arn_template
    if template and "{namespace}" not in template:
        logger.warning(
            "ECR_OPERATOR_PULL_SECRET_ROLE_ARN_TEMPLATE has no {namespace}: every namespace's pull secret"
            " pulls with one role, and so reaches every repository that role may pull",
            extra={"template": template},
        )
    if single_tenant:
        logger.warning(
            "ECR_OPERATOR_PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT is on: pull secrets without a"
            " pull role carry the operator's own credentials, which may push; only safe on a single-tenant"
            " cluster"
        )
