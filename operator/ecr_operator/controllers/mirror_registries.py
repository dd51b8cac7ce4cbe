"""Registry sessions and clients of ImageMirror passes, kept across passes with what they learned.

Two aiohttp sessions, both guarded at every connection (see ``registry.guard``), each with its own policy:
sources are user input and may not reach internal addresses unless the admin allows them; destinations
carry the operator's ECR token and may reach only ECR registry hosts at public addresses, or the hosts the
admin's registry host overrides name (``reconcile.mirror.DestinationPolicy``). Neither session ever sends
an ECR token to a host a tenant chose.

A registry client remembers how its registry authenticates (Basic, or Bearer with which realm), and the
bearer tokens it got are cached; a client built anew for every pass learned that again with a 401 per
registry per pass. So clients are kept, per namespace, source registry and credentials (their fingerprint:
a rotated Secret is other credentials, hence another client), and per ECR registry host and identity (the
ECR token is read from the token cache at every request, so a refreshed token needs no new client; one
the registry refused drops the identity's clients with the token). Bounded like the AWS client cache.

The namespace is part of a source client's key because what a client learned is the upstream's answer to
one tenant's requests: a registry serving another tenant's repository a Bearer realm that hands out huge or
broken tokens must not make this tenant's mirror ask that realm (measured with the hostile registry's
realm-churn behaviour before it was keyed so).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp
from yarl import URL

from ecr_operator.aws.registry_credentials import EcrCredentials
from ecr_operator.aws.tokens import EcrTokenCache, registry_endpoint
from ecr_operator.config import Settings
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.mirror import DestinationPolicy
from ecr_operator.registry.auth import BearerTokenCache, CredentialsProvider
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.guard import GuardedSender, check_host, create_guarded_session, literal_address
from ecr_operator.registry.reference import api_host
from ecr_operator.registry.transport import AiohttpSender

# Clients kept (source and destination together); the least recently used goes first beyond it.
MAX_CACHED_REGISTRY_CLIENTS = 256


@dataclass(frozen=True)
class SourceKey:
    namespace: str
    registry: str
    credentials: str
    """A fingerprint of the credentials document ("" for anonymous access)."""


@dataclass(frozen=True)
class DestinationKey:
    registry_host: str
    identity: AwsIdentity


class MirrorRegistries:
    """The sessions, the bearer-token cache of sources, and the registry clients every pass shares."""

    def __init__(self, settings: Settings, *, max_clients: int = MAX_CACHED_REGISTRY_CLIENTS) -> None:
        self.settings = settings
        self.destination_policy = DestinationPolicy.from_overrides(settings.registry_host_overrides)
        self._max_clients = max_clients
        self._clients: OrderedDict[SourceKey | DestinationKey, RegistryClient] = OrderedDict()
        # Bearer tokens of source registries: cached per registry, scope and credentials (their
        # fingerprint), so one never serves another secret's requests.
        self._source_tokens = BearerTokenCache()
        self._sources: aiohttp.ClientSession | None = None
        self._destinations: aiohttp.ClientSession | None = None

    @property
    def destinations(self) -> aiohttp.ClientSession:
        if self._destinations is None:
            raise RuntimeError("mirror registries are not started")
        return self._destinations

    async def start(self) -> None:
        ca_bundle = self.settings.ca_bundle
        self._sources = create_guarded_session(self.settings.mirror_sources, ca_bundle=ca_bundle)
        self._destinations = create_guarded_session(self.destination_policy, ca_bundle=ca_bundle)

    async def stop(self) -> None:
        self._clients.clear()
        for session in (self._sources, self._destinations):
            if session is not None:
                await session.close()

    def source_client(
        self, namespace: str, registry: str, credentials: CredentialsProvider, fingerprint: str
    ) -> RegistryClient:
        """The client for the source ``registry`` of a mirror in ``namespace`` with these credentials
        (``fingerprint`` tells them apart); every connection it makes is judged by the source policy."""
        key = SourceKey(namespace, registry, fingerprint)
        found = self._cached(key)
        if found is not None:
            return found
        if self._sources is None:
            raise RuntimeError("mirror registries are not started")
        sender = GuardedSender(AiohttpSender(self._sources), self.settings.mirror_sources)
        client = RegistryClient(sender, credentials=credentials, token_cache=self._source_tokens)
        return self._keep(key, client)

    def destination_client(
        self, registry_host: str, identity: AwsIdentity, tokens: EcrTokenCache
    ) -> RegistryClient:
        """The client pushing to the ECR registry ``registry_host`` as ``identity`` with ECR tokens from
        ``tokens``; the registry host override, if the admin set one, says where that registry is served."""
        key = DestinationKey(registry_host, identity)
        found = self._cached(key)
        if found is not None:
            return found
        served_at = registry_endpoint(registry_host, self.settings.registry_host_overrides)
        client = RegistryClient(
            GuardedSender(AiohttpSender(self.destinations), self.destination_policy),
            credentials=EcrCredentials(tokens, identity, registry_host),
            endpoints={registry_host: served_at} if served_at != registry_host else None,
        )
        return self._keep(key, client)

    def forget_identity(self, identity: AwsIdentity) -> None:
        """Drop the destination clients of ``identity`` (its token was refused): the next pass starts over."""
        for key in [key for key in self._clients if isinstance(key, DestinationKey)]:
            if key.identity == identity:
                del self._clients[key]

    def __len__(self) -> int:
        return len(self._clients)

    def _cached(self, key: SourceKey | DestinationKey) -> RegistryClient | None:
        found = self._clients.get(key)
        if found is not None:
            self._clients.move_to_end(key)
        return found

    def _keep(self, key: SourceKey | DestinationKey, client: RegistryClient) -> RegistryClient:
        self._clients[key] = client
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)
        return client

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
