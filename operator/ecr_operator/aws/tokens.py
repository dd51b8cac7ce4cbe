"""ECR pull tokens, one per AWS identity: fetched, verified against the registry, cached, refreshed on time.

An ECR authorization token belongs to an IAM principal in a region and opens every registry that principal
may pull from there. So the identity (region + role, which fixes the account) is the unit of caching, and
``GetAuthorizationToken`` calls scale with identities, never with the namespaces that use the token.

A refresh is a fetch followed by a login at the registry's ``/v2/``. When either fails, the cache keeps
serving the previous token until it really expires and retries with a backoff; it never storms AWS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from ecr_operator.aws.session import AwsClients, error_code
from ecr_operator.config import Settings
from ecr_operator.reconcile.identity import AwsIdentity

# ECR issues tokens valid for 12 h. An expiry that is missing, not after the moment of issue, or further
# out than this is nonsense (moto reports the year 2015) and the configured fallback lifetime applies.
MAX_PLAUSIBLE_LIFETIME = timedelta(hours=24)
# However short a token's life, refreshes are never closer together than this.
MIN_REFRESH_INTERVAL = timedelta(seconds=1)
# Failed refreshes are retried after FIRST_RETRY, doubling up to MAX_RETRY; both shrink for tokens that
# live only seconds (tests), so a retry still lands well within the lifetime.
FIRST_RETRY = timedelta(seconds=10)
MAX_RETRY = timedelta(minutes=5)
RETRY_SPREAD = 0.2
LOGIN_TIMEOUT = aiohttp.ClientTimeout(total=15)

# Reasons (CamelCase, for conditions and Events) of a failed refresh.
TOKEN_REFRESH_FAILED = "TokenRefreshFailed"  # noqa: S105 -- a reason, not a credential
REGISTRY_REJECTED_TOKEN = "RegistryRejectedToken"  # noqa: S105 -- a reason, not a credential
REGISTRY_UNREACHABLE = "RegistryUnreachable"


def utc_now() -> datetime:
    return datetime.now(UTC)


def symmetric_spread() -> float:
    """A uniformly random number in [-1, 1] that scales a jitter."""
    return random.uniform(-1.0, 1.0)  # noqa: S311 -- scheduling jitter, not cryptography


@dataclass(frozen=True)
class FetchedToken:
    """What ``GetAuthorizationToken`` answered, decoded."""

    username: str
    password: str = field(repr=False)
    registry_host: str
    """The identity's own registry (``proxyEndpoint`` without the scheme)."""
    reported_expiry: datetime | None


@dataclass(frozen=True)
class IdentityToken:
    """A token as the cache serves it. ``repr`` never shows the password."""

    username: str
    password: str = field(repr=False)
    registry_host: str
    issued_at: datetime
    expires_at: datetime
    """When the operator treats it as expired: AWS's expiry, or the fallback lifetime if that is nonsense."""
    verified: bool
    """The registry accepted it at ``/v2/``."""


@dataclass(frozen=True)
class RefreshProblem:
    """Why the last refresh failed. Both fields are safe for logs, Events and status: never a credential."""

    reason: str
    message: str


class TokenRefreshError(Exception):
    """A fetch or a registry login failed for a reason the cache reports and retries."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.problem = RefreshProblem(reason, message)


@dataclass(frozen=True)
class TokenStatus:
    """One identity's state: the token to serve (if any), the last failure, and the next refresh."""

    token: IdentityToken | None
    problem: RefreshProblem | None
    consecutive_failures: int
    next_refresh: datetime
    last_success: datetime | None


@dataclass(frozen=True)
class RefreshSchedule:
    """When to refresh: ``expiresAt - lead ± jitter``; sane answers for short or nonsensical lifetimes."""

    lead: timedelta
    jitter: timedelta
    fallback_lifetime: timedelta

    def effective_expiry(self, issued_at: datetime, reported: datetime | None) -> datetime:
        plausible = reported is not None and issued_at < reported <= issued_at + MAX_PLAUSIBLE_LIFETIME
        if reported is not None and plausible:
            return reported
        return issued_at + self.fallback_lifetime

    def refresh_at(self, token: IdentityToken, spread: float) -> datetime:
        """``spread`` in [-1, 1] picks the point within the jitter window."""
        lifetime = token.expires_at - token.issued_at
        # A token living less than the lead (a short role session caps ECR's 12 h) is refreshed at half-life
        # instead of immediately, which would be a refresh storm.
        base = lifetime - self.lead if lifetime > self.lead else lifetime / 2
        base = max(base, MIN_REFRESH_INTERVAL)
        # The jitter never moves the refresh before half the base or past the expiry.
        jitter = min(self.jitter, base / 2, max(lifetime - base, timedelta(0)) / 2)
        return token.issued_at + base + jitter * spread

    def retry_at(self, failed_at: datetime, consecutive_failures: int, spread: float) -> datetime:
        first = min(FIRST_RETRY, max(MIN_REFRESH_INTERVAL, self.fallback_lifetime / 20))
        ceiling = min(MAX_RETRY, max(first, self.fallback_lifetime / 10))
        doublings = min(max(consecutive_failures - 1, 0), 16)
        delay = min(ceiling, first * 2.0**doublings)
        return failed_at + delay * (1 + RETRY_SPREAD * spread)


Fetch = Callable[[AwsIdentity], Awaitable[FetchedToken]]
Verify = Callable[[IdentityToken], Awaitable[None]]


class TokenCache:
    """Tokens per identity. ``refresh`` fetches and verifies (one at a time per identity); ``status`` reads.

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

    async def refresh(self, identity: AwsIdentity) -> TokenStatus:
        async with self._locks.setdefault(identity, asyncio.Lock()):
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
    """Checks a token the way a kubelet will use it: basic auth at the registry's ``/v2/``."""

    def __init__(self, session: aiohttp.ClientSession, host_overrides: Mapping[str, str]) -> None:
        self._session = session
        self._overrides = dict(host_overrides)

    async def __call__(self, token: IdentityToken) -> None:
        url = f"https://{registry_endpoint(token.registry_host, self._overrides)}/v2/"
        try:
            async with self._session.get(
                url,
                auth=aiohttp.BasicAuth(token.username, token.password),
                timeout=LOGIN_TIMEOUT,
                allow_redirects=False,
            ) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TokenRefreshError(
                REGISTRY_UNREACHABLE, f"{token.registry_host} could not be reached ({type(error).__name__})"
            ) from None
        if status in (401, 403):
            raise TokenRefreshError(
                REGISTRY_REJECTED_TOKEN, f"{token.registry_host} refused the new token (HTTP {status})"
            )
        if status != 200:
            raise TokenRefreshError(
                REGISTRY_UNREACHABLE, f"{token.registry_host} answered HTTP {status} at /v2/"
            )


def ecr_token_cache(aws: AwsClients, session: aiohttp.ClientSession, settings: Settings) -> TokenCache:
    """The operator's ECR tokens: fetched as each identity, checked at the registry's ``/v2/`` (through the
    host overrides, with ``session``), refreshed on the schedule the settings give."""
    return TokenCache(
        EcrTokenSource(aws),
        RegistryLogin(session, settings.registry_host_overrides),
        RefreshSchedule(
            lead=settings.token_refresh_lead,
            jitter=settings.token_refresh_jitter,
            fallback_lifetime=settings.token_fallback_lifetime,
        ),
    )
