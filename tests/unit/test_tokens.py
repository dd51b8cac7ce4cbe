"""The token cache: when it refreshes, and what it serves when AWS or the registry fails (never a storm)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_fakes import ECR_HOST, issued_token
from ecr_operator.aws.tokens import (
    AccountLookupError,
    CallerAccount,
    EcrTokenCache,
    TokenRefreshError,
    decode_authorization_token,
    registry_endpoint,
)
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.tokens import (
    MAX_RETRY,
    REGISTRY_REJECTED_TOKEN,
    TOKEN_REFRESH_FAILED,
    FetchedToken,
    IdentityToken,
    RefreshProblem,
    RefreshSchedule,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
IDENTITY = AwsIdentity(region="us-east-1")
DEFAULTS = RefreshSchedule(
    lead=timedelta(hours=6), jitter=timedelta(minutes=10), fallback_lifetime=timedelta(hours=12)
)
MOTO_EXPIRY = datetime(2015, 1, 1, tzinfo=UTC)


# --- the schedule -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reported",
    [None, MOTO_EXPIRY, T0, T0 - timedelta(seconds=1), T0 + timedelta(days=3650)],
    ids=["missing", "moto-2015", "at-issue", "before-issue", "ten-years"],
)
def test_a_nonsensical_expiry_is_replaced_by_the_fallback_lifetime(reported: datetime | None) -> None:
    assert DEFAULTS.effective_expiry(T0, reported) == T0 + timedelta(hours=12)


def test_a_plausible_expiry_is_believed() -> None:
    reported = T0 + timedelta(hours=11, minutes=59)

    assert DEFAULTS.effective_expiry(T0, reported) == reported


@pytest.mark.parametrize(("spread", "offset"), [(-1.0, -10), (0.0, 0), (1.0, 10)])
def test_refresh_is_lead_before_expiry_plus_or_minus_jitter(spread: float, offset: int) -> None:
    token = issued_token(T0, timedelta(hours=12))

    assert DEFAULTS.refresh_at(token, spread) == T0 + timedelta(hours=6, minutes=offset)


def test_a_token_living_less_than_the_lead_is_refreshed_at_half_life_not_at_once() -> None:
    # An assumed role's 1 h session caps the ECR token at 1 h, well under the 6 h lead.
    token = issued_token(T0, timedelta(hours=1))

    refresh = DEFAULTS.refresh_at(token, 0.0)

    assert refresh == T0 + timedelta(minutes=30)


@given(
    lifetime=st.integers(min_value=3, max_value=86_400),
    lead=st.integers(min_value=1, max_value=86_400),
    jitter=st.integers(min_value=0, max_value=86_400),
    spread=st.floats(min_value=-1.0, max_value=1.0),
)
def test_a_refresh_always_falls_within_the_tokens_life(
    lifetime: int, lead: int, jitter: int, spread: float
) -> None:
    schedule = RefreshSchedule(timedelta(seconds=lead), timedelta(seconds=jitter), timedelta(hours=12))
    token = issued_token(T0, timedelta(seconds=lifetime))

    refresh = schedule.refresh_at(token, spread)

    assert token.issued_at + timedelta(seconds=0.5) <= refresh < token.expires_at


def test_failed_refreshes_back_off_exponentially_up_to_a_ceiling() -> None:
    delays = [(DEFAULTS.retry_at(T0, failures, 0.0) - T0).total_seconds() for failures in range(1, 10)]

    assert delays[:4] == [10, 20, 40, 80]
    assert delays[-1] == MAX_RETRY.total_seconds()
    assert delays == sorted(delays)


def test_retries_of_a_seconds_long_token_come_within_its_life() -> None:
    schedule = RefreshSchedule(timedelta(seconds=1), timedelta(0), fallback_lifetime=timedelta(seconds=3))

    delays = [(schedule.retry_at(T0, failures, 1.0) - T0).total_seconds() for failures in (1, 5, 50)]

    assert all(delay <= 1.2 for delay in delays)


# --- the cache ----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class FakeEcr:
    """Answers GetAuthorizationToken like moto (expiry in 2015) unless told to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing: str | None = None
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, identity: AwsIdentity) -> FetchedToken:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if self.failing:
                raise TokenRefreshError(
                    TOKEN_REFRESH_FAILED, f"GetAuthorizationToken failed ({self.failing})"
                )
            return FetchedToken("AWS", f"password-{self.calls}", ECR_HOST, MOTO_EXPIRY)
        finally:
            self.in_flight -= 1


class FakeRegistry:
    def __init__(self) -> None:
        self.refusing = False
        self.checked: list[str] = []

    async def __call__(self, token: IdentityToken) -> None:
        self.checked.append(token.password)
        if self.refusing:
            raise TokenRefreshError(REGISTRY_REJECTED_TOKEN, f"{token.registry_host} refused the new token")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ecr() -> FakeEcr:
    return FakeEcr()


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def cache(clock: FakeClock, ecr: FakeEcr, registry: FakeRegistry) -> EcrTokenCache:
    return EcrTokenCache(ecr, registry, DEFAULTS, clock=clock, spread=lambda: 0.0)


async def test_the_first_refresh_serves_a_verified_token_with_the_fallback_lifetime(
    cache: EcrTokenCache, registry: FakeRegistry
) -> None:
    assert cache.seconds_until_refresh(IDENTITY) == 0.0

    status = await cache.refresh(IDENTITY)

    assert status.token is not None
    assert status.token.verified
    assert status.token.expires_at == T0 + timedelta(hours=12)
    assert status.next_refresh == T0 + timedelta(hours=6)
    assert status.problem is None
    assert registry.checked == ["password-1"]
    assert cache.seconds_until_refresh(IDENTITY) == 6 * 3600


async def test_a_failed_fetch_keeps_serving_the_previous_token_and_backs_off(
    cache: EcrTokenCache, clock: FakeClock, ecr: FakeEcr
) -> None:
    first = await cache.refresh(IDENTITY)
    clock.advance(timedelta(hours=6))
    ecr.failing = "AccessDeniedException"

    failed = await cache.refresh(IDENTITY)
    first_failure = clock.now
    clock.advance(timedelta(seconds=10))
    failed_again = await cache.refresh(IDENTITY)

    assert failed.token == first.token
    assert failed.problem is not None
    assert failed.problem.reason == TOKEN_REFRESH_FAILED
    assert "AccessDeniedException" in failed.problem.message
    assert failed.next_refresh == first_failure + timedelta(seconds=10)
    assert failed_again.token == first.token
    assert failed_again.consecutive_failures == 2
    assert failed_again.next_refresh == clock.now + timedelta(seconds=20)
    assert failed_again.last_success == T0


async def test_a_token_the_registry_refuses_does_not_replace_a_working_one(
    cache: EcrTokenCache, clock: FakeClock, registry: FakeRegistry
) -> None:
    first = await cache.refresh(IDENTITY)
    clock.advance(timedelta(hours=6))
    registry.refusing = True

    refused = await cache.refresh(IDENTITY)

    assert refused.token == first.token
    assert refused.problem is not None
    assert refused.problem.reason == REGISTRY_REJECTED_TOKEN


async def test_once_the_working_token_expired_a_refused_one_is_served_rather_than_nothing(
    cache: EcrTokenCache, clock: FakeClock, registry: FakeRegistry
) -> None:
    await cache.refresh(IDENTITY)
    registry.refusing = True
    clock.advance(timedelta(hours=12, seconds=1))

    refused = await cache.refresh(IDENTITY)

    assert refused.token is not None
    assert refused.token.password == "password-2"
    assert not refused.token.verified
    assert refused.problem is not None


async def test_without_any_previous_token_a_refused_one_is_served_unverified(
    cache: EcrTokenCache, registry: FakeRegistry
) -> None:
    registry.refusing = True

    status = await cache.refresh(IDENTITY)

    assert status.token is not None
    assert not status.token.verified


async def test_a_success_after_failures_clears_the_problem(
    cache: EcrTokenCache, clock: FakeClock, ecr: FakeEcr
) -> None:
    ecr.failing = "ThrottlingException"
    await cache.refresh(IDENTITY)
    ecr.failing = None
    clock.advance(timedelta(seconds=10))

    recovered = await cache.refresh(IDENTITY)

    assert recovered.problem is None
    assert recovered.consecutive_failures == 0
    assert recovered.last_success == clock.now


async def test_concurrent_refreshes_of_one_identity_never_overlap(cache: EcrTokenCache, ecr: FakeEcr) -> None:
    await asyncio.gather(*(cache.refresh(IDENTITY) for _ in range(5)))

    assert ecr.most_in_flight == 1


async def test_identities_are_cached_apart(cache: EcrTokenCache, ecr: FakeEcr) -> None:
    other = AwsIdentity(region="us-west-2", role_arn="arn:aws:iam::210987654321:role/puller")

    await cache.refresh(IDENTITY)
    await cache.refresh(other)
    cache.forget(other)

    assert ecr.calls == 2
    assert cache.identities() == {IDENTITY}
    assert cache.status(other) is None


async def test_users_sharing_an_identity_fetch_once_per_cycle(
    cache: EcrTokenCache, ecr: FakeEcr, clock: FakeClock
) -> None:
    # A pull-secret refresh loop and a mirror push on one identity, at the same moment, twice a cycle.
    first = await asyncio.gather(cache.refresh_if_due(IDENTITY), cache.refresh_if_due(IDENTITY))
    assert ecr.calls == 1
    assert first[0] is first[1]

    clock.advance(timedelta(hours=6, minutes=1))  # past expiry - lead: the next cycle
    assert cache.due(IDENTITY)
    await asyncio.gather(cache.refresh_if_due(IDENTITY), cache.refresh_if_due(IDENTITY))

    assert ecr.calls == 2
    assert not cache.due(IDENTITY)


async def test_an_expired_token_is_due_even_while_a_retry_waits(
    cache: EcrTokenCache, ecr: FakeEcr, clock: FakeClock
) -> None:
    await cache.refresh(IDENTITY)
    ecr.failing = "ThrottlingException"
    clock.advance(timedelta(hours=12, seconds=1))
    await cache.refresh(IDENTITY)  # fails: the expired token stays, a retry is scheduled

    assert cache.due(IDENTITY)
    await cache.refresh_if_due(IDENTITY)
    assert ecr.calls == 3


def test_the_password_never_shows_in_a_repr() -> None:
    token = IdentityToken("AWS", "s3cr3t-pw", ECR_HOST, T0, T0, True)
    fetched = FetchedToken("AWS", "s3cr3t-pw", ECR_HOST, None)

    assert "s3cr3t-pw" not in repr(token)
    assert "s3cr3t-pw" not in repr(fetched)


# --- decoding and endpoints ---------------------------------------------------------------------------


def test_an_ecr_token_decodes_to_user_and_password() -> None:
    token = base64.b64encode(b"AWS:123456789012-auth-token").decode()

    assert decode_authorization_token(token) == ("AWS", "123456789012-auth-token")


@pytest.mark.parametrize("token", ["not base64!", base64.b64encode(b"no-colon").decode(), ""])
def test_a_malformed_token_is_reported_without_echoing_it(token: str) -> None:
    with pytest.raises(TokenRefreshError) as raised:
        decode_authorization_token(token)

    assert raised.value.problem == RefreshProblem(
        TOKEN_REFRESH_FAILED, "GetAuthorizationToken returned a malformed token"
    )


def test_registry_endpoints_follow_overrides_then_the_wildcard() -> None:
    overrides = {ECR_HOST: "127.0.0.1:5000", "*": "127.0.0.1:6000"}

    assert registry_endpoint(ECR_HOST, overrides) == "127.0.0.1:5000"
    assert registry_endpoint("210987654321.dkr.ecr.eu-west-1.amazonaws.com", overrides) == "127.0.0.1:6000"
    assert registry_endpoint(ECR_HOST, {}) == ECR_HOST


# --- the operator's own account (for pull role templates) ---------------------------------------------


async def test_the_operators_account_is_asked_once_however_many_callers() -> None:
    asked: list[str] = []

    async def lookup(region: str) -> str:
        asked.append(region)
        await asyncio.sleep(0.01)
        return "123456789012"

    accounts = CallerAccount(lookup)
    assert accounts.known is None

    answers = await asyncio.gather(*(accounts.resolve(region) for region in ("us-east-1", "eu-west-1") * 5))

    assert set(answers) == {"123456789012"}
    assert asked == ["us-east-1"]
    assert accounts.known == "123456789012"


async def test_a_failed_account_lookup_is_not_remembered() -> None:
    answers: list[str | None] = [None, "123456789012"]

    async def lookup(region: str) -> str:
        answer = answers.pop(0)
        if answer is None:
            raise AccountLookupError("GetCallerIdentity failed (ExpiredToken)")
        return answer

    accounts = CallerAccount(lookup)

    with pytest.raises(AccountLookupError):
        await accounts.resolve("us-east-1")
    assert accounts.known is None
    assert await accounts.resolve("us-east-1") == "123456789012"
