"""User-written tag regular expressions, run on RE2: matching time is linear in the tag, whatever the pattern.

``ImageMirror.spec.tags.include``/``exclude`` and ``ecr-operator mirror --tags`` are written by users and
matched against tags an upstream registry chose. Python's backtracking ``re`` takes exponential time on
patterns like ``^(a+)+$`` against ``aaaa…a-`` (measured: a 31-character tag held the event loop ~50 s), so
these patterns are compiled by RE2 only. RE2 has no backreferences or lookaround; a pattern using them is
refused with a message saying so. Operator-internal patterns stay on ``re``: they are ours and linear.
"""

from __future__ import annotations

from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

# RE2 builds each pattern's automaton within this much memory; a pattern needing more is refused at compile
# time (e.g. a{1000}{1000}), never a slow match. Tag patterns are at most 256 characters in the CRD.
MAX_PROGRAM_MEMORY = 4 * 1024 * 1024


class InvalidTagPattern(ValueError):
    """A pattern RE2 cannot compile; ``detail`` says why (RE2's words, plus a hint for likely mistakes)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"not a valid regular expression (RE2 syntax): {detail}")
        self.detail = detail


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.max_mem = MAX_PROGRAM_MEMORY
    return options


class TagPattern:
    """A compiled user pattern. ``search`` finds it anywhere in a tag, ``fullmatch`` needs the whole tag."""

    def __init__(self, text: str) -> None:
        try:
            self._compiled = re2.compile(text, _options())
        except re2.error as error:
            raise InvalidTagPattern(_describe(error)) from None
        self.pattern = text

    def search(self, tag: str) -> bool:
        return self._compiled.search(tag) is not None

    def fullmatch(self, tag: str) -> bool:
        return self._compiled.fullmatch(tag) is not None

    def __repr__(self) -> str:
        return f"TagPattern({self.pattern!r})"


def _describe(error: Exception) -> str:
    detail = error.args[0] if error.args else error
    text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
    hint = ""
    if any(part in text for part in ("invalid perl operator", "invalid escape", "invalid named capture")):
        hint = " (RE2 syntax: no lookahead/lookbehind and no backreferences)"
    return f"{text}{hint}"


def compile_tag_pattern(text: str) -> TagPattern:
    """Compile ``text`` with RE2; raises InvalidTagPattern (a ValueError) naming what is wrong."""
    return TagPattern(text)
