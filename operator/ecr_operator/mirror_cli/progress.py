"""The progress line ``ecr-operator mirror`` draws on a terminal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from ecr_operator.registry.results import BlobDone, BlobProgress, BlobStarted, ProgressEvent


class ProgressLine:
    """One status line on a terminal, redrawn at most ten times a second: a bar over the bytes of the
    blobs started so far (a registry does not say the total before the manifests are read)."""

    WIDTH = 24

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.images_total = 1
        self.images_done = 0
        self._blob_sizes: dict[str, int] = {}
        self._transferred: dict[str, int] = {}
        self._blobs_done = 0
        self._started = clock()
        self._drawn_at: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if isinstance(event, BlobStarted):
            self._blob_sizes[event.digest] = event.size
            self._transferred[event.digest] = 0
        elif isinstance(event, BlobProgress):
            self._transferred[event.digest] = event.transferred
        elif isinstance(event, BlobDone):
            self._blobs_done += 1
            if event.outcome == "copied":
                self._transferred[event.digest] = event.size
        self.draw()

    def image_done(self) -> None:
        self.images_done += 1
        self.draw(force=True)

    def render(self) -> str:
        now = self.clock()
        total = sum(self._blob_sizes.values())
        moved = sum(self._transferred.values())
        filled = self.WIDTH * moved // total if total else 0
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        rate = moved / max(now - self._started, 1e-3)
        line = f"[{bar}] {_mib(moved)}/{_mib(total)} MiB {rate / 2**20:.1f} MiB/s, {self._blobs_done} blobs"
        if self.images_total > 1:
            line = f"{self.images_done}/{self.images_total} images " + line
        return line

    def draw(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and self._drawn_at is not None and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        self.stream.write("\r" + self.render() + "\x1b[K")
        self.stream.flush()

    def clear(self) -> None:
        if self._drawn_at is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f}"
