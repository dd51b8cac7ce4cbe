"""Semantic versions of image tags and the ranges ``ImageMirror.spec.tags.semver`` selects them with.

Tags are read leniently, as Docker tags are written: a leading ``v`` and missing minor/patch parts are
accepted (``v1.27`` is 1.27.0). Ranges follow the npm / Masterminds grammar that Flux users know:
comparators (``>=1.2 <2``, ``!=1.3.1``), ``~`` (patch updates), ``^`` (updates that keep the left-most
non-zero part), x-ranges (``1.2.x``, ``*``), hyphen ranges (``1.2 - 1.4``), AND by space or comma, OR by
``||``. A version with a pre-release part (``1.2.3-rc.1``, also ``1.27.3-alpine``) satisfies a range only
where that AND-group mentions a pre-release itself (``>=1.27.0-0``): pre-releases are opt-in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

# Lenient for tags: "v" prefix, 1 to 3 numeric parts, a pre-release; build metadata cannot occur in a tag.
_TAG_VERSION = re.compile(r"[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?")
_PART = r"(?:\d+|[xX*])"
_RANGE_VERSION = (
    rf"[vV]?{_PART}(?:\.{_PART}){{0,2}}(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z.-]+)?"
)
_HYPHEN = re.compile(rf"({_RANGE_VERSION})\s+-\s+({_RANGE_VERSION})")
_COMPARATOR = re.compile(rf"(>=|<=|=>|=<|!=|~>|>|<|=|~|\^)?\s*({_RANGE_VERSION})")
_SEPARATOR = re.compile(r"[\s,]*")
_PARTIAL = re.compile(
    r"[vV]?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+.*)?"
)
_WILDCARDS = frozenset({"x", "X", "*"})


class InvalidRange(ValueError):
    """A semver range that does not follow the grammar."""


def _identifier_key(identifier: str) -> tuple[int, int, str]:
    # Numeric identifiers sort numerically and below alphanumeric ones (semver 2.0.0 section 11).
    return (0, int(identifier), "") if identifier.isdigit() else (1, 0, identifier)


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int = 0
    patch: int = 0
    prerelease: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        """Semver precedence: a pre-release sorts before its release; identifiers compared in order."""
        release_rank = 0 if self.prerelease else 1
        identifiers = tuple(_identifier_key(part) for part in self.prerelease)
        return (self.major, self.minor, self.patch, release_rank, identifiers)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key < other.key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{'.'.join(self.prerelease)}" if self.prerelease else text


def parse_tag_version(tag: str) -> Version | None:
    """The version a tag names (``1.27.3``, ``v2``, ``1.2.0-rc.1``), or None for other tags (``latest``)."""
    match = _TAG_VERSION.fullmatch(tag)
    if match is None:
        return None
    major, minor, patch, prerelease = match.groups()
    return Version(
        int(major),
        int(minor or 0),
        int(patch or 0),
        tuple(prerelease.split(".")) if prerelease else (),
    )


@dataclass(frozen=True)
class Interval:
    """Versions between ``low`` and ``high`` (None: unbounded), or outside them when ``negated``."""

    low: Version | None = None
    low_inclusive: bool = True
    high: Version | None = None
    high_inclusive: bool = False
    negated: bool = False

    def contains(self, version: Version) -> bool:
        above = self.low is None or (version >= self.low if self.low_inclusive else version > self.low)
        below = self.high is None or (version <= self.high if self.high_inclusive else version < self.high)
        return (above and below) != self.negated


@dataclass(frozen=True)
class Group:
    """Comparators that must all hold; ``prereleases`` when one of them was written with a pre-release."""

    intervals: tuple[Interval, ...]
    prereleases: bool

    def contains(self, version: Version) -> bool:
        if version.prerelease and not self.prereleases:
            return False
        return all(interval.contains(version) for interval in self.intervals)


@dataclass(frozen=True)
class Range:
    """Groups of which at least one must hold."""

    groups: tuple[Group, ...]
    text: str = field(default="", compare=False)

    def contains(self, version: Version) -> bool:
        return any(group.contains(version) for group in self.groups)

    def matches_tag(self, tag: str) -> bool:
        version = parse_tag_version(tag)
        return version is not None and self.contains(version)


@dataclass(frozen=True)
class _Partial:
    """A version as written in a range: parts may be missing (``1.2``) or wildcards (``1.x``)."""

    major: int | None
    minor: int | None
    patch: int | None
    prerelease: tuple[str, ...]

    @property
    def floor(self) -> Version:
        return Version(self.major or 0, self.minor or 0, self.patch or 0, self.prerelease)

    def next_up(self) -> Version:
        """The first version past everything this partial covers (``1.2`` -> 1.3.0, ``1`` -> 2.0.0)."""
        assert self.major is not None
        if self.minor is None:
            return Version(self.major + 1)
        return Version(self.major, self.minor + 1)

    @property
    def complete(self) -> bool:
        return self.patch is not None


def _partial(text: str) -> _Partial:
    match = _PARTIAL.fullmatch(text)
    if match is None:
        raise InvalidRange(f"{text!r} is not a version")
    parts: list[int | None] = []
    for part in match.groups()[:3]:
        # Everything after a wildcard is a wildcard too: 1.x.3 means 1.x.
        parts.append(
            None if part is None or part in _WILDCARDS or (parts and parts[-1] is None) else int(part)
        )
    prerelease = match.group(4)
    major, minor, patch = parts
    return _Partial(major, minor, patch, tuple(prerelease.split(".")) if prerelease else ())


def _comparator(operator: str, partial: _Partial) -> Interval:
    if partial.major is None:  # *, x: every version (">*" and "<*" match nothing, as in npm)
        return Interval(negated=operator in (">", "<", "!="))
    floor = partial.floor
    if operator in ("", "="):
        if partial.complete:
            return Interval(floor, True, floor, True)
        return Interval(floor, True, partial.next_up())
    if operator == "!=":
        if partial.complete:
            return Interval(floor, True, floor, True, negated=True)
        return Interval(floor, True, partial.next_up(), negated=True)
    if operator == ">":
        return Interval(floor, False) if partial.complete else Interval(partial.next_up(), True)
    if operator in (">=", "=>"):
        return Interval(floor, True)
    if operator == "<":
        return Interval(high=floor, high_inclusive=False)
    if operator in ("<=", "=<"):
        return (
            Interval(high=floor, high_inclusive=True)
            if partial.complete
            else Interval(high=partial.next_up())
        )
    if operator in ("~", "~>"):
        if partial.minor is None:
            return Interval(floor, True, Version(partial.major + 1))
        return Interval(floor, True, Version(partial.major, partial.minor + 1))
    # ^: changes that do not modify the left-most non-zero part.
    if partial.major > 0 or partial.minor is None:
        return Interval(floor, True, Version(partial.major + 1))
    if partial.minor > 0 or partial.patch is None:
        return Interval(floor, True, Version(0, partial.minor + 1))
    return Interval(floor, True, Version(0, 0, partial.patch + 1))


def _hyphen(low: _Partial, high: _Partial) -> Interval:
    if high.major is None:
        return Interval(low.floor, True)
    if high.complete:
        return Interval(low.floor, True, high.floor, True)
    return Interval(low.floor, True, high.next_up())


def _group(text: str) -> Group:
    intervals: list[Interval] = []
    prereleases = False
    position = _SEPARATOR.match(text, 0)
    index = position.end() if position else 0
    while index < len(text):
        hyphen = _HYPHEN.match(text, index)
        if hyphen is not None:
            low, high = _partial(hyphen.group(1)), _partial(hyphen.group(2))
            intervals.append(_hyphen(low, high))
            prereleases |= bool(low.prerelease or high.prerelease)
            end = hyphen.end()
        else:
            comparator = _COMPARATOR.match(text, index)
            if comparator is None or comparator.end() == index:
                raise InvalidRange(f"cannot read {text[index:]!r}")
            partial = _partial(comparator.group(2))
            intervals.append(_comparator(comparator.group(1) or "", partial))
            prereleases |= bool(partial.prerelease)
            end = comparator.end()
        separator = _SEPARATOR.match(text, end)
        index = separator.end() if separator else end
        if index == end and index < len(text):
            raise InvalidRange(f"expected a space or comma before {text[index:]!r}")
    if not intervals:
        raise InvalidRange("empty comparator group")
    return Group(tuple(intervals), prereleases)


def parse_range(text: str) -> Range:
    """Parse a range like ``>=1.26 <1.28 || ^2``; raises InvalidRange naming what it could not read."""
    groups = tuple(_group(part.strip()) for part in text.split("||"))
    return Range(groups, text)


def tag_order_key(tag: str) -> tuple[int, tuple[int, int, int, int, tuple[tuple[int, int, str], ...]], str]:
    """Sort key putting versions above other tags, versions by precedence, then names (for ties)."""
    version = parse_tag_version(tag)
    if version is None:
        return (0, (0, 0, 0, 0, ()), tag)
    return (1, version.key, tag)
