"""A small synchronous registry client for the harness: seed images into the world's registries, probe them.

It speaks just enough of the distribution API (monolithic blob upload, manifest PUT/HEAD) and auth (basic,
bearer tokens from a ``WWW-Authenticate`` challenge) to be independent of the operator's own registry client.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import ssl
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_ACCEPT = ", ".join(
    [
        OCI_INDEX,
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_BASIC = "\0basic"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> ("bearer", {realm, service, scope})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(params))


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class SandboxRegistryClient:
    """Client for one registry (``url`` like ``https://127.0.0.1:5000``) trusting ``ca_bundle``."""

    url: str
    ca_bundle: Path
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    # Authorization header values: per scope for bearer tokens, under _BASIC once basic auth was asked for.
    _authorizations: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._ssl = ssl.create_default_context(cafile=str(self.ca_bundle))

    def _send(self, url: str, method: str, body: bytes, headers: Mapping[str, str]) -> Response:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"no host in {url}")
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port or 443, context=self._ssl, timeout=self.timeout
        )
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            payload = body if body or method in ("PUT", "POST") else None
            connection.request(method, target, body=payload, headers=dict(headers))
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        return Response(response.status, {key.lower(): value for key, value in response.getheaders()}, data)

    def request(
        self,
        method: str,
        path_or_url: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        scope: str | None = None,
        answer_challenge: bool = True,
    ) -> Response:
        """Send a request, answering one auth challenge (basic, or a bearer token for ``scope``) unless told
        not to."""
        url = path_or_url if path_or_url.startswith("https://") else self.url + path_or_url
        base_headers = dict(headers or {})
        cached = self._authorizations.get(_BASIC) or self._authorizations.get(scope or "")
        first_headers = {**base_headers, "Authorization": cached} if cached else base_headers
        response = self._send(url, method, body, first_headers)
        if response.status != 401 or not answer_challenge:
            return response
        authorization = self._answer_challenge(response.header("www-authenticate") or "", scope)
        if authorization is None:
            return response
        return self._send(url, method, body, {**base_headers, "Authorization": authorization})

    def _answer_challenge(self, challenge: str, scope: str | None) -> str | None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.username is None or self.password is None:
                return None
            self._authorizations[_BASIC] = self._basic_authorization()
            return self._authorizations[_BASIC]
        if scheme != "bearer" or "realm" not in params:
            return None
        query = {"service": params.get("service", "")}
        wanted_scope = scope or params.get("scope")
        if wanted_scope:
            query["scope"] = wanted_scope
        token_headers = {}
        if self.username is not None and self.password is not None:
            token_headers["Authorization"] = self._basic_authorization()
        token_response = self._send(f"{params['realm']}?{urlencode(query)}", "GET", b"", token_headers)
        if token_response.status != 200:
            return None
        token_data = json.loads(token_response.body)
        token = str(token_data.get("token") or token_data["access_token"])
        self._authorizations[scope or ""] = f"Bearer {token}"
        return self._authorizations[scope or ""]

    def _basic_authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def push_blob(self, repository: str, data: bytes) -> str:
        """Upload ``data`` in one request (POST, then PUT with the digest); return its digest."""
        digest = sha256_digest(data)
        scope = f"repository:{repository}:pull,push"
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope)
        _expect(start, 202, f"start upload to {repository}")
        location = start.header("location") or ""
        separator = "&" if "?" in location else "?"
        finish = self.request(
            "PUT",
            f"{location}{separator}digest={digest}",
            data,
            {"Content-Type": "application/octet-stream"},
            scope=scope,
        )
        _expect(finish, 201, f"upload blob {digest} to {repository}")
        return digest

    def push_manifest(self, repository: str, reference: str, manifest: bytes, media_type: str) -> str:
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            manifest,
            {"Content-Type": media_type},
            scope=f"repository:{repository}:pull,push",
        )
        _expect(response, 201, f"put manifest {repository}:{reference}")
        return sha256_digest(manifest)

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a HEAD reports for ``reference``, or None if the registry has no such manifest."""
        response = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": MANIFEST_ACCEPT},
            scope=f"repository:{repository}:pull",
        )
        if response.status == 404:
            return None
        _expect(response, 200, f"head manifest {repository}:{reference}")
        return response.header("docker-content-digest")

    def push_image(
        self, repository: str, tag: str, *, platform: str = "linux/amd64", layer_size: int = 1024
    ) -> str:
        """Push a small single-platform OCI image with unique content; return its manifest digest."""
        manifest = self._push_image_parts(repository, platform, layer_size)
        return self.push_manifest(repository, tag, manifest, OCI_MANIFEST)

    def push_index(
        self,
        repository: str,
        tag: str,
        platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
        layer_size: int = 1024,
    ) -> str:
        """Push a multi-platform OCI index (one image per platform, pushed by digest); return its digest."""
        entries = []
        for platform in platforms:
            manifest = self._push_image_parts(repository, platform, layer_size)
            digest = self.push_manifest(repository, sha256_digest(manifest), manifest, OCI_MANIFEST)
            os_name, architecture = platform.split("/", 1)
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "platform": {"os": os_name, "architecture": architecture},
                }
            )
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        return self.push_manifest(repository, tag, index, OCI_INDEX)

    def _push_image_parts(self, repository: str, platform: str, layer_size: int) -> bytes:
        layer_tar = _tar_with_random_file(layer_size)
        layer = gzip.compress(layer_tar, mtime=0)
        os_name, architecture = platform.split("/", 1)
        config = json.dumps(
            {
                "architecture": architecture,
                "os": os_name,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer_tar)]},
            }
        ).encode()
        config_digest = self.push_blob(repository, config)
        layer_digest = self.push_blob(repository, layer)
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": len(layer)}],
            }
        ).encode()


def _tar_with_random_file(size: int) -> bytes:
    content = os.urandom(size)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("seed.bin")
        info.size = size
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class RegistryResponseError(RuntimeError):
    pass


def _expect(response: Response, status: int, what: str) -> None:
    if response.status != status:
        body = response.body[:300].decode(errors="replace")
        raise RegistryResponseError(f"{what}: HTTP {response.status} (expected {status}): {body}")
