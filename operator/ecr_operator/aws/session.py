"""boto3 clients, created once per (service, region, role) and shared by every handler.

boto3 clients are thread-safe, Sessions are not: one botocore session per identity is built here, under a
lock, and its clients are reused. Assumed roles refresh their credentials by themselves before they expire.
Every call is counted in the operator's metrics by outcome.

Regions and roles come from tenants' objects, so neither may grow the process: a region must be one
botocore knows ECR in (or one the admin lists in ``ECR_OPERATOR_ALLOWED_REGIONS``), and the clients and
sessions kept are bounded (least recently used dropped first).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import botocore
import botocore.session
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import ClientError
from botocore.regions import EndpointResolver

from ecr_operator.metrics import Metrics
from ecr_operator.reconcile.identity import AwsIdentity

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_sts import STSClient

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
    }
)
ROLE_SESSION_NAME = "ecr-operator"
# Standard mode retries throttling and 5xx with jittered exponential backoff and a client-side retry quota,
# so a throttled account is not hammered harder; after these attempts the handler's own backoff takes over.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 4},
    connect_timeout=10,
    read_timeout=30,
    user_agent_extra="ecr-operator",
    max_pool_connections=32,
)
# A handful of (service, region, role) combinations is normal; these bounds only stop unbounded growth.
MAX_CACHED_CLIENTS = 128
MAX_CACHED_SESSIONS = 64
REGION_NOT_ALLOWED = "RegionNotAllowed"
ALLOWED_REGIONS_SETTING = "ECR_OPERATOR_ALLOWED_REGIONS"


def error_code(error: BaseException) -> str:
    """The AWS error code of a ClientError (e.g. RepositoryNotFoundException), or the exception's name."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return type(error).__name__


def error_message(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Message", "")) or str(error)
    return str(error)


def is_throttling(error: BaseException) -> bool:
    return error_code(error) in THROTTLING_CODES


# The services the operator calls, as botocore's endpoint table names them (ECR's endpoint prefix).
ECR_ENDPOINT_PREFIX = "api.ecr"
ENDPOINT_PREFIXES = frozenset({ECR_ENDPOINT_PREFIX, "iam", "sts"})


@functools.cache
def endpoint_table() -> dict[str, Any]:
    """botocore's endpoint table (partitions, regions) with only the services the operator calls.

    botocore's loader parses the whole table (300 services per partition) into OrderedDicts and keeps it in
    its cache for the process's life: 45-50 MB of live objects (measured), a fifth of the memory budget.
    These three services' entries are a few hundred KB; read once, as plain dicts, and shared."""
    data = Path(botocore.__file__).parent / "data"
    plain = data / "endpoints.json"
    text = (
        plain.read_bytes() if plain.exists() else gzip.decompress((data / "endpoints.json.gz").read_bytes())
    )
    table: dict[str, Any] = json.loads(text)
    for partition in table["partitions"]:
        services = partition.get("services", {})
        partition["services"] = {name: services[name] for name in ENDPOINT_PREFIXES if name in services}
    return table


def endpoint_resolver() -> EndpointResolver:
    return EndpointResolver(endpoint_table(), uses_builtin_data=True)


@functools.cache
def known_ecr_regions() -> frozenset[str]:
    """Every region of every partition (aws, aws-cn, aws-us-gov, aws-iso*, ...) botocore has ECR in."""
    resolver = endpoint_resolver()
    return frozenset(
        region
        for partition in resolver.get_available_partitions()
        for region in resolver.get_available_endpoints(ECR_ENDPOINT_PREFIX, partition)
    )


class RegionNotAllowed(ClientError):
    """A region the operator may not use. A ClientError, so every caller reports it as it reports AWS's
    own refusals (condition, Event, TokenRefreshError) instead of failing in an unexpected way."""

    def __init__(self, region: str, operation: str, *, admin_list: bool) -> None:
        shown = region if len(region) <= 64 else region[:63] + "…"
        why = (
            f"it is not in {ALLOWED_REGIONS_SETTING}"
            if admin_list
            else f"botocore knows no ECR endpoint there; an admin can allow it with {ALLOWED_REGIONS_SETTING}"
        )
        message = f"AWS region {shown!r} (spec.registry.region or the operator's settings) is refused: {why}"
        super().__init__(
            {"Error": {"Code": REGION_NOT_ALLOWED, "Message": message}},
            operation,
        )
        self.region = region


class _RefusedRegionClient:
    """Stands in for the client of a refused region: every call raises ``RegionNotAllowed`` where the real
    call would have raised AWS's error, and nothing is built or cached for the region."""

    def __init__(self, region: str, *, admin_list: bool) -> None:
        self._region = region
        self._admin_list = admin_list

    def __getattr__(self, method: str) -> Callable[..., Any]:
        operation = "".join(part.capitalize() for part in method.split("_"))

        def refuse(*_: Any, **__: Any) -> Any:
            raise RegionNotAllowed(self._region, operation, admin_list=self._admin_list)

        return refuse


class AwsClients:
    """Clients per (service, identity); one instance per operator process.

    ``allowed_regions`` (the admin's ``ECR_OPERATOR_ALLOWED_REGIONS``) replaces botocore's list of ECR
    regions when not empty. At most ``max_clients`` clients are kept, least recently used dropped first.
    """

    def __init__(
        self,
        metrics: Metrics | None = None,
        config: Config = CLIENT_CONFIG,
        *,
        allowed_regions: Iterable[str] = (),
        max_clients: int = MAX_CACHED_CLIENTS,
        max_sessions: int = MAX_CACHED_SESSIONS,
    ) -> None:
        self._metrics = metrics
        self._config = config
        self._admin_regions = frozenset(allowed_regions)
        self._max_clients = max_clients
        self._max_sessions = max_sessions
        self._lock = threading.Lock()
        self._base_session: botocore.session.Session | None = None
        self._sessions: OrderedDict[str, botocore.session.Session] = OrderedDict()
        self._clients: OrderedDict[tuple[str, AwsIdentity], Any] = OrderedDict()

    def region_allowed(self, region: str) -> bool:
        return region in (self._admin_regions or known_ecr_regions())

    @property
    def cached_clients(self) -> int:
        return len(self._clients)

    @overload
    def client(self, service: Literal["ecr"], identity: AwsIdentity) -> ECRClient: ...
    @overload
    def client(self, service: Literal["iam"], identity: AwsIdentity) -> IAMClient: ...
    @overload
    def client(self, service: Literal["sts"], identity: AwsIdentity) -> STSClient: ...
    def client(self, service: str, identity: AwsIdentity) -> Any:
        if not self.region_allowed(identity.region):
            return _RefusedRegionClient(identity.region, admin_list=bool(self._admin_regions))
        key = (service, identity)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                session = self._session_for(identity.role_arn, identity.region)
                # botocore's own create_client: boto3.Session() would append its data path to the shared
                # loader's search paths on every call, and adds nothing these services use.
                client = session.create_client(service, region_name=identity.region, config=self._config)
                self._clients[key] = client
                # Dropped, not closed: another thread may be in a call on it; it closes when collected.
                while len(self._clients) > self._max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(key)
            return client

    @overload
    async def client_off_loop(self, service: Literal["ecr"], identity: AwsIdentity) -> ECRClient: ...
    @overload
    async def client_off_loop(self, service: Literal["iam"], identity: AwsIdentity) -> IAMClient: ...
    @overload
    async def client_off_loop(self, service: Literal["sts"], identity: AwsIdentity) -> STSClient: ...
    async def client_off_loop(self, service: str, identity: AwsIdentity) -> Any:
        """``client`` for coroutines: building a client loads botocore's service model (hundreds of ms on a
        busy node) under a lock a worker thread may hold, so it never runs on the event loop. A client
        already built is returned at once (no thread hop per AWS call) when the lock is free."""
        if self._lock.acquire(blocking=False):
            try:
                cached = self._clients.get((service, identity))
                if cached is not None:
                    self._clients.move_to_end((service, identity))
                    return cached
            finally:
                self._lock.release()
        return await asyncio.to_thread(lambda: self.client(service, identity))  # type: ignore[call-overload]

    def _session_for(self, role_arn: str | None, region: str) -> botocore.session.Session:
        if self._base_session is None:
            self._base_session = self._new_session()
        if role_arn is None:
            return self._base_session
        session = self._sessions.get(role_arn)
        if session is not None:
            self._sessions.move_to_end(role_arn)
            return session
        session = self._new_session()
        # botocore has no public way to give a session refreshable credentials; this private
        # attribute is the documented-by-practice one that boto3's own assume-role provider fills.
        session._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
            refresh_using=self._assume_role_refresher(role_arn, region),
            method="sts-assume-role",
        )
        self._sessions[role_arn] = session
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)  # its clients keep it alive as long as they are kept
        return session

    def _new_session(self) -> botocore.session.Session:
        session = botocore.session.get_session()
        # Before any client exists, so botocore never loads its whole endpoint table (endpoint_table).
        session._internal_components.register_component(  # type: ignore[attr-defined]
            "endpoint_resolver", endpoint_resolver()
        )
        if self._base_session is not None:
            # One loader (and its cache of parsed service models) for all sessions: each session loading
            # its own costs ~8.5 MiB per assumed role (measured), 0.3 MiB shared.
            session.register_component("data_loader", self._base_session.get_component("data_loader"))
        if self._metrics is not None:
            # needs-retry fires once per HTTP attempt (after-call only once per API call), so the metric
            # counts what AWS actually received, retries included, and sees throttling that was retried.
            session.register("needs-retry", self._count_attempt)
        return session

    def _assume_role_refresher(self, role_arn: str, region: str) -> Callable[[], dict[str, str]]:
        def refresh() -> dict[str, str]:
            sts = self.client("sts", AwsIdentity(region=region))
            credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME)["Credentials"]
            expiry: datetime = credentials["Expiration"]
            return {
                "access_key": credentials["AccessKeyId"],
                "secret_key": credentials["SecretAccessKey"],
                "token": credentials["SessionToken"],
                "expiry_time": expiry.astimezone(UTC).isoformat(),
            }

        return refresh

    def _count_attempt(self, **event: Any) -> None:
        """A needs-retry listener that only observes: returning None leaves the retry decision to botocore."""
        assert self._metrics is not None
        response: tuple[Any, dict[str, Any]] | None = event.get("response")
        operation = event["operation"]
        service = operation.service_model.service_name
        if response is None:
            outcome = "network_error"
        else:
            http_response, parsed = response
            status = getattr(http_response, "status_code", 0)
            code = parsed.get("Error", {}).get("Code", "") if isinstance(parsed, dict) else ""
            if code in THROTTLING_CODES or status == 429:
                outcome = "throttled"
                self._metrics.aws_throttles.labels(service=service, operation=operation.name).inc()
            elif status >= 500:
                outcome = "server_error"
            elif status >= 400:
                outcome = "client_error"
            else:
                outcome = "success"
        self._metrics.aws_calls.labels(service=service, operation=operation.name, outcome=outcome).inc()
