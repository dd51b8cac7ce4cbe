"""A registry token service in the style of Docker Hub's ``auth.docker.io/token``.

Run as ``python -m ecr_sandbox.token_issuer --config FILE`` (see ``TokenIssuerConfig``). It answers
``GET /token?service=S&scope=repository:NAME:pull,push`` (HTTP basic auth optional) and the OAuth2 form
``POST /token`` (``grant_type=password``) with an ES256 JWT the distribution registry verifies against the
signing certificate, which is embedded in the token header (``x5c``) and is the registry's ``rootcertbundle``.

Who gets what (like Docker Hub):
- a known user gets every requested action among pull, push, delete (and ``registry:catalog:*``);
- an anonymous client gets ``pull`` on repositories under ``anonymous_pull_prefix`` and nothing else — the
  token is still issued, so the registry answers 401 ``insufficient_scope`` for private repositories;
- wrong credentials get 401 from the issuer itself.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pydantic import BaseModel, ConfigDict

from ecr_sandbox.tls_server import TlsThreadingHTTPServer

USER_ACTIONS = frozenset({"pull", "push", "delete", "*"})


class TokenIssuerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    port: int
    tls_cert: Path
    tls_key: Path
    signing_key: Path
    signing_cert: Path
    issuer: str
    service: str
    users: dict[str, str]
    anonymous_pull_prefix: str
    request_log: Path
    expires_in: int = 300


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``repository:library/nginx:pull,push``; a name may itself hold a colon (``host:5000/x``)."""
        kind, rest = text.split(":", 1)
        name, actions = rest.rsplit(":", 1)
        return cls(kind, name, tuple(action for action in actions.split(",") if action))


def granted_access(user: str | None, scopes: list[Scope], anonymous_pull_prefix: str) -> list[dict[str, Any]]:
    access = []
    for scope in scopes:
        if user is not None:
            allowed = USER_ACTIONS if scope.type == "repository" else frozenset({"*"})
        elif scope.type == "repository" and scope.name.startswith(anonymous_pull_prefix):
            allowed = frozenset({"pull"})
        else:
            allowed = frozenset()
        actions = [action for action in scope.actions if action in allowed]
        if actions:
            access.append({"type": scope.type, "name": scope.name, "actions": actions})
    return access


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_es256_jwt(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> str:
    header = {
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    # JWS wants the raw fixed-width r||s, not the DER signature cryptography produces.
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class TokenIssuer:
    def __init__(self, config: TokenIssuerConfig) -> None:
        self.config = config
        key = serialization.load_pem_private_key(config.signing_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{config.signing_key} is not an EC private key")
        self._key = key
        self._cert = x509.load_pem_x509_certificate(config.signing_cert.read_bytes())
        self._log_lock = threading.Lock()
        self._log = config.request_log.open("a", encoding="utf-8", buffering=1)

    def authenticate(self, username: str | None, password: str | None) -> tuple[bool, str | None]:
        """(credentials acceptable, user); no credentials at all is acceptable as anonymous."""
        if username is None:
            return True, None
        if secrets.compare_digest(self.config.users.get(username, "\0"), password or ""):
            return True, username
        return False, None

    def issue(self, user: str | None, scopes: list[Scope]) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.config.issuer,
            "sub": user or "",
            "aud": self.config.service,
            "exp": now + self.config.expires_in,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": granted_access(user, scopes, self.config.anonymous_pull_prefix),
        }
        token = sign_es256_jwt(claims, self._key, self._cert)
        issued_at = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.config.expires_in,
            "issued_at": issued_at,
        }

    def record(self, entry: dict[str, Any]) -> None:
        with self._log_lock:
            self._log.write(json.dumps({"time": time.time(), **entry}) + "\n")


class TokenRequestHandler(BaseHTTPRequestHandler):
    server: TokenServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            self._reply(404, {"details": "not found"})
            return
        self._handle(parse_qs(url.query), *self._basic_credentials())

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/token":
            self._reply(404, {"details": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        if form.get("grant_type") != ["password"]:
            self._reply(400, {"error": "unsupported_grant_type"})
            return
        self._handle(form, form.get("username", [None])[0], form.get("password", [None])[0])

    def _handle(self, params: dict[str, list[str]], username: str | None, password: str | None) -> None:
        issuer = self.server.issuer
        # OAuth2 clients send several scope parameters or one space-separated list.
        scope_texts = [text for value in params.get("scope", []) for text in value.split(" ") if text]
        service = params.get("service", [""])[0]
        entry: dict[str, Any] = {
            "method": self.command,
            "user": username,
            "service": service,
            "scopes": scope_texts,
        }
        if service != issuer.config.service:
            self._reply(400, {"details": f"unknown service {service!r}"}, entry)
            return
        try:
            scopes = [Scope.parse(text) for text in scope_texts]
        except ValueError:
            self._reply(400, {"details": f"malformed scope in {scope_texts}"}, entry)
            return
        accepted, user = issuer.authenticate(username, password)
        if not accepted:
            self._reply(401, {"details": "incorrect username or password"}, entry)
            return
        response = issuer.issue(user, scopes)
        entry["granted"] = granted_access(user, scopes, issuer.config.anonymous_pull_prefix)
        self._reply(200, response, entry)

    def _basic_credentials(self) -> tuple[str | None, str | None]:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None, None
        try:
            username, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", None  # unreadable credentials are wrong credentials, not anonymous
        return username, password

    def _reply(self, status: int, body: dict[str, Any], entry: dict[str, Any] | None = None) -> None:
        if entry is not None:
            self.server.issuer.record({**entry, "status": status})
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class TokenServer(TlsThreadingHTTPServer):
    def __init__(self, issuer: TokenIssuer) -> None:
        config = issuer.config
        super().__init__(config.port, TokenRequestHandler, config.tls_cert, config.tls_key)
        self.issuer = issuer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Registry token issuer for the ecr-operator sandbox")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    config = TokenIssuerConfig.model_validate_json(args.config.read_text())
    server = TokenServer(TokenIssuer(config))
    print(f"token issuer for service {config.service!r} on https://127.0.0.1:{config.port}/token", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
