"""Content digests: grammar, computing, and verifying while streaming."""

from __future__ import annotations

import hashlib
import re

from ecr_operator.registry.errors import DigestMismatch, InvalidReference

# Lengths of the hex encodings of the algorithms the OCI image spec registers; others cannot be verified.
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
MAX_DIGEST_LENGTH = len("sha512:") + 128
# OCI image-spec descriptor grammar: algorithm-component ([+._-] algorithm-component)* ":" encoded.
_DIGEST = re.compile(r"(?P<algorithm>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<encoded>[a-zA-Z0-9=_-]+)")


def validate_digest(text: str) -> str:
    """Return ``text`` if it is a digest this client can verify, else raise InvalidReference."""
    match = _DIGEST.fullmatch(text) if isinstance(text, str) and len(text) <= MAX_DIGEST_LENGTH else None
    if match is None:
        shown = text[:80] if isinstance(text, str) else text
        raise InvalidReference(f"invalid digest {shown!r}: expected <algorithm>:<hex>, e.g. sha256:<64 hex>")
    algorithm, encoded = match["algorithm"], match["encoded"]
    length = _HEX_LENGTHS.get(algorithm)
    if length is None:
        raise InvalidReference(f"unsupported digest algorithm {algorithm!r} in {text!r} (sha256, sha512)")
    if len(encoded) != length or not re.fullmatch(r"[0-9a-f]+", encoded):
        raise InvalidReference(f"invalid {algorithm} digest {text!r}: expected {length} lowercase hex digits")
    return text


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def algorithm_of(digest: str) -> str:
    return digest.partition(":")[0]


class StreamVerifier:
    """Hashes chunks as they pass and checks digest and size at the end.

    Raises DigestMismatch as soon as more bytes arrive than announced, so an oversized stream is cut
    before it reaches the destination.
    """

    def __init__(self, digest: str, size: int) -> None:
        validate_digest(digest)
        self.digest = digest
        self.size = size
        self.received = 0
        self._hash = hashlib.new(algorithm_of(digest))

    def update(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.size:
            raise DigestMismatch(f"blob {self.digest}: more than the announced {self.size} bytes")
        self._hash.update(chunk)

    def verify(self) -> None:
        if self.received != self.size:
            raise DigestMismatch(f"blob {self.digest}: got {self.received} bytes, announced {self.size}")
        actual = f"{algorithm_of(self.digest)}:{self._hash.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatch(f"blob {self.digest}: content hashes to {actual}")
