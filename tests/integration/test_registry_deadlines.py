"""Deadlines and bounds over real sockets: the client's aiohttp session against a slow, hostile server.

The server is a few aiohttp handlers started on loopback by the test (the full hostile registry of the
test world lives in sandbox/); what is proven here is that the deadlines of ``create_session`` and
``RegistryClient`` hold on a real connection: a trickled manifest, a server that never answers, a
trickled or stalled blob, a TLS handshake that never happens, endless pagination.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.errors import DeadlineExceeded, LimitExceeded, PaginationLoop
from ecr_operator.registry.limits import Deadlines
from ecr_operator.registry.reference import parse_reference
from ecr_operator.registry.transport import AiohttpSender, create_session

pytestmark = pytest.mark.integration

DEADLINES = Deadlines(connect=1.0, read=0.5, request=1.0, blob_min_rate=4096, blob_window=1.0)
BLOB = "sha256:" + "b" * 64


async def _trickle(request: web.Request, total: int, pace: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    await response.prepare(request)
    for _ in range(total):
        await asyncio.sleep(pace)
        await response.write(b" ")
    return response


async def manifest(request: web.Request) -> web.StreamResponse:
    behaviour = request.match_info["target"]
    if behaviour == "trickle":
        return await _trickle(request, 1000, 0.1)
    if behaviour == "hang":
        await asyncio.sleep(30)
    return web.Response(status=404)


async def blob(request: web.Request) -> web.StreamResponse:
    behaviour = request.match_info["repo"]
    response = web.StreamResponse(headers={"Content-Length": "100000"})
    await response.prepare(request)
    if behaviour == "stall":
        await response.write(b"x" * 10)
        await asyncio.sleep(30)
    for _ in range(100_000):  # "trickle": 20 bytes/s, far under the 4 KiB/s floor
        await asyncio.sleep(0.05)
        await response.write(b"x")
    return response


async def tags(request: web.Request) -> web.Response:
    page = int(request.query.get("page", "0"))
    if request.match_info["repo"] == "self":
        link = f'<{request.path_qs}>; rel="next"'
    else:
        link = f'</v2/endless/tags/list?page={page + 1}>; rel="next"'
    return web.json_response({"tags": [f"t{page}"]}, headers={"Link": link})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v2/{repo}/manifests/{target}", manifest)
    app.router.add_get("/v2/{repo}/blobs/{digest}", blob)
    app.router.add_get("/v2/{repo}/tags/list", tags)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with create_session(deadlines=DEADLINES) as opened:
        yield opened


def _client(session: aiohttp.ClientSession, host: str) -> RegistryClient:
    return RegistryClient(AiohttpSender(session), insecure_registries=[host], deadlines=DEADLINES)


@pytest.mark.parametrize(
    ("method", "reference"),
    [
        pytest.param("get_manifest", "trickle", id="a trickled manifest fails at the request deadline"),
        pytest.param("head_manifest", "hang", id="a server that never answers fails at a deadline"),
    ],
)
async def test_a_slow_manifest_request_fails_at_a_deadline(
    server: str, session: aiohttp.ClientSession, method: str, reference: str
) -> None:
    request = getattr(_client(session, server), method)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await request(parse_reference(f"{server}/app"), reference)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("behaviour", ["trickle", "stall"])
async def test_a_slow_blob_fails_within_a_window(
    server: str, session: aiohttp.ClientSession, behaviour: str
) -> None:
    response = await _client(session, server).open_blob(parse_reference(f"{server}/{behaviour}"), BLOB)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded):
            async for _ in response.iter_chunks(65536):
                pass
    finally:
        response.close()
    assert time.monotonic() - started < 3


async def test_a_tls_handshake_that_never_happens_fails_at_a_deadline(session: aiohttp.ClientSession) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = RegistryClient(AiohttpSender(session), deadlines=DEADLINES)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded):
            await client.head_manifest(parse_reference(f"127.0.0.1:{port}/app"), "v1")
    finally:
        listener.close()
    assert time.monotonic() - started < 3


async def test_pagination_over_http_is_bounded(server: str, session: aiohttp.ClientSession) -> None:
    client = _client(session, server)
    with pytest.raises(LimitExceeded, match="more than 100 pages"):
        await client.list_tags(parse_reference(f"{server}/endless"))
    with pytest.raises(PaginationLoop):
        await client.list_tags(parse_reference(f"{server}/self"))
