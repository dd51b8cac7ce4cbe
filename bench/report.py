"""Benchmark results: one line per comparison, printed as a table and written as JSON lines.

Every line compares ours with one peer measured in the same run. ``target`` is a small expression that
says what was required (``ratio <= 0.8``, ``ours <= 100``, ``ours == 0``) and ``met`` whether it held.
"""

from __future__ import annotations

import json
import math
import operator
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

Subject = Literal["ratio", "ours"]
_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Target:
    """A requirement on the ratio (ours / peer) or on our own number."""

    subject: Subject
    comparison: str
    bound: float

    def __str__(self) -> str:
        return f"{self.subject} {self.comparison} {self.bound:g}"

    def holds(self, ours: float, ratio: float | None) -> bool:
        value = ours if self.subject == "ours" else ratio
        return value is not None and _COMPARISONS[self.comparison](value, self.bound)


def ratio_at_most(bound: float) -> Target:
    return Target("ratio", "<=", bound)


def ours_at_most(bound: float) -> Target:
    return Target("ours", "<=", bound)


def ours_equal(bound: float) -> Target:
    return Target("ours", "==", bound)


@dataclass(frozen=True)
class BenchLine:
    """One JSON line. ``peer`` is None when no peer ran; ``ratio`` is ours / peer."""

    name: str
    unit: str
    ours: float
    peer: float | None
    ratio: float | None
    target: str
    met: bool

    @classmethod
    def compare(cls, name: str, unit: str, ours: float, peer: float | None, target: Target) -> BenchLine:
        ratio = None if peer is None or peer == 0 else ours / peer
        if peer == 0 and ours == 0:
            ratio = 1.0
        return cls(
            name=name,
            unit=unit,
            ours=_round(ours),
            peer=None if peer is None else _round(peer),
            ratio=None if ratio is None else round(ratio, 3),
            target=str(target),
            met=target.holds(ours, ratio),
        )


def _round(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    digits = max(0, 3 - math.floor(math.log10(abs(value))))
    return round(value, digits)


def median(samples: Sequence[float]) -> float:
    if not samples:
        raise ValueError("no samples")
    return float(statistics.median(samples))


def print_table(lines: Sequence[BenchLine], stream: TextIO) -> None:
    headers = ("benchmark", "unit", "ours", "peer", "ratio", "target", "met")
    rows = [
        (
            line.name,
            line.unit,
            f"{line.ours:g}",
            "-" if line.peer is None else f"{line.peer:g}",
            "-" if line.ratio is None else f"{line.ratio:.2f}x",
            line.target,
            "yes" if line.met else "NO",
        )
        for line in lines
    ]
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    for row in (headers, tuple("-" * width for width in widths), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)), file=stream)


def results_path(folder: Path, started: datetime) -> Path:
    return folder / f"{started.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl"


def write_lines(path: Path, lines: Iterable[BenchLine]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(asdict(line)) + "\n")


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    """The run's circumstances next to its results (same name, ``.meta.json``): load, CPUs, tools, samples."""
    path.with_suffix(".meta.json").write_text(
        json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8"
    )


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
