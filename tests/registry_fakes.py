"""Stand-ins for the registry client's surroundings: a scripted HTTP response and a sleep that only counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

from multidict import CIMultiDict, CIMultiDictProxy

from ecr_operator.registry.errors import ConnectionFailed


class ScriptedResponse:
    """A response with a given body: ``pace`` seconds are slept before each piece of at most ``chunk``
    bytes; a read that reaches ``break_after`` bytes fails as a reset connection does."""

    def __init__(
        self,
        status: int = 200,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        pace: float = 0.0,
        chunk: int = 64 * 1024,
        break_after: int | None = None,
    ) -> None:
        self.status = status
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(headers or {}))
        self.body = body
        self.pace = pace
        self.chunk = chunk
        self.break_after = break_after
        self.closed = False

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        step = min(size, self.chunk)
        for start in range(0, len(self.body), step):
            if self.break_after is not None and start >= self.break_after:
                raise ConnectionFailed("connection reset by peer")
            if self.pace:
                await asyncio.sleep(self.pace)
            yield self.body[start : start + step]

    def close(self) -> None:
        self.closed = True


class Sleeps:
    """A ``sleep`` for RegistryClient that records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
