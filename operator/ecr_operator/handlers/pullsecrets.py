"""Pull-secret rotation wired into kopf: indexes instead of LIST calls, a sync queue of namespaces, and one
token refresh loop per AWS identity.

- ``kopf.index`` keeps Namespaces, ServiceAccounts, the operator's own Secrets (selected server-side by
  label, so other Secrets never reach the process) and EcrRepositories in memory.
- A change enqueues its namespace. Indexers enqueue additions and updates (kopf logs every ``@on.event``
  success, and ServiceAccounts are chatty); ``@on.event`` handlers only catch deletions.
- A worker syncs one namespace at a time: demand and plan from ``reconcile.pullsecrets``, then the writes.
- One loop per identity refreshes its token on schedule and enqueues every namespace that uses it.
- Identities are pull identities (roles the admin named, assumed from the operator's base credentials
  through ``AwsClients``); the operator's own credentials only with the single-tenant opt-in. The
  operator's own account (for a pull role template's ``{accountId}``) is asked of STS once.

Where a failure shows: logs and metrics for the identity; the ``refresh-error`` annotation and a Warning
Event (on transitions only) on each Secret; the ``PullSecretReady`` condition (and a Warning Event when it
turns False) on an EcrRepository asking for a secret; a Warning Event on a Namespace that the cluster-wide
configuration selects but that has no secret to carry the news.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from ecr_operator.api.common import API_VERSION, GROUP, VERSION
from ecr_operator.aws.session import AwsClients
from ecr_operator.aws.tokens import (
    AccountLookupError,
    CallerAccount,
    TokenCache,
    TokenStatus,
    ecr_token_cache,
    sts_caller_account,
)
from ecr_operator.conditions import find_condition, format_time
from ecr_operator.config import Settings
from ecr_operator.kubeapi import KubeApi, KubeApiError, ObjectReference, load_api_client
from ecr_operator.metrics import Metrics
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.pullsecrets import (
    MANAGED_LABELS,
    MANAGED_SECRET_SELECTOR,
    PULL_SECRET_CONDITION,
    REGISTRIES_ANNOTATION,
    SECRET_NAME_CONFLICT,
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
    repository_conditions_patch,
)
from ecr_operator.registry.transport import create_session
from ecr_operator.runtime import Runtime

logger = logging.getLogger(__name__)

# kopf hands each index to handlers as a keyword argument named by its id.
NAMESPACES_INDEX = "pull_secret_namespaces"
SERVICE_ACCOUNTS_INDEX = "pull_secret_service_accounts"
SECRETS_INDEX = "pull_secret_secrets"
REPOSITORIES_INDEX = "pull_secret_repositories"
# Bursts (a new namespace brings its ServiceAccount and ConfigMaps within milliseconds) become one sync.
COALESCE_SECONDS = 0.05
SYNC_WORKERS = 4
CONFLICT_RETRY_SECONDS = 1.0
MAX_SYNC_BACKOFF_SECONDS = 60.0
# A name found taken by someone else's Secret is retried this long after (its owner may delete it).
FOREIGN_SECRET_MEMORY_SECONDS = 300.0
UNEXPECTED_ERROR_PAUSE_SECONDS = 30.0
REGISTRY_CONNECTIONS = 8
# A failed GetCallerIdentity (needed to render a pull role) is retried for the namespace after this long.
ACCOUNT_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class PullSecretIndexes:
    """kopf's live indexes, each keyed by namespace (Namespaces by name)."""

    namespaces: kopf.Index[str, NamespaceView]
    service_accounts: kopf.Index[str, ServiceAccountView]
    secrets: kopf.Index[str, SecretView]
    repositories: kopf.Index[str, RepositoryView]


class PullSecretController:
    """The pull-secret machinery of one operator process (created by the startup handler below)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        indexes: PullSecretIndexes,
        tokens: TokenCache,
        kube: KubeApi,
        http: aiohttp.ClientSession,
        accounts: CallerAccount,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._indexes = indexes
        self._tokens = tokens
        self._accounts = accounts
        self._kube = kube
        self._http = http
        self._ready = asyncio.Event()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._scheduled: set[str] = set()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._failures: dict[str, int] = {}
        self._foreign: dict[tuple[str, str], float] = {}
        self._namespace_reports: dict[str, str] = {}
        self._refreshers: dict[AwsIdentity, asyncio.Task[None]] = {}
        self._metric_hosts: dict[AwsIdentity, frozenset[str]] = {}
        self._workers = [
            asyncio.create_task(self._work(), name=f"pull-secret sync {number}")
            for number in range(SYNC_WORKERS)
        ]
        metrics.pull_secrets_managed.set_function(self._count_secrets)
        metrics.service_accounts_managed.set_function(self._count_service_accounts)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def mark_ready(self) -> None:
        """kopf calls handlers only once every index is filled: from then on plans see the whole cluster."""
        self._ready.set()

    async def stop(self) -> None:
        tasks = [*self._workers, *self._refreshers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refreshers.clear()
        await self._http.close()
        self._kube.close()

    # --- the sync queue -------------------------------------------------------------------------------

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
            retry_in = await self._sync(namespace)
        except KubeApiError as error:
            if error.conflict or error.not_found:
                # Someone wrote first or the object is gone: the index catches up, the next plan is right.
                logger.debug("pull secret sync raced a change", extra={"namespace": namespace})
                return CONFLICT_RETRY_SECONDS
            failures = self._failures.get(namespace, 0) + 1
            self._failures[namespace] = failures
            delay = min(MAX_SYNC_BACKOFF_SECONDS, 2.0**failures)
            logger.warning(
                "pull secret sync failed, retrying",
                extra={"namespace": namespace, "error": str(error), "retry_in_seconds": delay},
            )
            return delay
        except Exception:
            logger.exception("pull secret sync failed unexpectedly", extra={"namespace": namespace})
            return UNEXPECTED_ERROR_PAUSE_SECONDS
        self._failures.pop(namespace, None)
        return retry_in

    # --- one namespace --------------------------------------------------------------------------------

    async def _sync(self, namespace: str) -> float | None:
        """Plan and write one namespace; returns seconds until it must be planned again, if it must."""
        view = _first(self._indexes.namespaces.get(namespace))
        # A terminating namespace is being emptied by the namespace controller: writing there is wasted.
        if view is None or view.terminating or not namespace_served(namespace, self._settings.namespaces):
            self._namespace_reports.pop(namespace, None)
            return None
        repositories = list(self._indexes.repositories.get(namespace, ()))
        account_known = await self._learn_operator_account(namespace, repositories)
        demands = namespace_demands(
            view,
            self._settings.pull_secrets,
            repositories,
            self._settings.role_arn_allowed,
            self._pull_identity(),
        )
        self._keep_refreshing(demands.identities)
        tokens = {
            identity: status
            for identity in demands.identities
            if (status := self._tokens.status(identity)) is not None
        }
        secrets = list(self._indexes.secrets.get(namespace, ()))
        plan = plan_namespace(
            demands,
            list(self._indexes.service_accounts.get(namespace, ())),
            secrets,
            tokens,
            self._foreign_names(namespace),
            datetime.now(UTC),
        )
        await self._apply(namespace, plan)
        await self._report_repositories(namespace, plan, repositories)
        await self._report_namespace(view, plan)
        return None if account_known else ACCOUNT_RETRY_SECONDS

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

    async def _apply(self, namespace: str, plan: NamespacePlan) -> None:
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
        uid, labels = await self._kube.secret_labels(namespace, write.name)
        if all(labels.get(key) == value for key, value in MANAGED_LABELS.items()):
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
        secret = ObjectReference("v1", "Secret", write.name, namespace, uid)
        await self._post_event(secret, "Warning", SECRET_NAME_CONFLICT, message)
        self.request_sync(namespace)
        return None

    def _foreign_names(self, namespace: str) -> frozenset[str]:
        now = asyncio.get_running_loop().time()
        expired = [key for key, seen in self._foreign.items() if now - seen > FOREIGN_SECRET_MEMORY_SECONDS]
        for key in expired:
            del self._foreign[key]
        return frozenset(name for (where, name) in self._foreign if where == namespace)

    async def _report_repositories(
        self, namespace: str, plan: NamespacePlan, repositories: Iterable[RepositoryView]
    ) -> None:
        now = datetime.now(UTC)
        for repository in repositories:
            conditions = repository_conditions_patch(repository, plan.outcome_for(repository.name), now)
            if conditions is None:
                continue
            await self._kube.patch_repository_status(
                namespace,
                repository.name,
                # The resourceVersion makes it a compare-and-swap: the repository controller writes
                # conditions too, and a stale list must not erase its update.
                {
                    "metadata": {"resourceVersion": repository.resource_version},
                    "status": {"conditions": conditions},
                },
            )
            after = find_condition(conditions, PULL_SECRET_CONDITION)
            if after is None or after["status"] != "False":
                continue
            before = find_condition(repository.conditions, PULL_SECRET_CONDITION) or {}
            if (before.get("status"), before.get("reason")) != ("False", after["reason"]):
                logger.warning(
                    "pull secret not served",
                    extra={
                        "namespace": namespace,
                        "repository": repository.name,
                        "reason": after["reason"],
                        "detail": after["message"],
                    },
                )
                about = ObjectReference(
                    API_VERSION, "EcrRepository", repository.name, namespace, repository.uid
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
                status = await self._tokens.refresh(identity)
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
        for name, store in self._indexes.namespaces.items():
            view = _first(store)
            if view is None or not namespace_served(name, self._settings.namespaces):
                continue
            demands = namespace_demands(
                view,
                self._settings.pull_secrets,
                self._indexes.repositories.get(name, ()),
                self._settings.role_arn_allowed,
                self._pull_identity(),
            )
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
        result = "success" if status.problem is None else "failure"
        for host in hosts:
            self._metrics.token_refreshes.labels(registry=host, result=result).inc()
            if token is not None:
                self._metrics.token_expiry.labels(registry=host).set(token.expires_at.timestamp())
            if status.last_success is not None:
                self._metrics.token_last_refresh.labels(registry=host).set(status.last_success.timestamp())
        facts: dict[str, Any] = {
            "identity": identity.describe(),
            "registries": sorted(hosts),
            "namespaces": namespaces,
            "next_refresh": format_time(status.next_refresh),
        }
        if token is not None:
            facts["expires_at"] = format_time(token.expires_at)
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


def _controller(memo: Runtime) -> PullSecretController | None:
    return memo.pull_secrets


def _requested(memo: Runtime, namespace: str | None) -> str:
    """Ask for a sync of ``namespace`` (once the controller exists); returns it for use as an index key."""
    name = namespace or ""
    controller = _controller(memo)
    if controller is not None and name:
        controller.request_sync(name)
    return name


# --- kopf wiring ------------------------------------------------------------------------------------------


@kopf.on.startup()
async def start_pull_secrets(settings: kopf.OperatorSettings, memo: Runtime, **kwargs: Any) -> None:
    # Server-side selection: other Secrets never reach the process, let alone its memory.
    settings.watching.label_selectors["v1", "secrets"] = MANAGED_SECRET_SELECTOR
    # kopf passes each index (live; filled once the watches start) as a keyword named after its indexer.
    indexes = PullSecretIndexes(
        kwargs[NAMESPACES_INDEX],
        kwargs[SERVICE_ACCOUNTS_INDEX],
        kwargs[SECRETS_INDEX],
        kwargs[REPOSITORIES_INDEX],
    )
    memo.pull_secrets = await _create_controller(memo.settings, memo.metrics, memo.aws, indexes)


async def _create_controller(
    settings: Settings, metrics: Metrics, aws: AwsClients, indexes: PullSecretIndexes
) -> PullSecretController:
    kube_client = await asyncio.to_thread(load_api_client, settings.aws_max_concurrency)
    session = create_session(ca_bundle=settings.ca_bundle, connections=REGISTRY_CONNECTIONS)
    tokens = ecr_token_cache(aws, session, settings)
    _warn_about_unusable_roles(settings)
    accounts = CallerAccount(sts_caller_account(aws))
    return PullSecretController(settings, metrics, indexes, tokens, KubeApi(kube_client), session, accounts)


def _warn_about_unusable_roles(settings: Settings) -> None:
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
        if role_arn and not any(fnmatch.fnmatchcase(role_arn, r.pattern) for r in settings.allowed_role_arns):
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


@kopf.on.cleanup()
async def stop_pull_secrets(memo: Runtime, **_: Any) -> None:
    controller = _controller(memo)
    if controller is not None:
        memo.pull_secrets = None
        await controller.stop()


@kopf.index("v1", "namespaces", id=NAMESPACES_INDEX)
async def pull_secret_namespaces(
    body: kopf.Body, name: str, memo: Runtime, **_: Any
) -> dict[str, NamespaceView]:
    return {_requested(memo, name): NamespaceView.from_body(body)}


@kopf.index("v1", "serviceaccounts", id=SERVICE_ACCOUNTS_INDEX)
async def pull_secret_service_accounts(
    body: kopf.Body, namespace: str | None, memo: Runtime, **_: Any
) -> dict[str, ServiceAccountView]:
    return {_requested(memo, namespace): ServiceAccountView.from_body(body)}


@kopf.index("v1", "secrets", labels=dict(MANAGED_LABELS), id=SECRETS_INDEX)
async def pull_secret_secrets(
    body: kopf.Body, namespace: str | None, memo: Runtime, **_: Any
) -> dict[str, SecretView]:
    return {_requested(memo, namespace): SecretView.from_body(body)}


@kopf.index(GROUP, VERSION, "ecrrepositories", id=REPOSITORIES_INDEX)
async def pull_secret_repositories(
    body: kopf.Body, namespace: str | None, memo: Runtime, **_: Any
) -> dict[str, RepositoryView]:
    # Every repository is indexed, not only those asking for a secret: kopf keeps the old value when an
    # indexer returns None, and a repository that stops asking must leave the index.
    return {_requested(memo, namespace): RepositoryView.from_body(body)}


def _not_ready(memo: Runtime, **_: Any) -> bool:
    controller = _controller(memo)
    return controller is not None and not controller.ready


@kopf.on.event("v1", "namespaces", when=_not_ready)
async def pull_secrets_indexed(memo: Runtime, **_: Any) -> None:
    """kopf runs handlers only after every index is filled; the first call opens the sync queue."""
    controller = _controller(memo)
    if controller is not None:
        controller.mark_ready()


def _deleted(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event("v1", "secrets", labels=dict(MANAGED_LABELS), when=_deleted)
@kopf.on.event(GROUP, VERSION, "ecrrepositories", when=_deleted)
async def pull_secret_demand_deleted(namespace: str | None, memo: Runtime, **_: Any) -> None:
    """Indexers never see deletions: a deleted Secret is re-created, a deleted repository's demand dropped."""
    _requested(memo, namespace)
