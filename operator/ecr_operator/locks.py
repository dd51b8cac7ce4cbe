"""One ``asyncio.Lock`` per key, created on first use and dropped when nobody holds or awaits it.

kopf runs an object's change handlers, its timers and other objects' handlers concurrently. Holding the
lock of the AWS resource (e.g. a repository) makes "observe, decide, act" atomic within the process: a
drift check never interleaves with an update, and two objects naming one repository take turns, so the
second sees the first one's owner tag.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: dict[Hashable, int] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
