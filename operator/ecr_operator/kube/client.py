"""The one Kubernetes API client of the process, and how its errors reach the rest of the operator.

The official client blocks, so every call runs in the operator's bounded thread pool (``asyncio.to_thread``
uses the loop's default executor, which ``Runtime`` sizes). Errors become ``KubeApiError`` carrying the
HTTP status and the apiserver's reason only: the client's own exception text includes response bodies and
headers, which must never reach a log (a body can carry a Secret's data).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

T = TypeVar("T")


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


def load_api_client(connections: int) -> kubernetes.client.ApiClient:
    """A client for the pod's own service account, or for KUBECONFIG outside a cluster (blocking: it reads
    files). ``connections`` bounds the connection pool, which opens connections only as calls need them."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return kubernetes.client.ApiClient(configuration)


async def call_api(what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one blocking client call in the thread pool; its error keeps status and reason only."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except ApiException as error:
        raise KubeApiError(int(error.status or 0), str(error.reason or "error"), what) from None
    except HTTPError as error:
        raise KubeApiError(0, type(error).__name__, what) from None
