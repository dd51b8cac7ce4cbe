"""The process-wide state (``Runtime``, every handler's kopf ``memo``) and the operator's whole life.

The Runtime creates every long-lived object in ``create``, opens what needs the event loop in ``start``
and closes it in ``stop``. It knows controllers and adapters, never handlers: the handlers (kopf's side)
reach the controllers through it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import kopf

from ecr_operator.aws.ecr import EcrRepositories
from ecr_operator.aws.iam import IamRolePolicies
from ecr_operator.aws.session import AwsClients
from ecr_operator.aws.tokens import (
    CallerAccount,
    EcrTokenCache,
    RegistryLogin,
    ecr_token_cache,
    sts_caller_account,
)
from ecr_operator.config import Settings
from ecr_operator.controllers.mirror import MirrorController
from ecr_operator.controllers.mirror_pass import MirrorServices
from ecr_operator.controllers.mirror_registries import MirrorRegistries
from ecr_operator.controllers.mirror_slots import FairSlots
from ecr_operator.controllers.pullsecrets import PullSecretController
from ecr_operator.controllers.repository import RepositoryController
from ecr_operator.controllers.repository_work import RepositoryWork
from ecr_operator.kube import Kube, KubeConfigError
from ecr_operator.locks import KeyedLocks
from ecr_operator.metrics import Metrics, MetricsServer, ObjectReadiness
from ecr_operator.reconcile.mirror import SlotLimits


class StartupError(RuntimeError):
    """The operator cannot start (e.g. its metrics port is taken); the message says why."""


@dataclass(eq=False)
class Runtime:
    """Everything created once per process and shared by all handlers: settings, metrics, clients.

    kopf passes it to every handler as ``memo``. To share another long-lived object (a boto3 client set,
    an aiohttp session, a token cache), add a field and create it in ``create``; if it needs the event
    loop or must be closed, open it in ``start`` and close it in ``stop``.
    """

    settings: Settings
    metrics: Metrics
    metrics_server: MetricsServer
    executor: ThreadPoolExecutor
    aws: AwsClients
    ecr: EcrRepositories
    iam: IamRolePolicies
    kube: Kube
    """The one Kubernetes adapter (one aiohttp session) for every call beyond kopf's watches."""
    registry_login: RegistryLogin
    """Verifies new ECR tokens at the registry's ``/v2/``; its HTTP session lives from start to stop."""
    ecr_tokens: EcrTokenCache
    """The one ECR token cache, per AWS identity: pull secrets and mirror pushes share its tokens."""
    repository_locks: KeyedLocks
    """One lock per ECR repository: its observe-decide-act steps never interleave within the process."""
    readiness: ObjectReadiness
    mirror_registries: MirrorRegistries
    """Registry sessions and the clients mirror passes keep, with the authentication they learned."""
    mirroring: MirrorController
    """ImageMirror syncs: one loop per mirror, fair slots, per-mirror wake-ups."""
    pull_secrets: PullSecretController
    """Pull-secret rotation; the handlers hand it kopf's indexes once kopf has them."""
    repositories: RepositoryController
    """EcrRepository reconciles, drift checks and deletions."""
    repository_work: RepositoryWork
    """When EcrRepository objects are reconciled: new specs, retries and the drift passes."""

    @classmethod
    def create(cls, settings: Settings, kube: Kube) -> Runtime:
        """``kube`` is built apart (``Kube.from_settings`` reads the kubeconfig, which blocks)."""
        metrics = Metrics()
        aws = AwsClients(metrics, allowed_regions=settings.allowed_regions)
        registry_login = RegistryLogin(settings.registry_host_overrides, ca_bundle=settings.ca_bundle)
        ecr_tokens = ecr_token_cache(aws, registry_login, settings)
        ecr, iam = EcrRepositories(aws), IamRolePolicies(aws)
        repository_locks, readiness = KeyedLocks(), ObjectReadiness(metrics.objects)
        mirror_registries = MirrorRegistries(settings)
        repositories = RepositoryController(
            settings,
            ecr=ecr,
            iam=iam,
            kube=kube,
            locks=repository_locks,
            metrics=metrics,
            readiness=readiness,
        )
        return cls(
            settings=settings,
            metrics=metrics,
            metrics_server=MetricsServer(metrics, settings.bind_address, settings.metrics_port),
            # boto3 blocks: its calls run in these threads (asyncio.to_thread uses them), bounded here. The
            # Kubernetes adapter is asynchronous and needs none.
            executor=ThreadPoolExecutor(
                max_workers=settings.aws_max_concurrency, thread_name_prefix="blocking"
            ),
            aws=aws,
            ecr=ecr,
            iam=iam,
            kube=kube,
            registry_login=registry_login,
            ecr_tokens=ecr_tokens,
            repository_locks=repository_locks,
            readiness=readiness,
            mirror_registries=mirror_registries,
            mirroring=MirrorController(
                MirrorServices(
                    settings=settings,
                    metrics=metrics,
                    readiness=readiness,
                    aws=aws,
                    ecr=ecr,
                    kube=kube,
                    registries=mirror_registries,
                    tokens=ecr_tokens,
                    slots=FairSlots(SlotLimits.from_settings(settings)),
                )
            ),
            pull_secrets=PullSecretController(
                settings, metrics, ecr_tokens, kube, CallerAccount(sts_caller_account(aws))
            ),
            repositories=repositories,
            repository_work=RepositoryWork(repositories, kube, settings),
        )

    def __copy__(self) -> Runtime:
        # kopf shallow-copies the memo for every object it serves. A copy of the Runtime would still share
        # the clients but not attributes assigned later; one instance per process keeps that impossible.
        return self

    async def start(self) -> None:
        asyncio.get_running_loop().set_default_executor(self.executor)
        try:
            await self.metrics_server.start()
        except OSError as error:
            raise StartupError(
                f"cannot serve metrics on {self.settings.bind_address}:{self.settings.metrics_port}: {error}"
            ) from None
        await self.kube.start()
        await self.registry_login.start()
        await self.mirror_registries.start()
        await self.pull_secrets.start()
        await self.repository_work.start()

    async def stop(self) -> None:
        await self.repository_work.stop()
        await self.pull_secrets.stop()
        await self.mirror_registries.stop()
        await self.registry_login.stop()
        await self.kube.stop()
        await self.metrics_server.stop()


async def serve(settings: Settings) -> None:
    """The operator's whole life: open the runtime, run kopf until SIGTERM/SIGINT, close the runtime.

    kopf installs its own SIGTERM/SIGINT handlers: it stops the watches, runs cleanup handlers and returns.
    Importing ``ecr_operator.handlers`` first registers the handlers in kopf's default registry.
    """
    try:
        kube = await asyncio.to_thread(Kube.from_settings, settings)
    except KubeConfigError as error:
        raise StartupError(str(error)) from None
    runtime = Runtime.create(settings, kube)
    await runtime.start()
    try:
        host = f"[{settings.bind_address}]" if ":" in settings.bind_address else settings.bind_address
        await kopf.operator(
            clusterwide=settings.clusterwide,
            namespaces=settings.namespaces,
            standalone=settings.standalone,
            peering_name=settings.peering_name,
            priority=settings.peering_priority,
            liveness_endpoint=f"http://{host}:{settings.health_port}/healthz",
            memo=runtime,
        )
    finally:
        await runtime.stop()
