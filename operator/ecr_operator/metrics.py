"""Prometheus metrics: every family the operator exposes, and the HTTP server that serves them.

The families live in a ``Metrics`` object with its own ``CollectorRegistry`` rather than in the process-wide
default registry: nothing is registered at import time, each ``Runtime`` (and each test) gets fresh
counters, and creating two never fails with "Duplicated timeseries".

Label values are kinds, namespaces, names, AWS operation names, registry hosts and fixed result words.
Never a credential, a token or an error text: those are unbounded and may be secret.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any, Generic, TypeVar, overload

import aiohttp.web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from ecr_operator import __version__

NAMESPACE = "ecr_operator"

# A reconcile is a few AWS calls (tens of ms each against the API, seconds when throttled).
_RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# A mirror sync ranges from one HEAD per tag (sub-second) to copying gigabytes (many minutes).
_MIRROR_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)


F = TypeVar("F", Counter, Gauge, Histogram)


class _Family(Generic[F]):
    """One metric family, declared once on ``Metrics``; every ``Metrics`` creates it in its own registry.

    ``create`` puts the family in the instance's ``__dict__``, where attribute reads find it before this
    descriptor: ``__get__`` only gives type checkers the family's type.
    """

    def __init__(
        self, kind: type[F], name: str, documentation: str, labels: Sequence[str] = (), **options: Any
    ) -> None:
        self._kind: type[F] = kind
        self._name = name
        self._documentation = documentation
        self._labels = labels
        self._options = options

    def __set_name__(self, owner: type[Metrics], attribute: str) -> None:
        self._attribute = attribute

    @overload
    def __get__(self, instance: None, owner: type[Metrics]) -> _Family[F]: ...
    @overload
    def __get__(self, instance: Metrics, owner: type[Metrics]) -> F: ...
    def __get__(self, instance: Metrics | None, owner: type[Metrics]) -> _Family[F] | F:
        if instance is None:
            return self
        family: F = instance.__dict__[self._attribute]
        return family

    def create(self, instance: Metrics) -> None:
        # prometheus_client appends the "_total" suffix to counter samples itself.
        instance.__dict__[self._attribute] = self._kind(
            self._name,
            self._documentation,
            self._labels,
            namespace=NAMESPACE,
            registry=instance.registry,
            **self._options,
        )


class Metrics:
    """The operator's metric families, registered in ``registry``.

    Suggested label values, so dashboards and alerts can rely on them: ``result`` of a reconcile is
    ``success`` / ``temporary_error`` / ``permanent_error``; ``outcome`` of an AWS call is ``success`` /
    ``throttled`` / ``client_error`` / ``server_error`` / ``network_error``; ``result`` of a token refresh
    is ``success`` / ``failure``.
    """

    build_info = _Family(
        Gauge,
        "build_info",
        "Always 1; the labels say which build is running.",
        ["version", "kopf_version", "python"],
    )

    # Reconciliation, for every kind.
    reconciles = _Family(
        Counter, "reconciles", "Reconciles finished, by kind and result.", ["kind", "result"]
    )
    reconcile_duration = _Family(
        Histogram,
        "reconcile_duration_seconds",
        "Time one reconcile took, by kind.",
        ["kind"],
        buckets=_RECONCILE_BUCKETS,
    )
    drift_corrections = _Family(
        Counter, "drift_corrections", "Changes made outside the operator that it put back, by kind.", ["kind"]
    )
    objects = _Family(
        Gauge, "objects", "Objects the operator serves, by kind and Ready status.", ["kind", "ready"]
    )

    # AWS API.
    aws_calls = _Family(
        Counter,
        "aws_calls",
        "AWS API calls made, by service, operation and outcome.",
        ["service", "operation", "outcome"],
    )
    aws_throttles = _Family(
        Counter,
        "aws_throttles",
        "AWS API calls refused by throttling, by service and operation.",
        ["service", "operation"],
    )

    # Pull secrets.
    token_expiry = _Family(
        Gauge,
        "pull_secret_token_expiry_timestamp_seconds",
        "Unix time the registry's current pull token expires.",
        ["registry"],
    )
    token_refreshes = _Family(
        Counter,
        "pull_secret_token_refreshes",
        "Pull-token refreshes, by registry and result.",
        ["registry", "result"],
    )
    # A timestamp rather than "seconds since": Prometheus computes the age (time() - x) at query time,
    # so the value is right even when nothing has updated it for hours.
    token_last_refresh = _Family(
        Gauge,
        "pull_secret_last_refresh_timestamp_seconds",
        "Unix time the registry's pull token was last refreshed successfully.",
        ["registry"],
    )
    pull_secrets_managed = _Family(Gauge, "pull_secrets_managed", "Pull secrets the operator maintains.")
    service_accounts_managed = _Family(
        Gauge,
        "pull_secret_service_accounts_managed",
        "ServiceAccounts the operator has patched with a pull secret.",
    )

    # Mirroring.
    mirror_bytes = _Family(Counter, "mirror_bytes", "Bytes of blobs copied into ECR by mirrors.")
    mirror_blobs = _Family(
        Counter,
        "mirror_blobs",
        "Blobs handled by mirrors: copied, skipped (already there) or mounted.",
        ["result"],
    )
    mirror_manifests = _Family(
        Counter,
        "mirror_manifests",
        "Manifests handled by mirrors: copied or skipped (digest unchanged).",
        ["result"],
    )
    mirror_duration = _Family(
        Histogram, "mirror_duration_seconds", "Time one ImageMirror sync took.", buckets=_MIRROR_BUCKETS
    )
    mirror_errors = _Family(Counter, "mirror_errors", "Mirror syncs that failed, by reason.", ["reason"])
    mirror_last_success = _Family(
        Gauge,
        "mirror_last_success_timestamp_seconds",
        "Unix time an ImageMirror last finished a sync without errors.",
        ["namespace", "name"],
    )

    def __init__(self) -> None:
        # "_created" samples double the number of series and no dashboard or alert reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        for declared in vars(Metrics).values():
            if isinstance(declared, _Family):
                declared.create(self)
        self.build_info.labels(
            version=__version__, kopf_version=metadata.version("kopf"), python=platform.python_version()
        ).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ObjectReadiness:
    """Feeds the ``objects`` gauge from each object's Ready status, so counts stay exact as objects change
    state or go away (a gauge cannot be decremented correctly without knowing the previous state)."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._ready: dict[tuple[str, str], str] = {}

    def set(self, kind: str, uid: str, ready: str) -> None:
        previous = self._ready.get((kind, uid))
        if previous == ready:
            return
        if previous is not None:
            self._gauge.labels(kind=kind, ready=previous).dec()
        self._ready[(kind, uid)] = ready
        self._gauge.labels(kind=kind, ready=ready).inc()

    def forget(self, kind: str, uid: str) -> None:
        previous = self._ready.pop((kind, uid), None)
        if previous is not None:
            self._gauge.labels(kind=kind, ready=previous).dec()


class MetricsServer:
    """Serves ``/metrics`` from the operator's event loop (no extra thread); kopf hooks start and stop it."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._metrics = metrics
        self.host = host
        self.port = port
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.get("/metrics", self._serve)])
        runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await aiohttp.web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        response = aiohttp.web.Response(body=self._metrics.exposition())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response
