"""Process-wide machinery of ImageMirror syncs: registry sessions, ECR tokens, Kubernetes calls, wake-ups,
and the fair share of sync slots.

Two aiohttp sessions, both guarded at every connection (see ``registry.guard``), each with its own policy:
sources are user input and may not reach internal addresses unless the admin allows them; destinations
carry the operator's ECR token and may reach only ECR registry hosts at public addresses, or the hosts the
admin's registry host overrides name (``reconcile.mirror.DestinationPolicy``). Neither session ever sends
an ECR token to a host a tenant chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any

import aiohttp
import kopf
import kubernetes.client
from yarl import URL

from ecr_operator.api.common import GROUP, VERSION
from ecr_operator.api.mirror import IMAGE_MIRROR
from ecr_operator.api.repository import ECR_REPOSITORY
from ecr_operator.aws.registry_credentials import EcrCredentials
from ecr_operator.aws.session import AwsClients
from ecr_operator.aws.tokens import TokenCache, ecr_token_cache, registry_endpoint
from ecr_operator.config import Settings
from ecr_operator.kubeapi import FIELD_MANAGER, MERGE_PATCH, KubeApiError, call_api, load_api_client
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.mirror import DestinationPolicy, SlotLimits, SlotRequest, next_admitted
from ecr_operator.registry.auth import CredentialsProvider
from ecr_operator.registry.auth import TokenCache as RegistryTokens
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.guard import GuardedSender, check_host, create_guarded_session, literal_address
from ecr_operator.registry.reference import api_host
from ecr_operator.registry.transport import AiohttpSender

JSON_PATCH = "application/json-patch+json"
REPOSITORIES = ECR_REPOSITORY.plural
MIRRORS = IMAGE_MIRROR.plural


class MirrorObjects:
    """The Kubernetes calls of the mirror controller, each in the operator's thread pool."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._client = client
        self._core = kubernetes.client.CoreV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)

    def close(self) -> None:
        self._client.close()

    async def repository(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The EcrRepository ``name`` of ``namespace``, or None."""
        try:
            found = await call_api(
                f"read EcrRepository {namespace}/{name}",
                self._custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                REPOSITORIES,
                name,
            )
        except KubeApiError as error:
            if error.not_found:
                return None
            raise
        return dict(found)

    async def create_repository(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        created = await call_api(
            f"create EcrRepository {namespace}/{body['metadata']['name']}",
            self._custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            REPOSITORIES,
            dict(body),
            field_manager=FIELD_MANAGER,
        )
        return dict(created)

    async def replace_repository_spec(
        self, namespace: str, name: str, spec: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Set the whole spec, so that fields removed from the template are removed here too."""
        patched = await call_api(
            f"update EcrRepository {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            REPOSITORIES,
            name,
            [{"op": "replace", "path": "/spec", "value": dict(spec)}],
            field_manager=FIELD_MANAGER,
            _content_type=JSON_PATCH,
        )
        return dict(patched)

    async def secret_data(self, namespace: str, name: str) -> tuple[str, dict[str, str]] | None:
        """Type and (base64) data of a Secret, or None when it does not exist."""
        try:
            secret = await call_api(
                f"read Secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace
            )
        except KubeApiError as error:
            if error.not_found:
                return None
            raise
        return str(secret.type or ""), dict(secret.data or {})

    async def patch_mirror_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch an ImageMirror's status; returns the status as stored."""
        patched = await call_api(
            f"patch ImageMirror {namespace}/{name} status",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            MIRRORS,
            name,
            {"status": dict(patch)},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )
        return dict(patched.get("status") or {})


class FairSlots:
    """Sync slots shared fairly: at most ``total`` passes at once, ``per_namespace`` of one namespace and
    ``per_source`` from one source registry; a freed slot goes to the namespace running the fewest passes
    (``reconcile.mirror.next_admitted`` decides). With every pass under a deadline, a tenant whose upstream
    hangs holds at most its share, for at most the deadline, and other namespaces keep syncing."""

    def __init__(self, limits: SlotLimits) -> None:
        self.limits = limits
        self._arrivals = itertools.count()
        self._waiting: dict[SlotRequest, asyncio.Future[None]] = {}
        self._running: list[SlotRequest] = []

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def slot(self, namespace: str, source: str) -> AsyncIterator[None]:
        request = SlotRequest(namespace, source, next(self._arrivals))
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[request] = admitted
        self._dispatch()
        try:
            await admitted
        except BaseException:
            if self._waiting.pop(request, None) is None:  # admitted just as it was cancelled
                self._release(request)
            raise
        try:
            yield
        finally:
            self._release(request)

    def _release(self, request: SlotRequest) -> None:
        with contextlib.suppress(ValueError):
            self._running.remove(request)
        self._dispatch()

    def _dispatch(self) -> None:
        while True:
            chosen = next_admitted(list(self._waiting), self._running, self.limits)
            if chosen is None:
                return
            future = self._waiting.pop(chosen)
            self._running.append(chosen)
            if not future.done():
                future.set_result(None)


class Mirroring:
    """Shared by every mirror's daemon: clients, the fair share of syncs at once, and per-mirror wake-ups."""

    def __init__(self, settings: Settings, aws: AwsClients) -> None:
        self.settings = settings
        self._aws = aws
        self.slots = FairSlots(
            SlotLimits(
                total=settings.mirror_concurrency,
                per_namespace=settings.mirror_namespace_concurrency,
                per_source=settings.mirror_source_concurrency,
            )
        )
        self.destination_policy = DestinationPolicy.from_overrides(settings.registry_host_overrides)
        self._wakeups: dict[str, asyncio.Event] = {}
        self._sources: aiohttp.ClientSession | None = None
        self._destinations: aiohttp.ClientSession | None = None
        self._tokens: TokenCache | None = None
        # Bearer tokens of source registries, shared by every pass: a token is cached per registry, scope
        # and credentials (their fingerprint), so one never serves another secret's requests.
        self._source_tokens = RegistryTokens()
        self._objects: MirrorObjects | None = None
        self.failures: dict[str, int] = {}
        self.statuses: dict[str, dict[str, Any]] = {}

    async def start(self) -> None:
        policy = self.settings.mirror_sources
        self._sources = create_guarded_session(policy, ca_bundle=self.settings.ca_bundle)
        self._destinations = create_guarded_session(
            self.destination_policy, ca_bundle=self.settings.ca_bundle
        )
        self._tokens = ecr_token_cache(self._aws, self._destinations, self.settings)

    async def stop(self) -> None:
        for session in (self._sources, self._destinations):
            if session is not None:
                await session.close()
        if self._objects is not None:
            self._objects.close()

    @property
    def objects(self) -> MirrorObjects:
        """Created on first use: an operator without mirrors never opens this client."""
        if self._objects is None:
            self._objects = MirrorObjects(load_api_client(self.settings.mirror_concurrency * 2 + 2))
        return self._objects

    def source_client(self, credentials: CredentialsProvider) -> RegistryClient:
        """A client for a mirror's source: every connection it makes is judged by the source policy."""
        if self._sources is None:
            raise RuntimeError("mirroring is not started")
        sender = GuardedSender(AiohttpSender(self._sources), self.settings.mirror_sources)
        return RegistryClient(sender, credentials=credentials, token_cache=self._source_tokens)

    def destination_client(self, registry_host: str, identity: AwsIdentity) -> RegistryClient:
        """A client pushing to the ECR registry ``registry_host`` as ``identity``; the registry host
        override, if the admin set one, says where that registry is really served."""
        if self._destinations is None or self._tokens is None:
            raise RuntimeError("mirroring is not started")
        served_at = registry_endpoint(registry_host, self.settings.registry_host_overrides)
        return RegistryClient(
            GuardedSender(AiohttpSender(self._destinations), self.destination_policy),
            credentials=EcrCredentials(self._tokens, identity, registry_host),
            endpoints={registry_host: served_at} if served_at != registry_host else None,
        )

    def forget_token(self, identity: AwsIdentity) -> None:
        """Drop a token the registry refused, so the next pass fetches a new one."""
        if self._tokens is not None:
            self._tokens.forget(identity)

    async def check_source(self, registry: str) -> None:
        """Refuse a source host the policy forbids before any request, for a clear condition; the guarded
        session checks again at every connection. A name that does not resolve is left to the copy."""
        host = URL.build(scheme="https", authority=api_host(registry)).host or ""
        address = literal_address(host)
        if address is not None:
            check_host(self.settings.mirror_sources, host, [address])
            return
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return
        check_host(self.settings.mirror_sources, host, [ipaddress.ip_address(entry[4][0]) for entry in found])

    # --- wake-ups -------------------------------------------------------------------------------------

    def request_sync(self, uid: str) -> None:
        """Make the mirror's daemon sync now (spec changed, or a sync was requested)."""
        self._wakeups.setdefault(uid, asyncio.Event()).set()

    async def sleep(self, uid: str, seconds: float | None, stopped: kopf.DaemonStopped) -> None:
        """Wait ``seconds`` (None: until woken), or less when a sync is requested or the daemon stops."""
        wake = self._wakeups.setdefault(uid, asyncio.Event())
        if not wake.is_set() and not stopped:
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(_stopped(stopped, seconds))]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        wake.clear()

    def forget(self, uid: str) -> None:
        self._wakeups.pop(uid, None)
        self.failures.pop(uid, None)
        self.statuses.pop(uid, None)


async def _stopped(stopped: kopf.DaemonStopped, seconds: float | None) -> None:
    waiting: Awaitable[Any] = stopped.wait(seconds)  # awaitable in async daemons (kopf.AsyncFlagPromise)
    await waiting
