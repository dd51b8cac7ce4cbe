"""kopf made this project's: its finalizer and bookkeeping annotations move to the ``ecr-operator.io``
domain, watches cannot freeze silently, Events are posted only on purpose, and it connects with the
credentials the Kube adapter uses.

``configure_kopf`` is pure assignment, so the choices are visible in one place; the startup handler
``configure`` applies it before any watch starts.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Any

import kopf

from ecr_operator.api.common import GROUP
from ecr_operator.api.repository import ECR_REPOSITORY
from ecr_operator.config import Settings, settings_summary
from ecr_operator.kube import BearerToken, KubeConnection, load_connection
from ecr_operator.kube.client import CONNECT_TIMEOUT, REQUEST_TIMEOUT
from ecr_operator.runtime import Runtime

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

logger = logging.getLogger(__name__)


# Kinds reconciled by ``status.observedGeneration`` (no create/update handlers): kopf keeps no bookkeeping
# annotations on them, so its only writes are the finalizer (and progress while a deletion is retried).
WITHOUT_KOPF_BOOKKEEPING = frozenset({ECR_REPOSITORY.kind})


class DiffBaseExceptFor(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff-base in annotations, except for ``kinds``: for those nothing is kept."""

    def __init__(self, kinds: Iterable[str], *, prefix: str, key: str) -> None:
        super().__init__(prefix=prefix, key=key, v1=False)
        self._kinds = frozenset(kinds)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None if body.get("kind") in self._kinds else super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") not in self._kinds:
            super().store(body=body, patch=patch, essence=essence)


class ProgressUnmarkedFor(kopf.AnnotationsProgressStorage):
    """kopf's handler progress in annotations, without the ``<prefix>/kopf-managed`` marker on ``kinds``.

    The marker tells other kopf operators which annotations are kopf's. kopf writes it with the first
    progress record: on an object with no diff-base (``DiffBaseExceptFor``) that is the deletion, and the
    marker alone became a second patch beside the finalizer's removal (2 writes per deleted object)."""

    def __init__(self, kinds: Iterable[str], *, prefix: str) -> None:
        super().__init__(prefix=prefix, v1=False)
        self._kinds = frozenset(kinds)

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        if body.get("kind") not in self._kinds:
            super()._store_marker(prefix=prefix, patch=patch, body=body)


# on.event handlers that run for every watch event of their kind (``handlers/repository.py``,
# ``handlers/pullsecrets.py``): kopf logs "Handler '<id>' succeeded." at INFO each time, a line per event
# that says nothing (10,000 objects coming up were 10,000+ lines). Their failures are still logged.
QUIET_ON_SUCCESS = frozenset({"repository_watched", "pull_secret_deleted", "pull_secret_repository_deleted"})


class QuietSuccessOf(logging.Filter):
    """Drops kopf's success line of the handlers named."""

    def __init__(self, handler_ids: Iterable[str]) -> None:
        super().__init__()
        self._messages = frozenset(f"Handler {handler_id!r} succeeded." for handler_id in handler_ids)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self._messages


def quiet_watch_handlers() -> None:
    """Installs ``QuietSuccessOf(QUIET_ON_SUCCESS)`` on kopf's object logger, once."""
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(existing, QuietSuccessOf) for existing in objects.filters):
        objects.addFilter(QuietSuccessOf(QUIET_ON_SUCCESS))


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """Tune kopf for this operator; pure assignment, so the choices are visible in one place."""
    persistence = kopf_settings.persistence
    persistence.finalizer = FINALIZER
    # v1=False: a new project has no annotations from kopf's older key format to stay compatible with.
    persistence.progress_storage = ProgressUnmarkedFor(WITHOUT_KOPF_BOOKKEEPING, prefix=ANNOTATIONS_PREFIX)
    persistence.diffbase_storage = DiffBaseExceptFor(
        WITHOUT_KOPF_BOOKKEEPING, prefix=ANNOTATIONS_PREFIX, key=DIFFBASE_KEY
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
    # A deleted object keeps its finalizer until its daemons have exited. kopf gives them ten event-loop
    # cycles, then re-checks only every 60 s: under load a mirror daemon (which exits as soon as it is
    # told) missed that and held deletions for up to a minute. Wait for it briefly, and re-check often.
    kopf_settings.background.instant_exit_timeout = 0.5
    kopf_settings.background.cancellation_polling = 2.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> None:
    """Runs before any watch starts: kopf's settings object only exists from here on."""
    configure_kopf(settings, memo.settings)
    quiet_watch_handlers()
    settings.execution.executor = memo.executor
    logger.info("operator started", extra={"configuration": settings_summary(memo.settings)})


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf connects as the Kube adapter does. Without a login handler kopf falls back to its own, which
    use the ``kubernetes`` package when it is installed. kopf calls this again after a 401: a rotated
    service account token is read afresh."""
    return connection_info(load_connection())


def connection_info(connection: KubeConnection) -> kopf.ConnectionInfo:
    token = BearerToken(connection).current()
    return kopf.ConnectionInfo(
        server=connection.server,
        ca_path=connection.ca_file,
        ca_data=connection.ca_pem,
        insecure=connection.insecure,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=connection.certificate_file,
        certificate_data=connection.certificate_pem,
        private_key_path=connection.key_file,
        private_key_data=connection.key_pem,
        default_namespace=connection.namespace,
    )
