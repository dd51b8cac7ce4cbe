"""Run one command the way a user would, and measure it: wall time, CPU time, peak memory.

The command is started under GNU time (Debian package ``time``), which forks it from its own small
process and reports the child's peak resident set. Reading ``ru_maxrss`` from our own ``wait4``
would not do: Python starts children with vfork, and Linux carries the parent's high-water mark into
the child's ``maxrss`` across exec, so every tool would "peak" at the benchmark process's size.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"


class CommandFailed(RuntimeError):
    """A measured command exited non-zero (or not in time): its numbers mean nothing."""


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu_seconds: float
    max_rss_bytes: int
    output: str


def require_gnu_time() -> None:
    if shutil.which(GNU_TIME) is None:
        raise RuntimeError(f"{GNU_TIME} is missing: install the Debian package 'time'")


def run_measured(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 600.0
) -> Measured:
    """Run ``argv`` to completion; raise CommandFailed unless it exits 0."""
    log = cwd / "last-command.log"
    usage_file = cwd / "last-command.usage"
    command = [GNU_TIME, "-o", str(usage_file), "-f", "%U %S %M", *argv]
    with log.open("wb") as output:
        began = time.perf_counter()
        try:
            result = subprocess.run(
                command,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{' '.join(argv)} did not finish in {timeout:.0f}s") from None
        seconds = time.perf_counter() - began
    text = log.read_text(encoding="utf-8", errors="replace")
    if result.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} exited with {result.returncode}:\n{text[-3000:]}")
    # GNU time appends its line after any of its own notes; the numbers are on the last line.
    user, system, max_rss_kib = usage_file.read_text().split("\n")[-2].split()
    return Measured(
        seconds=seconds,
        cpu_seconds=float(user) + float(system),
        max_rss_bytes=int(max_rss_kib) * 1024,
        output=text,
    )
