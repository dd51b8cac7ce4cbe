"""Typed errors of the registry client.

Every failure a caller may want to branch on has its own class; the OCI error codes a registry put in the
response body (``TOOMANYREQUESTS``, ``DENIED``, ``MANIFEST_UNKNOWN``...) are kept on the exception.
Messages never contain credentials or query strings (pre-signed blob URLs carry signatures there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class InvalidReference(ValueError):
    """An image reference, repository name, tag or digest does not follow the OCI grammar."""


class InvalidChallenge(ValueError):
    """A ``WWW-Authenticate`` header could not be parsed."""


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


class ConnectionFailed(RegistryError):
    """The connection failed, was reset, or timed out; another attempt may succeed."""

    @property
    def retryable(self) -> bool:
        return True


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


def is_retryable_status(status: int) -> bool:
    # 501 Not Implemented will not change on retry; the other 5xx and 429 usually do.
    return status == 429 or (500 <= status <= 599 and status != 501)


def parse_error_body(body: bytes) -> tuple[OciErrorDetail, ...]:
    """Read the OCI ``{"errors": [{"code", "message", "detail"}]}`` body; anything else yields ()."""
    try:
        document = json.loads(body)
    except ValueError:
        return ()
    if not isinstance(document, dict):
        return ()
    entries = document.get("errors")
    if not isinstance(entries, list):
        return ()
    details = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("code"), str):
            message = entry.get("message")
            details.append(
                OciErrorDetail(
                    code=entry["code"].upper(), message=message if isinstance(message, str) else ""
                )
            )
    return tuple(details)
