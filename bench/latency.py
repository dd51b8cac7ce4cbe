"""A TCP proxy on loopback that delays every byte by a fixed time in each direction.

Put in front of a registry, it turns loopback into a link with ``2 * delay`` more round-trip time
without limiting bandwidth: bytes are forwarded as they arrive, each chunk released ``delay`` after it
was read. TLS passes through untouched (the registry certificate names 127.0.0.1, whatever the port).
What it cannot delay is the TCP handshake itself (the kernel answers it), so a new connection costs one
round trip less than on a real link, for every client alike.

Chosen over ``tc netem``, which needs a network namespace with the registries inside it and root.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

_READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class Route:
    listen_port: int
    target_host: str
    target_port: int


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        while True:
            data = await reader.read(_READ_SIZE)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    async def release() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    with contextlib.suppress(ConnectionError, OSError):
        await asyncio.gather(receive(), release())


class DelayingProxy:
    """Proxies ``127.0.0.1:<free port>`` to each target with ``delay`` seconds each way, in a thread."""

    def __init__(self, targets: dict[str, tuple[str, int]], delay: float) -> None:
        self._targets = targets
        self._delay = delay
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delaying-proxy", daemon=True)
        self._servers: list[asyncio.Server] = []
        self.routes: dict[str, Route] = {}

    async def _handle(
        self,
        target: tuple[str, int],
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                _pipe(client_reader, upstream_writer, self._delay),
                _pipe(upstream_reader, client_writer, self._delay),
            )
        finally:
            for writer in (upstream_writer, client_writer):
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    async def _listen(self) -> None:
        for name, target in self._targets.items():

            async def handle(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int] = target
            ) -> None:
                await self._handle(target, reader, writer)

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self._servers.append(server)
            port = server.sockets[0].getsockname()[1]
            self.routes[name] = Route(port, *target)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextlib.contextmanager
def delayed(targets: dict[str, tuple[str, int]], round_trip: float) -> Iterator[dict[str, Route]]:
    """Proxies adding ``round_trip`` seconds of round-trip time to each target, while in the block."""
    proxy = DelayingProxy(targets, round_trip / 2)
    proxy.start()
    try:
        yield proxy.routes
    finally:
        proxy.stop()
