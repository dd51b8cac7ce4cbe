"""The process-wide state (``Runtime``, every handler's kopf ``memo``) and how kopf is set up.

``configure_kopf`` is where kopf is made this project's: its finalizer and bookkeeping annotations move to
the ``ecr-operator.io`` domain, watches cannot freeze silently, and Events are posted only on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import kopf

from ecr_operator.api.common import GROUP
from ecr_operator.aws.ecr import EcrRepositories
from ecr_operator.aws.iam import IamRolePolicies
from ecr_operator.aws.session import AwsClients
from ecr_operator.config import Settings, settings_summary
from ecr_operator.controllers.repository import RepositoryController
from ecr_operator.drift import DriftSchedule
from ecr_operator.kube import Kube
from ecr_operator.locks import KeyedLocks
from ecr_operator.metrics import Metrics, MetricsServer, ObjectReadiness
from ecr_operator.mirroring import Mirroring

if TYPE_CHECKING:
    from ecr_operator.handlers.pullsecrets import PullSecretController

FINALIZER = f"{GROUP}/finalizer"
ANNOTATIONS_PREFIX = GROUP
DIFFBASE_KEY = "last-handled-configuration"

# The apiserver ends each watch after this long and kopf re-watches from the last resourceVersion: a
# connection that some proxy or load balancer half-closed is replaced at least this often. An int:
# kopf sends str(value) as timeoutSeconds, and the apiserver answers "300.0" with 400 Bad Request.
WATCH_SERVER_TIMEOUT = 300
# If the apiserver does not end the watch itself, the client does, a little later.
WATCH_CLIENT_TIMEOUT = WATCH_SERVER_TIMEOUT + 60
# Bookmarks arrive about every 60 s on a live watch; a silence longer than this means the stream is dead.
WATCH_INACTIVITY_TIMEOUT = 70.0
CONNECT_TIMEOUT = 15.0
# For ordinary API requests (GET, PATCH); kopf's default of 5 minutes would stall a handler far too long.
REQUEST_TIMEOUT = 60.0

logger = logging.getLogger(__name__)


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
    drift: DriftSchedule
    """Shared drift-check passes of EcrRepository objects."""
    repository_locks: KeyedLocks
    """One lock per ECR repository: its observe-decide-act steps never interleave within the process."""
    readiness: ObjectReadiness
    mirroring: Mirroring
    """ImageMirror syncs: registry sessions, ECR tokens, per-mirror wake-ups."""
    kube: Kube
    repositories: RepositoryController
    pull_secrets: PullSecretController | None = None
    """Set by the pull-secret startup handler, which needs kopf's indexes (they exist only from then on)."""

    @classmethod
    def create(cls, settings: Settings, kube: Kube) -> Runtime:
        metrics = Metrics()
        aws = AwsClients(metrics, allowed_regions=settings.allowed_regions)
        ecr, iam = EcrRepositories(aws), IamRolePolicies(aws)
        drift = DriftSchedule(settings.drift_interval.total_seconds(), settings.drift_jitter.total_seconds())
        repository_locks, readiness = KeyedLocks(), ObjectReadiness(metrics.objects)
        return cls(
            settings=settings,
            metrics=metrics,
            metrics_server=MetricsServer(metrics, settings.bind_address, settings.metrics_port),
            # boto3 blocks: its calls run in these threads (asyncio.to_thread uses them), bounded here.
            executor=ThreadPoolExecutor(
                max_workers=settings.aws_max_concurrency, thread_name_prefix="blocking"
            ),
            aws=aws,
            ecr=ecr,
            iam=iam,
            drift=drift,
            repository_locks=repository_locks,
            readiness=readiness,
            mirroring=Mirroring(settings, aws),
            kube=kube,
            repositories=RepositoryController(
                settings,
                ecr=ecr,
                iam=iam,
                kube=kube,
                locks=repository_locks,
                drift=drift,
                metrics=metrics,
                readiness=readiness,
            ),
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
        await self.mirroring.start()

    async def stop(self) -> None:
        await self.mirroring.stop()
        await self.metrics_server.stop()
        self.kube.close()


async def serve(settings: Settings) -> None:
    """The operator's whole life: open the runtime, run kopf until SIGTERM/SIGINT, close the runtime.

    kopf installs its own SIGTERM/SIGINT handlers: it stops the watches, runs cleanup handlers and returns.
    Importing ``ecr_operator.handlers`` first registers the handlers in kopf's default registry.
    """
    # Reading the kubeconfig blocks: off the event loop.
    runtime = Runtime.create(settings, await asyncio.to_thread(Kube.from_settings, settings))
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


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """Tune kopf for this operator; pure assignment, so the choices are visible in one place."""
    persistence = kopf_settings.persistence
    persistence.finalizer = FINALIZER
    # v1=False: a new project has no annotations from kopf's older key format to stay compatible with.
    persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATIONS_PREFIX, v1=False)
    persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key=DIFFBASE_KEY, v1=False
    )

    watching = kopf_settings.watching
    watching.server_timeout = WATCH_SERVER_TIMEOUT
    watching.client_timeout = WATCH_CLIENT_TIMEOUT
    watching.connect_timeout = CONNECT_TIMEOUT
    watching.inactivity_timeout = WATCH_INACTIVITY_TIMEOUT
    kopf_settings.networking.connect_timeout = CONNECT_TIMEOUT
    kopf_settings.networking.request_timeout = REQUEST_TIMEOUT

    # Events come only from explicit kopf.info/warn/exception calls made for real changes and failures;
    # kopf's own log lines ("Timer ... succeeded" every drift pass) never become Events. INFO, not
    # WARNING, because the level also filters those explicit calls: "RepositoryCreated" must be posted.
    posting = kopf_settings.posting
    posting.loggers = False
    posting.level = logging.INFO
    posting.reporting_component = "ecr-operator"
    posting.reporting_instance = socket.gethostname()
    posting.event_name_prefix = "ecr-operator-"

    # No kopf worker limit: with kopf.index, each object's worker indexes it and then waits, holding its
    # slot, until every object is indexed; a limit below the number of objects of one kind (a cluster has
    # hundreds of ServiceAccounts) deadlocks startup for good (nolar/kopf#1243, open in kopf 1.45).
    kopf_settings.queueing.worker_limit = None
    # Peering keep-alives every ~50 s say nothing an operator's user needs; pauses are still logged.
    kopf_settings.peering.stealth = True
    # A deleted object keeps its finalizer until its timers have exited. kopf gives them ten event-loop
    # cycles, then re-checks only every 60 s: under load a drift timer (which exits as soon as it is told)
    # missed that and held deletions for up to a minute. Wait for it briefly, and re-check often.
    kopf_settings.background.instant_exit_timeout = 0.5
    kopf_settings.background.cancellation_polling = 2.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> None:
    """Runs before any watch starts: kopf's settings object only exists from here on."""
    configure_kopf(settings, memo.settings)
    settings.execution.executor = memo.executor
    logger.info("operator started", extra={"configuration": settings_summary(memo.settings)})
