"""ECR pull tokens as values: what AWS answered, what the cache serves, why a refresh failed, and when to
refresh next. Pure: the cache (``aws.tokens``) and the pull-secret plans (``reconcile.pullsecrets``) share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

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

# Reasons (CamelCase, for conditions and Events) of a failed refresh.
TOKEN_REFRESH_FAILED = "TokenRefreshFailed"  # noqa: S105 -- a reason, not a credential
REGISTRY_REJECTED_TOKEN = "RegistryRejectedToken"  # noqa: S105 -- a reason, not a credential
REGISTRY_UNREACHABLE = "RegistryUnreachable"


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
        # Not ``reconcile.backoff``: a ±20 % spread around the doubling (never as early as half of it), and
        # both ends shrink with the fallback lifetime, so a seconds-long token is retried within its life.
        first = min(FIRST_RETRY, max(MIN_REFRESH_INTERVAL, self.fallback_lifetime / 20))
        ceiling = min(MAX_RETRY, max(first, self.fallback_lifetime / 10))
        doublings = min(max(consecutive_failures - 1, 0), 16)
        delay = min(ceiling, first * 2.0**doublings)
        return failed_at + delay * (1 + RETRY_SPREAD * spread)
