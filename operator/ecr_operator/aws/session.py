"""boto3 clients, created once per (service, region, role) and shared by every handler.

boto3 clients are thread-safe, Sessions are not: one botocore session per identity is built here, under a
lock, and its clients are reused for the life of the process. Assumed roles refresh their credentials by
themselves before they expire. Every call is counted in the operator's metrics by outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import ClientError

from ecr_operator.metrics import Metrics

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


@dataclass(frozen=True, order=True)
class AwsIdentity:
    """Who the operator acts as in one region: its own credentials, or a role it assumes."""

    region: str
    role_arn: str | None = None

    def describe(self) -> str:
        return f"{self.role_arn or 'operator credentials'} in {self.region}"


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


class AwsClients:
    """Clients per (service, identity); one instance per operator process."""

    def __init__(self, metrics: Metrics | None = None, config: Config = CLIENT_CONFIG) -> None:
        self._metrics = metrics
        self._config = config
        self._lock = threading.Lock()
        self._base_session: botocore.session.Session | None = None
        self._sessions: dict[str | None, botocore.session.Session] = {}
        self._clients: dict[tuple[str, AwsIdentity], Any] = {}

    @overload
    def client(self, service: Literal["ecr"], identity: AwsIdentity) -> ECRClient: ...
    @overload
    def client(self, service: Literal["iam"], identity: AwsIdentity) -> IAMClient: ...
    @overload
    def client(self, service: Literal["sts"], identity: AwsIdentity) -> STSClient: ...
    def client(self, service: str, identity: AwsIdentity) -> Any:
        key = (service, identity)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                session = self._session_for(identity.role_arn, identity.region)
                client = boto3.Session(botocore_session=session).client(
                    service,  # type: ignore[call-overload]  # service is one of the overloads above
                    region_name=identity.region,
                    config=self._config,
                )
                self._clients[key] = client
            return client

    def _session_for(self, role_arn: str | None, region: str) -> botocore.session.Session:
        session = self._sessions.get(role_arn)
        if session is not None:
            return session
        if self._base_session is None:
            self._base_session = self._new_session()
        if role_arn is None:
            session = self._base_session
        else:
            session = self._new_session()
            # botocore has no public way to give a session refreshable credentials; this private
            # attribute is the documented-by-practice one that boto3's own assume-role provider fills.
            session._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
                refresh_using=self._assume_role_refresher(role_arn, region),
                method="sts-assume-role",
            )
        self._sessions[role_arn] = session
        return session

    def _new_session(self) -> botocore.session.Session:
        session = botocore.session.get_session()
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
