"""ECR authorization tokens, one per AWS identity: fetched, verified against the registry, cached, refreshed.

An ECR authorization token belongs to an IAM principal in a region and opens every registry that principal
may reach there. So the identity (region + role, which fixes the account) is the unit of caching, and
``GetAuthorizationToken`` calls scale with identities, never with the namespaces or mirrors that use the
token: the process has one cache (``Runtime.ecr_tokens``), shared by pull secrets and mirror pushes.

A refresh is a fetch followed by a login at the registry's ``/v2/``. When either fails, the cache keeps
serving the previous token until it really expires and retries with a backoff; it never storms AWS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from ecr_operator.aws.session import AwsClients, error_code
from ecr_operator.config import Settings
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.tokens import (
    REGISTRY_REJECTED_TOKEN,
    REGISTRY_UNREACHABLE,
    TOKEN_REFRESH_FAILED,
    FetchedToken,
    IdentityToken,
    RefreshProblem,
    RefreshSchedule,
    TokenStatus,
)
from ecr_operator.registry.transport import create_session

LOGIN_TIMEOUT = aiohttp.ClientTimeout(total=15)
LOGIN_CONNECTIONS = 8


def utc_now() -> datetime:
    return datetime.now(UTC)


def symmetric_spread() -> float:
    """A uniformly random number in [-1, 1] that scales a jitter."""
    return random.uniform(-1.0, 1.0)  # noqa: S311 -- scheduling jitter, not cryptography


class TokenRefreshError(Exception):
    """A fetch or a registry login failed for a reason the cache reports and retries."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.problem = RefreshProblem(reason, message)


Fetch = Callable[[AwsIdentity], Awaitable[FetchedToken]]
Verify = Callable[[IdentityToken], Awaitable[None]]


class EcrTokenCache:
    """Tokens per identity. ``refresh`` fetches and verifies (one at a time per identity); ``refresh_if_due``
    does so only when needed, for users sharing an identity; ``status`` reads.

    Serving rule: the newest verified token; a token the registry refused is served only when nothing
    valid is left (no token, or the previous one has expired), since an unverified token beats none.
    """

    def __init__(
        self,
        fetch: Fetch,
        verify: Verify,
        schedule: RefreshSchedule,
        *,
        clock: Callable[[], datetime] = utc_now,
        spread: Callable[[], float] = symmetric_spread,
    ) -> None:
        self._fetch = fetch
        self._verify = verify
        self._schedule = schedule
        self._clock = clock
        self._spread = spread
        self._statuses: dict[AwsIdentity, TokenStatus] = {}
        self._locks: dict[AwsIdentity, asyncio.Lock] = {}

    def status(self, identity: AwsIdentity) -> TokenStatus | None:
        return self._statuses.get(identity)

    def identities(self) -> frozenset[AwsIdentity]:
        return frozenset(self._statuses)

    def seconds_until_refresh(self, identity: AwsIdentity) -> float:
        status = self._statuses.get(identity)
        if status is None:
            return 0.0
        return max((status.next_refresh - self._clock()).total_seconds(), 0.0)

    def forget(self, identity: AwsIdentity) -> None:
        self._statuses.pop(identity, None)
        self._locks.pop(identity, None)

    def due(self, identity: AwsIdentity) -> bool:
        """Whether a caller should refresh: no usable token, or its refresh time has come."""
        status = self._statuses.get(identity)
        token = status.token if status is not None else None
        if status is None or token is None or token.expires_at <= self._clock():
            return True
        return status.next_refresh <= self._clock()

    async def refresh(self, identity: AwsIdentity) -> TokenStatus:
        """Fetch and verify a new token now, whatever the schedule says."""
        async with self._lock(identity):
            return await self._refresh_locked(identity)

    async def refresh_if_due(self, identity: AwsIdentity) -> TokenStatus:
        """The current status, refreshed first if it is ``due``. Users sharing an identity (pull secrets,
        mirrors) call this, so a refresh one of them just made is never repeated by another."""
        async with self._lock(identity):
            status = self._statuses.get(identity)
            if status is not None and not self.due(identity):
                return status
            return await self._refresh_locked(identity)

    def _lock(self, identity: AwsIdentity) -> asyncio.Lock:
        return self._locks.setdefault(identity, asyncio.Lock())

    async def _refresh_locked(self, identity: AwsIdentity) -> TokenStatus:
        previous = self._statuses.get(identity)
        issued_at = self._clock()
        try:
            fetched = await self._fetch(identity)
        except TokenRefreshError as error:
            return self._failed(identity, previous, previous.token if previous else None, error)
        token = IdentityToken(
            username=fetched.username,
            password=fetched.password,
            registry_host=fetched.registry_host,
            issued_at=issued_at,
            expires_at=self._schedule.effective_expiry(issued_at, fetched.reported_expiry),
            verified=False,
        )
        try:
            await self._verify(token)
        except TokenRefreshError as error:
            return self._failed(identity, previous, self._serve_unverified(previous, token), error)
        verified = replace(token, verified=True)
        status = TokenStatus(
            token=verified,
            problem=None,
            consecutive_failures=0,
            next_refresh=self._schedule.refresh_at(verified, self._spread()),
            last_success=issued_at,
        )
        self._statuses[identity] = status
        return status

    def _serve_unverified(self, previous: TokenStatus | None, fresh: IdentityToken) -> IdentityToken:
        kept = previous.token if previous else None
        if kept is not None and kept.verified and kept.expires_at > self._clock():
            return kept
        return fresh

    def _failed(
        self,
        identity: AwsIdentity,
        previous: TokenStatus | None,
        serving: IdentityToken | None,
        error: TokenRefreshError,
    ) -> TokenStatus:
        failures = (previous.consecutive_failures if previous else 0) + 1
        now = self._clock()
        status = TokenStatus(
            token=serving,
            problem=error.problem,
            consecutive_failures=failures,
            next_refresh=self._schedule.retry_at(now, failures, self._spread()),
            last_success=previous.last_success if previous else None,
        )
        self._statuses[identity] = status
        return status


class EcrTokenSource:
    """``GetAuthorizationToken`` for an identity, through the process's shared boto3 clients."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    async def __call__(self, identity: AwsIdentity) -> FetchedToken:
        try:
            # Without registryIds (deprecated): the token opens every registry the identity may reach.
            client = await self._clients.client_off_loop("ecr", identity)
            response = await asyncio.to_thread(client.get_authorization_token)
        except (ClientError, BotoCoreError) as error:
            raise TokenRefreshError(
                TOKEN_REFRESH_FAILED, f"GetAuthorizationToken failed ({error_code(error)})"
            ) from None
        entries = response.get("authorizationData") or []
        if not entries:
            raise TokenRefreshError(TOKEN_REFRESH_FAILED, "GetAuthorizationToken returned no token")
        entry = entries[0]
        username, password = decode_authorization_token(entry.get("authorizationToken", ""))
        host = urlsplit(entry.get("proxyEndpoint", "")).netloc
        if not host:
            raise TokenRefreshError(TOKEN_REFRESH_FAILED, "GetAuthorizationToken returned no proxyEndpoint")
        return FetchedToken(username, password, host, entry.get("expiresAt"))


class AccountLookupError(Exception):
    """STS could not say which account the operator's credentials belong to (the message is safe to log)."""


AccountLookup = Callable[[str], Awaitable[str]]
"""region -> the account of the operator's own credentials."""


class CallerAccount:
    """The account of the operator's own credentials, asked once (single flight) and then remembered.

    A repository naming neither ``registry.accountId`` nor ``registry.roleArn`` lives in this account; its
    pull role is rendered with it. A failed lookup is not remembered: the next caller asks again.
    """

    def __init__(self, lookup: AccountLookup) -> None:
        self._lookup = lookup
        self._account: str | None = None
        self._lock = asyncio.Lock()

    @property
    def known(self) -> str | None:
        return self._account

    async def resolve(self, region: str) -> str:
        async with self._lock:
            if self._account is None:
                self._account = await self._lookup(region)
            return self._account


def sts_caller_account(clients: AwsClients) -> AccountLookup:
    """``GetCallerIdentity`` with the operator's own credentials (it needs no IAM permission)."""

    async def lookup(region: str) -> str:
        sts = await clients.client_off_loop("sts", AwsIdentity(region=region))
        try:
            response = await asyncio.to_thread(sts.get_caller_identity)
        except (ClientError, BotoCoreError) as error:
            raise AccountLookupError(f"GetCallerIdentity failed ({error_code(error)})") from None
        account = str(response.get("Account", ""))
        if not (len(account) == 12 and account.isdigit()):
            raise AccountLookupError("GetCallerIdentity returned no 12-digit account")
        return account

    return lookup


def decode_authorization_token(token: str) -> tuple[str, str]:
    """ECR's token is base64 of ``user:password``; a malformed one is reported without echoing it."""
    try:
        username, separator, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        separator = username = password = ""
    if not separator or not username or not password:
        raise TokenRefreshError(TOKEN_REFRESH_FAILED, "GetAuthorizationToken returned a malformed token")
    return username, password


def registry_endpoint(registry_host: str, overrides: Mapping[str, str]) -> str:
    """``host:port`` that really serves ``registry_host`` (an override, else the host itself)."""
    return overrides.get(registry_host) or overrides.get("*") or registry_host


class RegistryLogin:
    """Checks a token the way a kubelet will use it: basic auth at the registry's ``/v2/``.

    The host is the token's ``proxyEndpoint`` (AWS's answer, never a tenant's) or the admin's override for
    it. The HTTP session needs the event loop: ``start`` opens it and ``stop`` closes it (the Runtime's).
    """

    def __init__(self, host_overrides: Mapping[str, str], *, ca_bundle: Path | None = None) -> None:
        self._overrides = dict(host_overrides)
        self._ca_bundle = ca_bundle
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = create_session(ca_bundle=self._ca_bundle, connections=LOGIN_CONNECTIONS)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, token: IdentityToken) -> None:
        status = await self._login_status(token)
        if status in (401, 403):
            raise TokenRefreshError(
                REGISTRY_REJECTED_TOKEN, f"{token.registry_host} refused the new token (HTTP {status})"
            )
        if status != 200:
            raise TokenRefreshError(
                REGISTRY_UNREACHABLE, f"{token.registry_host} answered HTTP {status} at /v2/"
            )

    async def _login_status(self, token: IdentityToken) -> int:
        if self._session is None:
            raise RuntimeError("the registry login is not started")
        url = f"https://{registry_endpoint(token.registry_host, self._overrides)}/v2/"
        try:
            async with self._session.get(
                url,
                auth=aiohttp.BasicAuth(token.username, token.password),
                timeout=LOGIN_TIMEOUT,
                allow_redirects=False,
            ) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TokenRefreshError(
                REGISTRY_UNREACHABLE, f"{token.registry_host} could not be reached ({type(error).__name__})"
            ) from None


def ecr_token_cache(aws: AwsClients, verify: Verify, settings: Settings) -> EcrTokenCache:
    """The operator's ECR tokens: fetched as each identity, checked by ``verify`` (a ``RegistryLogin``),
    refreshed on the schedule the settings give. One per process (``Runtime.ecr_tokens``)."""
    return EcrTokenCache(
        EcrTokenSource(aws),
        verify,
        RefreshSchedule(
            lead=settings.token_refresh_lead,
            jitter=settings.token_refresh_jitter,
            fallback_lifetime=settings.token_fallback_lifetime,
        ),
    )
