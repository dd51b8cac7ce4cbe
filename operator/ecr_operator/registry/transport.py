"""HTTP for the registry client: TLS, the redirect policy, retries.

The client speaks to an ``HttpSender`` (one HTTP exchange, no redirects followed); production uses
``AiohttpSender`` over the process's single aiohttp session. Redirects are followed here, by hand, because
a registry sends blob downloads to another host (S3, a CDN) and the registry's ``Authorization`` must
never travel there.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDictProxy
from yarl import URL

from ecr_operator.registry.errors import ConnectionFailed, RegistryError

log = logging.getLogger(__name__)

Body = bytes | AsyncIterable[bytes] | None
T = TypeVar("T")

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
CHUNK_SIZE = 1024 * 1024
# Headers that carry credentials; dropped whenever a redirect leaves the origin they were meant for.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class HttpResponse(Protocol):
    """The part of an HTTP response the client uses. ``close`` must be called (or the body consumed)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    def iter_chunks(self, size: int) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class HttpSender(Protocol):
    """One HTTP exchange. Never follows redirects; raises ConnectionFailed for network failures."""

    async def send(self, method: str, url: URL, headers: Mapping[str, str], body: Body) -> HttpResponse: ...


def build_ssl_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """System CAs plus, when given, the PEM certificates of ``ca_bundle``. Verification is always on."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


def create_session(
    *,
    ca_bundle: Path | None = None,
    connections: int = 32,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """An aiohttp session fit for registry traffic; create one per process and share it.

    Bodies are never decompressed (a blob's digest is over the bytes as stored) and there is no total
    timeout (a layer can take long), but a connection that stops delivering data fails after 2 minutes.
    ``resolver`` replaces aiohttp's default name resolution (see ``guard.GuardedResolver``).
    """
    connector = aiohttp.TCPConnector(ssl=build_ssl_context(ca_bundle), limit=connections, resolver=resolver)
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=120)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse, what: str) -> None:
        self._response = response
        self._what = what

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._response.headers

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(size):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionFailed(f"{self._what}: connection lost while reading: {exc!r}") from exc

    def close(self) -> None:
        self._response.release()


class AiohttpSender:
    """HttpSender over an aiohttp session (``create_session``, or the caller's own)."""

    def __init__(self, session: aiohttp.ClientSession, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._session = session
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    async def send(self, method: str, url: URL, headers: Mapping[str, str], body: Body) -> HttpResponse:
        what = f"{method} {redact(url)}"
        try:
            response = await self._session.request(
                method, url, headers=dict(headers), data=body, allow_redirects=False, ssl=self._ssl
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionFailed(f"{what}: {exc!r}") from exc
        return _AiohttpResponse(response, what)


def redact(url: URL) -> str:
    """The URL without query or credentials: pre-signed storage URLs carry their signature there."""
    return str(url.with_query(None).with_user(None).with_fragment(None))


def origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, (url.host or "").lower(), url.port)


def redirect_headers(source: URL, target: URL, headers: Mapping[str, str]) -> dict[str, str]:
    """Headers to send to a redirect ``target``: credentials only stay on the same origin.

    Blob downloads are redirected to object storage with its own (pre-signed) credentials; forwarding the
    registry's token there would leak it and, on S3, fail the request. A downgrade from HTTPS to plain
    HTTP is refused outright.
    """
    if source.scheme == "https" and target.scheme != "https":
        raise RegistryError(f"refusing redirect from {redact(source)} to insecure {redact(target)}")
    if origin(source) == origin(target):
        return dict(headers)
    return {name: value for name, value in headers.items() if name.lower() not in _CREDENTIAL_HEADERS}


async def send_following_redirects(
    sender: HttpSender, method: str, url: URL, headers: Mapping[str, str], body: Body = None
) -> tuple[HttpResponse, URL]:
    """Send, following up to MAX_REDIRECTS redirects; returns the final response and its URL."""
    current_headers = dict(headers)
    for _ in range(MAX_REDIRECTS + 1):
        response = await sender.send(method, url, current_headers, body)
        if response.status not in REDIRECT_STATUSES:
            return response, url
        location = response.headers.get("Location")
        response.close()
        if not location:
            raise RegistryError(f"{method} {redact(url)}: redirect without Location", status=response.status)
        if body is not None and not isinstance(body, bytes):
            raise RegistryError(f"{method} {redact(url)}: cannot replay a streamed body to a redirect")
        target = url.join(URL(location, encoded=True))
        current_headers = redirect_headers(url, target, current_headers)
        if response.status == 303 and method != "HEAD":
            method, body = "GET", None
        url = target
    raise RegistryError(f"{method} {redact(url)}: more than {MAX_REDIRECTS} redirects")


async def read_body(
    response: HttpResponse, limit: int, what: str, *, too_large: type[RegistryError] = RegistryError
) -> bytes:
    """Read a whole (small) body, refusing more than ``limit`` bytes; the response is closed."""
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in response.iter_chunks(64 * 1024):
            total += len(chunk)
            if total > limit:
                raise too_large(f"{what}: response larger than {limit} bytes")
            chunks.append(chunk)
    finally:
        response.close()
    return b"".join(chunks)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, float(when.timestamp()) - current)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of throttled (429), failed (5xx) and broken (connection) requests.

    Without ``Retry-After`` the delay is exponential with full jitter. A ``Retry-After`` is honoured as
    given, unless it exceeds ``max_retry_after``: then the error is raised at once, carrying the delay, so
    the caller reschedules instead of holding a worker.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def delay(
        self, attempt: int, retry_after: float | None, jitter: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait after failed ``attempt`` (1-based), or None when not worth waiting for."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return jitter() * min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))


async def retrying(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``operation`` until it succeeds, fails for good, or ``policy`` runs out of attempts."""
    attempt = 1
    while True:
        try:
            return await operation()
        except RegistryError as exc:
            if not exc.retryable or attempt >= policy.attempts:
                raise
            delay = policy.delay(attempt, exc.retry_after)
            if delay is None:
                raise
            log.info(
                "registry request failed, retrying",
                extra={"what": what, "attempt": attempt, "delay": round(delay, 3), "error": str(exc)},
            )
            await sleep(delay)
            attempt += 1
