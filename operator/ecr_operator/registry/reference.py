"""Image references: ``[registry[:port]/]repository[:tag][@digest]``.

Grammar from the OCI distribution spec (repository name, tag) and the Docker reference rules that every
client follows for short names: the first path component is a registry only if it contains ``.`` or ``:``,
is ``localhost``, or has an uppercase letter; otherwise the image is on Docker Hub (``docker.io``) and a
single-component name lives under ``library/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ecr_operator.registry.digests import validate_digest
from ecr_operator.registry.errors import InvalidReference

DOCKER_HUB = "docker.io"
# docker.io is the name users write; the registry API itself is served here.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
DEFAULT_TAG = "latest"
# Clients (docker, containerd) refuse longer names; registries are not required to accept them.
MAX_NAME_LENGTH = 255
MAX_TAG_LENGTH = 128
# registry + name + tag + digest (sha512) with separators: anything longer is refused before parsing.
MAX_REFERENCE_LENGTH = 1024

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::(?P<port>[0-9]+))?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def validate_repository(name: str) -> str:
    if not _REPOSITORY.fullmatch(name):
        hint = " (must be lowercase)" if name.lower() != name else ""
        raise InvalidReference(
            f"invalid repository name {name!r}{hint}: components of [a-z0-9] joined by '.', '_', '__' or '-'"
            ", separated by '/'"
        )
    return name


def is_valid_tag(tag: object) -> bool:
    """Whether ``tag`` is a tag (cheap for any input: the length is checked first)."""
    return isinstance(tag, str) and 0 < len(tag) <= MAX_TAG_LENGTH and _TAG.fullmatch(tag) is not None


def validate_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        shown = tag if len(tag) <= 140 else f"{tag[:100]}… ({len(tag)} characters)"
        raise InvalidReference(
            f"invalid tag {shown!r}: up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"
        )
    return tag


def validate_registry(host: str) -> str:
    match = _HOST.fullmatch(host)
    if match is None:
        raise InvalidReference(f"invalid registry host {host!r}")
    port = match["port"]
    if port is not None and (len(port) > 5 or not 0 < int(port) < 65536):
        raise InvalidReference(f"invalid port in registry host {host!r}")
    return host


def normalize_registry(host: str) -> str:
    """Map every spelling of Docker Hub to ``docker.io``; other hosts are kept as written."""
    return DOCKER_HUB if host.lower() in _DOCKER_HUB_ALIASES else host


def api_host(registry: str) -> str:
    """The host that serves the registry API for a (normalised) registry name."""
    return DOCKER_HUB_API_HOST if registry == DOCKER_HUB else registry


def fallback_tag(digest: str) -> str:
    """The OCI referrers tag schema: ``<alg>-<ref>`` names the index of artifacts referring to ``digest``."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm[:32]}-{encoded[:64]}"


@dataclass(frozen=True)
class Reference:
    """A parsed image reference, registry normalised (``nginx`` -> ``docker.io/library/nginx``)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        return parse_reference(text)

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        return api_host(self.registry)

    @property
    def target(self) -> str:
        """What a manifest request names: the digest if pinned, else the tag, else ``latest``."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=None if tag is None else validate_tag(tag), digest=None)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=validate_digest(digest))

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Parse ``text`` or raise InvalidReference saying which part is wrong."""
    if not text:
        raise InvalidReference("empty image reference")
    if len(text) > MAX_REFERENCE_LENGTH:
        raise InvalidReference(f"image reference longer than {MAX_REFERENCE_LENGTH} characters")
    remainder, at, digest = text.partition("@")
    if not remainder:
        raise InvalidReference(f"image reference {text!r} has no repository")
    if at:
        validate_digest(digest)
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    tag: str | None = None
    if colon > slash:
        remainder, tag = remainder[:colon], validate_tag(remainder[colon + 1 :])

    first, sep, rest = remainder.partition("/")
    if sep and (any(c in first for c in ".:") or first == "localhost" or first.lower() != first):
        registry, repository = normalize_registry(validate_registry(first)), rest
    else:
        registry, repository = DOCKER_HUB, remainder
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    validate_repository(repository)
    if len(registry) + 1 + len(repository) > MAX_NAME_LENGTH:
        raise InvalidReference(
            f"image name {registry}/{repository!r} is longer than {MAX_NAME_LENGTH} characters"
        )
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest if at else None)
