"""Where ``ecr-operator mirror`` finds credentials (auth files, ECR tokens) and the settings it shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ecr_operator.ecr_hosts import ecr_host_region
from ecr_operator.json_object import parse_json_object
from ecr_operator.registry.auth import Credentials, DockerConfigCredentials, InvalidDockerConfig
from ecr_operator.registry.errors import AuthError

SETTINGS_PREFIX = "ECR_OPERATOR_"

# Keys of a docker config entry that carry a credential; entries without any (docker writes
# ``"auths": {"host": {}}`` when a credential helper holds the secret) say nothing and are skipped.
_CREDENTIAL_KEYS = ("auth", "username", "password", "identitytoken", "registrytoken")


def auth_file_candidates(environ: Mapping[str, str], home: Path, explicit: Path | None = None) -> list[Path]:
    """Auth files in the order containers-auth.json(5) reads them (docker's config among them).

    An explicit ``--authfile`` or ``REGISTRY_AUTH_FILE`` is the only file read, as in skopeo.
    """
    if explicit is not None:
        return [explicit]
    if environ.get("REGISTRY_AUTH_FILE"):
        return [Path(environ["REGISTRY_AUTH_FILE"])]
    candidates: list[Path] = []
    if environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else home / ".config"
    candidates.append(config_home / "containers" / "auth.json")
    docker_dir = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else home / ".docker"
    candidates.append(docker_dir / "config.json")
    candidates.append(home / ".dockercfg")
    return candidates


def read_auth_file(path: Path) -> DockerConfigCredentials:
    """Credentials of one auth file; InvalidDockerConfig names the file (never a credential)."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise InvalidDockerConfig(f"cannot read {path}: {error.strerror}") from None
    document = parse_json_object(
        text, InvalidDockerConfig, f"{path} is not JSON", f"{path} is not a JSON object"
    )
    # ~/.dockercfg (docker before 1.7) is the bare host -> entry mapping; a config.json may hold no
    # "auths" at all when a credential store keeps every secret.
    auths = document if path.name == ".dockercfg" else document.get("auths", {})
    if not isinstance(auths, dict):
        raise InvalidDockerConfig(f"{path}: 'auths' is not an object")
    usable = {
        key: value
        for key, value in auths.items()
        if isinstance(value, dict) and any(value.get(name) for name in _CREDENTIAL_KEYS)
    }
    try:
        return DockerConfigCredentials.from_json({"auths": usable})
    except InvalidDockerConfig as error:
        raise InvalidDockerConfig(f"{path}: {error}") from None


def load_auth_files(candidates: Sequence[Path], *, required: bool) -> list[DockerConfigCredentials]:
    """Every candidate that exists, parsed; a ``required`` (explicitly named) file must exist."""
    found = []
    for path in candidates:
        if not required and not path.is_file():
            continue
        found.append(read_auth_file(path))
    return found


def decode_ecr_token(token: str) -> Credentials:
    """An ECR authorization token (base64 of ``AWS:<password>``), decoded as the operator decodes it."""
    from ecr_operator.aws.tokens import TokenRefreshError, decode_authorization_token

    try:
        return Credentials(*decode_authorization_token(token))
    except TokenRefreshError as error:
        raise AuthError(str(error)) from None


def fetch_ecr_credentials(region: str) -> Credentials:
    """GetAuthorizationToken in ``region`` with the environment's AWS credentials (AWS_ENDPOINT_URL too).

    boto3 is imported here, not at the top: it costs a third of a second and 15 MB that copies between
    other registries do not need.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from ecr_operator.aws.session import AwsClients, error_code, error_message
    from ecr_operator.reconcile.identity import AwsIdentity

    client = AwsClients().client("ecr", AwsIdentity(region=region))
    try:
        answer = client.get_authorization_token()
    except (BotoCoreError, ClientError) as error:
        raise AuthError(
            f"ECR authorization token in {region}: {error_code(error)}: {error_message(error)}"
        ) from None
    data = answer.get("authorizationData") or []
    if not data or "authorizationToken" not in data[0]:
        raise AuthError(f"ECR authorization token in {region}: the answer holds no token")
    return decode_ecr_token(data[0]["authorizationToken"])


class EcrTokenCredentials:
    """Credentials for ECR registry hosts from GetAuthorizationToken, fetched once per region.

    A token opens every registry the AWS principal may reach in its region (12 h), so one per region
    serves the whole run.
    """

    def __init__(self, fetch: Callable[[str], Credentials] = fetch_ecr_credentials) -> None:
        self._fetch = fetch
        self._by_region: dict[str, Credentials] = {}
        self._lock = asyncio.Lock()

    async def credentials_for(self, registry: str, repository: str) -> Credentials | None:
        region = ecr_host_region(registry)
        if region is None:
            return None
        async with self._lock:
            if region not in self._by_region:
                self._by_region[region] = await asyncio.to_thread(self._fetch, region)
            return self._by_region[region]


@dataclass(frozen=True)
class RegistrySettings:
    """The operator settings this command uses."""

    host_overrides: Mapping[str, str] = field(default_factory=dict)
    ca_bundle: Path | None = None


def registry_settings(environ: Mapping[str, str]) -> RegistrySettings:
    """Host overrides and CA bundle from the operator settings (InvalidSettingsError if malformed).

    Without any ``ECR_OPERATOR_*`` variable the settings are their defaults, and pydantic (a tenth of
    a second of start-up) is not imported at all.
    """
    if not any(name.upper().startswith(SETTINGS_PREFIX) for name in environ):
        return RegistrySettings()
    from ecr_operator.config import load_settings

    settings = load_settings()
    return RegistrySettings(settings.registry_host_overrides, settings.ca_bundle)


def registry_endpoints(overrides: Mapping[str, str], registries: Sequence[str]) -> dict[str, str]:
    """Where each ECR registry is really served: its own override, else the ``*`` one, else itself."""
    endpoints = {}
    for registry in registries:
        target = overrides.get(registry) or (overrides.get("*") if ecr_host_region(registry) else None)
        if target:
            endpoints[registry] = target
    return endpoints
