"""The one Kubernetes API client of the process, and how its errors reach the rest of the operator.

JSON over one aiohttp session (the library kopf talks to the apiserver with), so no call needs a thread.
Errors become ``KubeApiError`` carrying the HTTP status and reason phrase only: an error body is never kept
or logged (the apiserver echoes rejected values back, and a rejected value can be a Secret's data).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl

import ecr_operator
from ecr_operator.kube.connection import BearerToken, KubeConnection, ssl_context

JSON = "application/json"
CONNECT_TIMEOUT = 15.0
# For ordinary API requests (GET, PATCH); kopf's default of 5 minutes would stall a handler far too long.
REQUEST_TIMEOUT = 60.0
# An apiserver error (a Status object) is a few hundred bytes; a bigger error body is dropped unread with
# its connection rather than read only to be thrown away.
ERROR_BODY_LIMIT = 64 * 1024


class KubeApiError(Exception):
    """A Kubernetes API request failed; ``status`` is 0 for network errors. The message holds no body."""

    def __init__(self, status: int, reason: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status} {reason}" if status else f"{what}: {reason}")
        self.status = status
        self.reason = reason

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404


def api_path(*segments: str) -> str:
    """``/seg/seg/...`` with every segment escaped: a name can never reach another path."""
    return "".join(f"/{quote(segment, safe='')}" for segment in segments)


class ApiClient:
    """Requests to one apiserver over one aiohttp session, opened in ``start`` and closed in ``close``.

    Building it is blocking (it loads the TLS files); ``connection_limit`` bounds the connections open at
    once, which are opened only as requests need them and then kept alive."""

    def __init__(self, connection: KubeConnection, connection_limit: int) -> None:
        self.connection_limit = connection_limit
        self._server = connection.server.rstrip("/")
        self._ssl = ssl_context(connection)
        self._token = BearerToken(connection)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connection_limit, ssl=self._ssl),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT),
            headers={"User-Agent": f"ecr-operator/{ecr_operator.__version__}", "Accept": JSON},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        what: str,
        method: str,
        path: str,
        *,
        body: object = None,
        content_type: str = JSON,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send one request; returns the JSON object answered. ``what`` names it in errors."""
        if self._session is None:
            raise RuntimeError("the Kubernetes API client is used before start() or after close()")
        try:
            token = self._token.current()
        except OSError as error:
            raise KubeApiError(0, f"cannot read the token file ({type(error).__name__})", what) from None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            async with self._session.request(
                method, yarl.URL(self._server + path, encoded=True), params=query, data=data, headers=headers
            ) as response:
                if response.status >= 400:
                    await _discard(response)
                    raise KubeApiError(response.status, response.reason or "error", what)
                if response.content_type != JSON:
                    raise KubeApiError(response.status, f"answered {response.content_type}, not JSON", what)
                found = await response.json()
        except aiohttp.ClientError as error:
            raise KubeApiError(0, type(error).__name__, what) from None
        except TimeoutError:
            raise KubeApiError(0, "timed out", what) from None
        except ValueError:
            raise KubeApiError(0, "invalid JSON", what) from None
        if not isinstance(found, dict):
            raise KubeApiError(0, "answered JSON that is not an object", what)
        return found


async def _discard(response: aiohttp.ClientResponse) -> None:
    """Read a small error body to its end and drop it, so the connection is kept alive for the next
    request; close the connection instead of reading a big or unsized one."""
    if response.content_length is not None and response.content_length <= ERROR_BODY_LIMIT:
        await response.content.read()
    else:
        response.close()
