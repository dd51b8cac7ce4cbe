"""Prometheus metrics: every family the operator exposes, and the HTTP server that serves them.

The families live in a ``Metrics`` object with its own ``CollectorRegistry`` rather than in the process-wide
default registry: nothing is registered at import time, each ``Runtime`` (and each test) gets fresh
counters, and creating two never fails with "Duplicated timeseries".

Label values are kinds, namespaces, names, AWS operation names, registry hosts and fixed result words.
Never a credential, a token or an error text: those are unbounded and may be secret.
"""

from __future__ import annotations

import platform
from importlib import metadata

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


class Metrics:
    """The operator's metric families, registered in ``registry``.

    Suggested label values, so dashboards and alerts can rely on them: ``result`` of a reconcile is
    ``success`` / ``temporary_error`` / ``permanent_error``; ``outcome`` of an AWS call is ``success`` /
    ``throttled`` / ``client_error`` / ``server_error`` / ``network_error``; ``result`` of a token refresh
    is ``success`` / ``failure``.
    """

    def __init__(self) -> None:
        # "_created" samples double the number of series and no dashboard or alert reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

        self.build_info = self._gauge(
            "build_info",
            "Always 1; the labels say which build is running.",
            ["version", "kopf_version", "python"],
        )
        self.build_info.labels(
            version=__version__, kopf_version=metadata.version("kopf"), python=platform.python_version()
        ).set(1)

        # Reconciliation, for every kind.
        self.reconciles = self._counter(
            "reconciles", "Reconciles finished, by kind and result.", ["kind", "result"]
        )
        self.reconcile_duration = Histogram(
            "reconcile_duration_seconds",
            "Time one reconcile took, by kind.",
            ["kind"],
            namespace=NAMESPACE,
            buckets=_RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.drift_corrections = self._counter(
            "drift_corrections", "Changes made outside the operator that it put back, by kind.", ["kind"]
        )
        self.objects = self._gauge(
            "objects", "Objects the operator serves, by kind and Ready status.", ["kind", "ready"]
        )

        # AWS API.
        self.aws_calls = self._counter(
            "aws_calls",
            "AWS API calls made, by service, operation and outcome.",
            ["service", "operation", "outcome"],
        )
        self.aws_throttles = self._counter(
            "aws_throttles",
            "AWS API calls refused by throttling, by service and operation.",
            ["service", "operation"],
        )

        # Pull secrets.
        self.token_expiry = self._gauge(
            "pull_secret_token_expiry_timestamp_seconds",
            "Unix time the registry's current pull token expires.",
            ["registry"],
        )
        self.token_refreshes = self._counter(
            "pull_secret_token_refreshes",
            "Pull-token refreshes, by registry and result.",
            ["registry", "result"],
        )
        # A timestamp rather than "seconds since": Prometheus computes the age (time() - x) at query time,
        # so the value is right even when nothing has updated it for hours.
        self.token_last_refresh = self._gauge(
            "pull_secret_last_refresh_timestamp_seconds",
            "Unix time the registry's pull token was last refreshed successfully.",
            ["registry"],
        )
        self.pull_secrets_managed = self._gauge(
            "pull_secrets_managed", "Pull secrets the operator maintains."
        )
        self.service_accounts_managed = self._gauge(
            "pull_secret_service_accounts_managed",
            "ServiceAccounts the operator has patched with a pull secret.",
        )

        # Mirroring.
        self.mirror_bytes = self._counter("mirror_bytes", "Bytes of blobs copied into ECR by mirrors.")
        self.mirror_blobs = self._counter(
            "mirror_blobs",
            "Blobs handled by mirrors: copied, skipped (already there) or mounted.",
            ["result"],
        )
        self.mirror_manifests = self._counter(
            "mirror_manifests",
            "Manifests handled by mirrors: copied or skipped (digest unchanged).",
            ["result"],
        )
        self.mirror_duration = Histogram(
            "mirror_duration_seconds",
            "Time one ImageMirror sync took.",
            namespace=NAMESPACE,
            buckets=_MIRROR_BUCKETS,
            registry=self.registry,
        )
        self.mirror_errors = self._counter(
            "mirror_errors", "Mirror syncs that failed, by reason.", ["reason"]
        )
        self.mirror_last_success = self._gauge(
            "mirror_last_success_timestamp_seconds",
            "Unix time an ImageMirror last finished a sync without errors.",
            ["namespace", "name"],
        )

    def _counter(self, name: str, documentation: str, labels: list[str] | None = None) -> Counter:
        # prometheus_client appends the "_total" suffix to counter samples itself.
        return Counter(name, documentation, labels or [], namespace=NAMESPACE, registry=self.registry)

    def _gauge(self, name: str, documentation: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(name, documentation, labels or [], namespace=NAMESPACE, registry=self.registry)

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
