"""OCI registries of the world: Debian's distribution 2.8 (``docker-registry``) in four auth flavours."""

from __future__ import annotations

import datetime
import json
import re
import secrets
import subprocess
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from ecr_sandbox.tools import tool_path

# The world's distribution registries, and the name of our own hostile one (ecr_sandbox.hostile_registry),
# for tests that no upstream can hurt the operator.
REGISTRY_NAMES = ("ecr", "anonymous", "basic", "token")
HOSTILE_REGISTRY = "hostile"


class RegistryAuth(StrEnum):
    NONE = "none"
    HTPASSWD = "htpasswd"
    TOKEN = "token"  # noqa: S105 - the auth scheme's name, not a secret


@dataclass(frozen=True)
class RegistryRequest:
    """One request from a registry's access log."""

    method: str
    path: str
    status: int
    size: int
    time: datetime.datetime
    user_agent: str


# Apache combined log format, as distribution writes it to stdout.
_ACCESS_LINE = re.compile(
    r'^\S+ \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "[^"]*" "(?P<agent>[^"]*)"'
)


def parse_access_log(text: str) -> list[RegistryRequest]:
    requests = []
    for line in text.splitlines():
        match = _ACCESS_LINE.match(line)
        if match is None:
            continue
        size = match["size"]
        requests.append(
            RegistryRequest(
                method=match["method"],
                path=match["path"],
                status=int(match["status"]),
                size=0 if size == "-" else int(size),
                time=datetime.datetime.strptime(match["time"], "%d/%b/%Y:%H:%M:%S %z"),
                user_agent=match["agent"],
            )
        )
    return requests


@dataclass(frozen=True)
class RegistryInfo:
    """How to reach one registry of the world and what it saw.

    ``username``/``password`` are None for the anonymous registry. Repositories whose name starts with
    ``anonymous_pull_prefix`` can be pulled without credentials (None: none can; "": all can). Token-auth
    registries also name their token endpoint (``token_realm``) and ``token_service``.
    """

    name: str
    host: str
    url: str
    auth: RegistryAuth
    access_log: Path
    log: Path
    username: str | None
    password: str | None
    anonymous_pull_prefix: str | None
    token_realm: str | None = None
    token_service: str | None = None
    token_log: Path | None = None

    def requests(self) -> list[RegistryRequest]:
        """Every request the registry answered so far, oldest first."""
        if not self.access_log.exists():
            return []
        return parse_access_log(self.access_log.read_text(encoding="utf-8", errors="replace"))

    def token_requests(self) -> list[dict[str, Any]]:
        """Token requests the issuer answered (token registries only): user, scopes, granted, status."""
        if self.token_log is None or not self.token_log.exists():
            return []
        return [json.loads(line) for line in self.token_log.read_text(encoding="utf-8").splitlines() if line]

    def to_json(self) -> dict[str, Any]:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegistryInfo:
        def optional_path(key: str) -> Path | None:
            return Path(data[key]) if data.get(key) is not None else None

        return cls(
            name=data["name"],
            host=data["host"],
            url=data["url"],
            auth=RegistryAuth(data["auth"]),
            access_log=Path(data["access_log"]),
            log=Path(data["log"]),
            username=data["username"],
            password=data["password"],
            anonymous_pull_prefix=data["anonymous_pull_prefix"],
            token_realm=data.get("token_realm"),
            token_service=data.get("token_service"),
            token_log=optional_path("token_log"),
        )


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """A bcrypt htpasswd file. Cost 4 (the minimum): the registry verifies it on every request."""
    result = subprocess.run(
        [str(tool_path("htpasswd")), "-niBC", "4", username],
        input=password,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"htpasswd failed: {result.stderr.strip()}")
    path.write_text(result.stdout.strip() + "\n", encoding="utf-8")


@dataclass(frozen=True)
class TokenAuthSettings:
    realm: str
    service: str
    issuer: str
    root_cert_bundle: Path


def registry_config(
    *,
    port: int,
    storage_dir: Path,
    tls_cert: Path,
    tls_key: Path,
    htpasswd: Path | None = None,
    token: TokenAuthSettings | None = None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": 0.1,
        # Access log (Apache combined format) goes to stdout, everything else to stderr.
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": secrets.token_hex(16),
            "tls": {"certificate": str(tls_cert), "key": str(tls_key)},
        },
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "sandbox-registry", "path": str(htpasswd)}}
    elif token is not None:
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.root_cert_bundle),
            }
        }
    return config


def write_registry_config(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def registry_argv(config_path: Path) -> list[str]:
    return [str(tool_path("docker-registry")), "serve", str(config_path)]
