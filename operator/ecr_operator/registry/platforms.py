"""Platforms (``os/arch[/variant]``) and the filter that picks children of an image index.

Matching follows the normalisation containerd applies, so users can write what ``uname`` or
``docker buildx`` prints:

- os and architecture are compared case-insensitively, with aliases (``x86_64``→``amd64``,
  ``aarch64``→``arm64``, ``i386``→``386``, ``macos``→``darwin``; ``armhf``→``arm/v7``, ``armel``→``arm/v6``);
- a missing variant means the architecture's default: ``arm64``→``v8``, ``arm``→``v7``, ``amd64``→``v1``.
  So ``linux/arm64`` and ``linux/arm64/v8`` are the same platform, in a request and in an index entry;
- a request without a variant matches every variant of that os/architecture (``linux/arm`` selects
  ``linux/arm/v6`` and ``linux/arm/v7``): asking for less specific means accepting more;
- a request's ``os.version`` is not part of the syntax: Windows images of every build match ``windows/amd64``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ecr_operator.registry.errors import InvalidReference

_OS_ALIASES = {"macos": "darwin"}
_ARCH_ALIASES: Mapping[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
}
_DEFAULT_VARIANTS = {"arm64": "v8", "arm": "v7", "amd64": "v1"}
_COMPONENT = re.compile(r"[a-z0-9_.-]+")
# Real values are short (``linux``, ``riscv64``, ``v8``); longer ones are refused before any matching.
MAX_COMPONENT = 32


@dataclass(frozen=True, order=True)
class Platform:
    """A normalised platform: lowercase, aliases resolved, default variant filled in when implied."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def of(cls, os: str, architecture: str, variant: str = "") -> Platform:
        os = os.lower()
        architecture, variant = architecture.lower(), variant.lower()
        os = _OS_ALIASES.get(os, os)
        if architecture in _ARCH_ALIASES:
            architecture, implied = _ARCH_ALIASES[architecture]
            variant = variant or implied
        if variant and variant.isascii() and variant.isdigit():
            variant = f"v{variant}"
        return cls(os=os, architecture=architecture, variant=variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, e.g. ``linux/arm64/v8``."""
        parts = text.strip().lower().split("/") if len(text) <= 3 * MAX_COMPONENT + 8 else []
        if not 2 <= len(parts) <= 3 or not all(_valid_component(part) for part in parts):
            raise InvalidReference(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/arm64")
        return cls.of(*parts)

    @property
    def effective_variant(self) -> str:
        return self.variant or _DEFAULT_VARIANTS.get(self.architecture, "")

    def selects(self, candidate: Platform) -> bool:
        """Whether this requested platform accepts ``candidate`` (an index entry's platform)."""
        if (self.os, self.architecture) != (candidate.os, candidate.architecture):
            return False
        return not self.variant or self.effective_variant == candidate.effective_variant

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


def _valid_component(part: str) -> bool:
    return len(part) <= MAX_COMPONENT and _COMPONENT.fullmatch(part) is not None


def platform_from_descriptor(platform: object) -> Platform | None:
    """The ``platform`` object of an index entry; None when absent or without string os/architecture.

    Raises InvalidReference when os, architecture or variant is outside ``[a-z0-9_.-]{1,32}`` (after
    lowercasing): such a value would otherwise travel into status, metrics and filters.
    """
    if not isinstance(platform, Mapping):
        return None
    os, architecture, variant = platform.get("os"), platform.get("architecture"), platform.get("variant", "")
    if not (isinstance(os, str) and isinstance(architecture, str) and isinstance(variant, str)):
        return None
    for name, value in (("os", os), ("architecture", architecture), ("variant", variant)):
        if (value or name != "variant") and not _valid_component(value.lower()):
            raise InvalidReference(
                f"invalid platform {name} {value[:40]!r}: expected up to {MAX_COMPONENT} of [a-z0-9_.-]"
            )
    return Platform.of(os, architecture, variant)


@dataclass(frozen=True)
class PlatformFilter:
    """The platforms a user asked for. An empty request is not a filter: use None for "all platforms"."""

    requested: tuple[Platform, ...]

    @classmethod
    def parse(cls, platforms: Iterable[str]) -> PlatformFilter:
        requested = tuple(dict.fromkeys(Platform.parse(text) for text in platforms))
        if not requested:
            raise InvalidReference("a platform filter needs at least one platform")
        return cls(requested=requested)

    def selects(self, platform: Platform) -> bool:
        return any(wanted.selects(platform) for wanted in self.requested)

    def missing(self, available: Iterable[Platform]) -> tuple[Platform, ...]:
        """Requested platforms that none of ``available`` satisfies (absent upstream)."""
        present = tuple(available)
        return tuple(wanted for wanted in self.requested if not any(wanted.selects(p) for p in present))
