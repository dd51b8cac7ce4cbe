"""Typed errors of the registry client.

Every failure a caller may want to branch on has its own class; the OCI error codes a registry put in the
response body (``TOOMANYREQUESTS``, ``DENIED``, ``MANIFEST_UNKNOWN``...) are kept on the exception.
Messages never contain credentials or query strings (pre-signed blob URLs carry signatures there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class OciErrorDetail:
    """One entry of the ``errors`` array of an OCI distribution error body."""

    code: str
    message: str


class RegistryError(Exception):
    """A registry answered with an error, or broke the protocol.

    ``status`` is the HTTP status (None when the failure is not an HTTP answer), ``codes`` the OCI error
    codes of the body, ``retry_after`` the seconds the registry asked us to wait (429/503).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: tuple[OciErrorDetail, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = errors
        self.retry_after = retry_after

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(error.code for error in self.errors)

    @property
    def retryable(self) -> bool:
        """Throttling and server-side failures are worth another attempt; nothing else is."""
        return self.status is not None and is_retryable_status(self.status)


class InvalidReference(RegistryError, ValueError):
    """An image reference, repository name, tag or digest does not follow the OCI grammar.

    Also a ValueError, as it always was; a RegistryError so that one ``except RegistryError`` catches
    every failure of this package, including a malformed name an upstream registry handed out.
    """


class MalformedResponse(RegistryError):
    """The registry broke the protocol: a header, body, manifest, tag or link outside its grammar."""


class InvalidChallenge(MalformedResponse, ValueError):
    """A ``WWW-Authenticate`` header could not be parsed."""


class LimitExceeded(RegistryError):
    """An upstream answer exceeds a bound this client keeps (``limit`` names it, ``bound`` its value):
    too many tag pages or tags, referrers, index children, nesting, an oversized token or header.
    Not retryable: the registry would answer the same next time."""

    def __init__(self, message: str, *, limit: str, bound: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.bound = bound


class PaginationLoop(MalformedResponse):
    """A paginated listing (tags, referrers) named a page URL, or served page content, seen before."""


class ConnectionFailed(RegistryError):
    """The connection failed, was reset, or timed out; another attempt may succeed."""

    @property
    def retryable(self) -> bool:
        return True


class DeadlineExceeded(ConnectionFailed):
    """A request took longer than its deadline (connect, idle read, whole request) or a blob stream
    stayed under its minimum throughput. Retryable by the caller later, but not retried at once within
    the request: a registry this slow would most likely hold the worker again."""


class AuthError(RegistryError):
    """Credentials missing, refused, or insufficient (401/403, DENIED, UNAUTHORIZED)."""


class NotFound(RegistryError):
    """The manifest, blob, tag or repository does not exist (404)."""


class ManifestTooLarge(RegistryError):
    """A manifest is larger than the 4 MiB every registry must accept; larger ones are refused."""


class DigestMismatch(RegistryError):
    """Content did not hash to the digest (or size) it was announced with."""


class UnsupportedMediaType(RegistryError):
    """A manifest media type this client does not copy (e.g. Docker schema 1)."""


class NoMatchingPlatform(RegistryError):
    """A platform filter selects nothing in an image index: none of the requested platforms is there."""

    def __init__(self, message: str, *, missing_platforms: tuple[str, ...]) -> None:
        super().__init__(message)
        self.missing_platforms = missing_platforms


class SourceRefused(RegistryError):
    """The source host (or a host it redirected to) is in a network the operator may not read from."""


MAX_ERROR_DETAILS = 5
MAX_ERROR_MESSAGE = 200


def is_retryable_status(status: int) -> bool:
    # 501 Not Implemented will not change on retry; the other 5xx and 429 usually do.
    return status == 429 or (500 <= status <= 599 and status != 501)


def parse_error_body(body: bytes) -> tuple[OciErrorDetail, ...]:
    """Read the OCI ``{"errors": [{"code", "message", "detail"}]}`` body; anything else yields ()."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return ()
    if not isinstance(document, dict):
        return ()
    entries = document.get("errors")
    if not isinstance(entries, list):
        return ()
    details = []
    # A hostile body can hold thousands of long entries; a few short ones tell the story.
    for entry in entries[:MAX_ERROR_DETAILS]:
        if isinstance(entry, dict) and isinstance(entry.get("code"), str):
            message = entry.get("message")
            details.append(
                OciErrorDetail(
                    code=_clip(entry["code"].upper(), 64),
                    message=_clip(message, MAX_ERROR_MESSAGE) if isinstance(message, str) else "",
                )
            )
    return tuple(details)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
