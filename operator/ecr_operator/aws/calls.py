"""Blocking boto3 calls made awaitable, with one typed failure instead of botocore's exception zoo.

The calls run in the operator's bounded thread pool (``asyncio.to_thread`` uses the loop's default
executor, which ``Runtime.start`` sets). botocore has already retried throttling and 5xx by the time an
``AwsCallFailed`` is raised, so the caller decides between backing off and telling a human.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ecr_operator.aws.session import error_code, error_message, is_throttling

T = TypeVar("T")

NETWORK_ERROR = "NetworkError"
NO_CREDENTIALS = "NoCredentials"


class AwsCallFailed(Exception):
    """An AWS API call failed after the SDK's own retries."""

    def __init__(
        self,
        service: str,
        operation: str,
        code: str,
        message: str,
        *,
        http_status: int = 0,
        throttled: bool = False,
    ) -> None:
        super().__init__(f"{service}:{operation} failed with {code}: {message}")
        self.service = service
        self.operation = operation
        self.code = code
        self.message = message
        self.http_status = http_status
        self.throttled = throttled

    @classmethod
    def from_error(cls, service: str, operation: str, error: Exception) -> AwsCallFailed:
        if isinstance(error, ClientError):
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if error.operation_name == "AssumeRole":
                # The role's credentials are fetched lazily, inside this call: the refusal is STS's.
                service, operation = "sts", "AssumeRole"
            return cls(
                service,
                operation,
                error_code(error),
                error_message(error),
                http_status=status,
                throttled=is_throttling(error),
            )
        if isinstance(error, NoCredentialsError):
            return cls(service, operation, NO_CREDENTIALS, "the operator has no AWS credentials")
        # Connection refused/reset, timeouts, TLS failures: botocore retried them already.
        return cls(service, operation, NETWORK_ERROR, str(error))


class RequestRate:
    """At most ``per_second`` requests a second, evenly spaced: each ``wait`` takes the next free slot."""

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._spacing = 1.0 / per_second
        self._clock = clock
        self._next = clock()

    async def wait(self) -> None:
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self._spacing
        if slot > now:
            await asyncio.sleep(slot - now)


_pacing: ContextVar[RequestRate | None] = ContextVar("aws_request_pacing", default=None)


@contextmanager
def paced_by(rate: RequestRate) -> Iterator[None]:
    """Every AWS call made inside (tasks started inside included) waits for ``rate``: background work such as
    a drift pass never bursts, while reconciles of new specs, outside, are not slowed by it."""
    token = _pacing.set(rate)
    try:
        yield
    finally:
        _pacing.reset(token)


async def call_aws(service: str, operation: str, function: Callable[..., T], **parameters: Any) -> T:
    """Run one boto3 call in the thread pool; raise ``AwsCallFailed`` when it fails."""
    rate = _pacing.get()
    if rate is not None:
        await rate.wait()
    try:
        return await asyncio.to_thread(function, **parameters)
    except (ClientError, BotoCoreError) as error:
        raise AwsCallFailed.from_error(service, operation, error) from error


async def call_aws_unless_absent(
    absent: str, service: str, operation: str, function: Callable[..., T], **parameters: Any
) -> T | None:
    """``call_aws``, or None when AWS answers that the call's subject does not exist (error code ``absent``):
    reading what is not there finds nothing, and deleting what is gone already is a success."""
    try:
        return await call_aws(service, operation, function, **parameters)
    except AwsCallFailed as error:
        if error.code == absent:
            return None
        raise
