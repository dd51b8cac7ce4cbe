"""The AWS part of the world as its clients see it: the moto server's call log and fault controls.

The server side lives in ``moto_server`` (a subprocess, so importing this module stays cheap).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FAULTS_PATH = "/_harness/faults"


@dataclass(frozen=True)
class AwsCall:
    """One AWS API request the moto server answered (or a fault answered for it)."""

    service: str
    operation: str
    status: int
    time: float
    injected: bool = False
    access_key_id: str | None = None
    """Who called: the access key ID of the SigV4 signature (None for an unsigned request)."""
    role_arn: str | None = None
    """For ``AssumeRole``: the role asked for."""
    issued_access_key_id: str | None = None
    """For a successful ``AssumeRole``: the access key ID moto issued (``ASIA...``) for that role."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AwsCall:
        return cls(
            service=str(data["service"]),
            operation=str(data["operation"]),
            status=int(data["status"]),
            time=float(data["time"]),
            injected=bool(data.get("injected", False)),
            access_key_id=_optional_text(data.get("access_key_id")),
            role_arn=_optional_text(data.get("role_arn")),
            issued_access_key_id=_optional_text(data.get("issued_access_key_id")),
        )


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def callers_by_role(calls: Iterable[AwsCall]) -> dict[str, str]:
    """Access key ID -> the role it was issued for, from the ``AssumeRole`` calls in ``calls``. A key missing
    here was not issued by AssumeRole (e.g. the world's static test key, the operator's own credentials)."""
    return {
        call.issued_access_key_id: call.role_arn
        for call in calls
        if call.operation == "AssumeRole" and call.issued_access_key_id and call.role_arn
    }


def read_calls_log(path: Path) -> list[AwsCall]:
    if not path.exists():
        return []
    calls = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            calls.append(AwsCall.from_json(json.loads(line)))
        except (ValueError, KeyError):
            continue  # a line still being written
    return calls


@dataclass(frozen=True)
class AwsFault:
    """Answer matching requests with an AWS error (after ``delay`` seconds) instead of moto.

    ``operation`` "*" matches every operation; ``service`` None every service (e.g. "ecr", "iam").
    ``count`` None keeps the fault until cleared. ``status`` None only delays and then lets moto answer.
    """

    operation: str
    service: str | None = None
    status: int | None = 400
    code: str = "ThrottlingException"
    message: str = "Rate exceeded"
    count: int | None = 1
    delay: float = 0.0

    def matches(self, service: str, operation: str) -> bool:
        return self.operation in ("*", operation) and self.service in (None, service)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AwsFault:
        return cls(**data)


class AwsControl:
    """Drives the harness endpoints of the moto server."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        parts = urlsplit(endpoint)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"endpoint needs host and port: {endpoint}")
        self._host, self._port, self._timeout = parts.hostname, parts.port, timeout

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"moto server {method} {path} -> HTTP {response.status}: {text[:300]}")
        return json.loads(text) if text else None

    def faults(self) -> list[AwsFault]:
        return [AwsFault.from_json(item) for item in self._request("GET", FAULTS_PATH)]

    def add_fault(self, fault: AwsFault) -> None:
        self._request("POST", FAULTS_PATH, fault.to_json())

    def clear_faults(self) -> None:
        self._request("DELETE", FAULTS_PATH)
