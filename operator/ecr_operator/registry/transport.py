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

from ecr_operator.registry.errors import ConnectionFailed, DeadlineExceeded, MalformedResponse, RegistryError
from ecr_operator.registry.limits import DEFAULT_DEADLINES, Deadlines

log = logging.getLogger(__name__)

Body = bytes | AsyncIterable[bytes] | None
T = TypeVar("T")

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
CHUNK_SIZE = 1024 * 1024
# Longer Location / Retry-After values are not from a real registry; refusing them keeps parsing cheap.
MAX_LOCATION = 8 * 1024
MAX_RETRY_AFTER_HEADER = 64
# A Retry-After beyond a day is treated as a day: the value is only ever compared with caps far below.
RETRY_AFTER_CEILING = 86_400.0
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
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> aiohttp.ClientSession:
    """An aiohttp session fit for registry traffic; create one per process and share it.

    Bodies are never decompressed (a blob's digest is over the bytes as stored). The session enforces
    ``deadlines.connect`` and ``deadlines.read`` (longest silence) on every request; it has no total
    timeout, because a layer can take long: RegistryClient puts ``deadlines.request`` on every small
    exchange and a throughput floor on blob streams. ``resolver`` replaces aiohttp's default name
    resolution (see ``guard.GuardedResolver``).
    """
    connector = aiohttp.TCPConnector(ssl=build_ssl_context(ca_bundle), limit=connections, resolver=resolver)
    timeout = aiohttp.ClientTimeout(
        total=None, connect=deadlines.connect, sock_connect=deadlines.connect, sock_read=deadlines.read
    )
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


@dataclass(frozen=True, eq=False)
class _AiohttpResponse:
    response: aiohttp.ClientResponse
    what: str

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self.response.headers

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.content.iter_chunked(size):
                yield chunk
        except TimeoutError as exc:
            raise DeadlineExceeded(f"{self.what}: no data within the read deadline") from exc
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"{self.what}: connection lost while reading: {exc!r}") from exc

    def close(self) -> None:
        self.response.release()


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
        except TimeoutError as exc:
            raise DeadlineExceeded(f"{what}: no answer within the connect/read deadline") from exc
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"{what}: {exc!r}") from exc
        except (ValueError, TypeError, UnicodeError) as exc:
            # aiohttp refuses a header with CR/LF or a URL it cannot encode: values an upstream chose.
            raise MalformedResponse(f"{what}: request could not be built: {type(exc).__name__}") from exc
        return _AiohttpResponse(response, what)


def redact(url: URL) -> str:
    """The URL without query or credentials: pre-signed storage URLs carry their signature there."""
    try:
        return str(url.with_query(None).with_user(None).with_fragment(None))
    except (ValueError, TypeError):  # yarl refuses some of this for URLs without a host
        return str(url).split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]


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
        target = resolve_location(url, location, what=f"{method} {redact(url)}: redirect")
        current_headers = redirect_headers(url, target, current_headers)
        if response.status == 303 and method != "HEAD":
            method, body = "GET", None
        url = target
    raise RegistryError(f"{method} {redact(url)}: more than {MAX_REDIRECTS} redirects")


def resolve_location(base: URL, location: str, *, what: str) -> URL:
    """An upstream ``Location`` (or ``Link`` target) resolved against ``base``; only absolute http(s)
    URLs with a host come out, anything else is a MalformedResponse."""
    if len(location) > MAX_LOCATION:
        raise MalformedResponse(f"{what}: location longer than {MAX_LOCATION} characters")
    try:
        target = base.join(URL(location, encoded=True))
        host = target.host
    except (ValueError, TypeError, UnicodeError) as exc:
        raise MalformedResponse(f"{what}: invalid location {location[:100]!r}") from exc
    if target.scheme not in ("http", "https") or not host:
        raise MalformedResponse(f"{what}: location {redact(target)[:200]!r} is not an http(s) URL")
    return target


async def within(seconds: float, operation: Callable[[], Awaitable[T]], *, what: str) -> T:
    """``operation`` under a total deadline: DeadlineExceeded when it is not done in ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await operation()
    except TimeoutError as exc:
        raise DeadlineExceeded(f"{what}: not answered in full within {seconds:g} s") from exc


@dataclass(frozen=True, eq=False)
class PacedResponse:
    """An HttpResponse whose body must keep flowing: no silence longer than ``deadlines.read``, and
    each ``deadlines.blob_window`` seconds spent waiting for data must bring ``blob_min_rate`` bytes per
    second on average. Only time spent waiting for the source counts, so a slow destination (which
    stops us reading) is never blamed on the source. A blob trickled a byte at a time fails in one
    window instead of holding a worker for days."""

    inner: HttpResponse
    deadlines: Deadlines
    what: str
    clock: Callable[[], float] = time.monotonic

    @property
    def status(self) -> int:
        return self.inner.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self.inner.headers

    def close(self) -> None:
        self.inner.close()

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        deadlines = self.deadlines
        wanted = deadlines.blob_min_rate * deadlines.blob_window
        chunks = aiter(self.inner.iter_chunks(size))
        waited, received = 0.0, 0
        try:
            while True:
                budget = deadlines.read
                if wanted > 0:
                    budget = min(budget, deadlines.blob_window - waited)
                started = self.clock()
                try:
                    async with asyncio.timeout(max(budget, 0.0)):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise self._too_slow(received, budget) from exc
                waited += self.clock() - started
                received += len(chunk)
                if wanted > 0:
                    if received >= wanted:
                        waited, received = 0.0, 0
                    elif waited >= deadlines.blob_window:
                        raise self._too_slow(received, 0.0)
                yield chunk
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    def _too_slow(self, received: int, budget: float) -> DeadlineExceeded:
        deadlines = self.deadlines
        if budget >= deadlines.read:
            return DeadlineExceeded(f"{self.what}: no data for {deadlines.read:g} s")
        return DeadlineExceeded(
            f"{self.what}: {received} bytes in {deadlines.blob_window:g} s, below the minimum of"
            f" {deadlines.blob_min_rate:g} bytes/s"
        )


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
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent/invalid.

    Never raises. Only ASCII digits count as delta-seconds (``str.isdigit`` also accepts ``²`` and other
    Unicode digits, which ``float`` refuses); values are clamped to [0, RETRY_AFTER_CEILING], so a
    thousand-digit number costs nothing and still reads as "too long to wait".
    """
    if not value or len(value) > MAX_RETRY_AFTER_HEADER:
        return None
    value = value.strip(" \t")
    if value.isascii() and value.isdigit():
        return RETRY_AFTER_CEILING if len(value) > 9 else min(float(int(value)), RETRY_AFTER_CEILING)
    if not value.isascii():
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            return None
        seconds = float(when.timestamp()) - (time.time() if now is None else now)
    except (TypeError, ValueError, OverflowError, IndexError, AttributeError):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CEILING)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of throttled (429), failed (5xx) and broken (connection) requests.

    Without ``Retry-After`` the delay is exponential with full jitter. A ``Retry-After`` is honoured as
    given, unless it exceeds ``max_retry_after``: then the error is raised at once, carrying the delay
    (``RegistryError.retry_after``), so the caller reschedules instead of holding a worker. ``max_wait``
    bounds the seconds slept across all retries of one operation the same way. A DeadlineExceeded is not
    retried at once: a registry that slow would hold the worker again (the caller retries later).
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0
    max_retry_after: float = 20.0
    max_wait: float = 60.0

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
    slept = 0.0
    while True:
        try:
            return await operation()
        except RegistryError as exc:
            if not exc.retryable or isinstance(exc, DeadlineExceeded) or attempt >= policy.attempts:
                raise
            delay = policy.delay(attempt, exc.retry_after)
            if delay is None or slept + delay > policy.max_wait:
                raise
            slept += delay
            log.info(
                "registry request failed, retrying",
                extra={"what": what, "attempt": attempt, "delay": round(delay, 3), "error": str(exc)},
            )
            await sleep(delay)
            attempt += 1
