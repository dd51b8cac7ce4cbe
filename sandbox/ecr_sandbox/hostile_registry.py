"""A hostile OCI registry for the test world: each repository path picks a way to hurt a client.

Run as ``python -m ecr_sandbox.hostile_registry --port P --tls-cert C --tls-key K``. It speaks
enough of the distribution API (``/v2/``, tags/list, manifests, blobs, referrers; read-only) to look like a
registry, over TLS with the harness CA. The first segment of a repository name chooses the behaviour, the
second (where a behaviour has variants) the variant, e.g. ``trickle/body/team-a``:

- ``endless-tags/*``: tags/list pages of ``n`` new tags, each with a ``Link: <...?last=...>; rel="next"``
  to a page never seen before;
- ``trickle/headers/*``: manifest HEAD/GET send the status line at once, then the headers one byte every
  ``--trickle-interval`` seconds; ``trickle/body/*``: HEAD answers at once, GET trickles its body;
- ``self-referrers/same/*``: a valid image (tag ``v1``) whose referrers page links to itself as
  ``rel="next"``; ``self-referrers/fresh/*``: every page links to a new page URL (``?page=N+1``);
- ``retry-after/300/*``: every request answered ``429`` with ``Retry-After: 300``;
  ``retry-after/superscript/*``: with ``Retry-After: ²`` (UTF-8; ``str.isdigit`` says yes, ``int`` no);
- ``duplicate-children/*``: tag ``v1`` is an OCI index listing one child 2,000 times (the child and its
  blobs are served correctly);
- ``realm-churn/*``: every request answered ``401`` with a Bearer realm on a new URL of this server each
  time; every realm's token endpoint hands out a 1 MiB token with ``expires_in: 1e300``;
  ``realm-churn/fits/*``: the same with 60 KiB tokens, small enough for a client to accept and cache;
- ``malformed/tags/*``: tags ``1.0.0``, ``v1``, a 4,400-digit tag and ``-bad``;
  ``malformed/digest/*``: manifests served with ``Docker-Content-Digest: x:y``;
  ``malformed/platform/*``: tag ``v1`` is an index whose second child's platform string is 100 characters;
  ``malformed/json/*``: tags/list and manifest bodies that are not JSON (the HEAD digest matches them);
- ``redos/*``: tag ``"a"*30 + "-"``, bait for ``^(a+)+$``, and ``aaaa``, ``v1`` (both the image);
- anything else: a well-behaved registry, ``v1`` (an image) and ``multi`` (linux/amd64 and linux/arm64).

Every response is logged to stdout in Apache combined format (what ``RegistryInfo.requests()`` parses), once
it is complete. ``GET /_harness/stats`` answers, per repository, the requests received so far (by endpoint)
and how many are still open (a trickle the client has not hung up on), plus the tokens handed out.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import itertools
import json
import os
import re
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from ecr_sandbox.tls_server import TlsThreadingHTTPServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
JSON = "application/json"

DUPLICATE_CHILDREN = 2000
TOKEN_BYTES = 1024 * 1024
FITTING_TOKEN_BYTES = 60 * 1024
HUGE_TAG_DIGITS = 4400
LONG_PLATFORM_CHARS = 100
REDOS_BAIT = "a" * 30 + "-"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Syntactically a JSON object cut short: a parser must refuse it.
BROKEN_JSON = b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": {"digest": '
STATS_PATH = "/_harness/stats"

_API_PATH = re.compile(
    r"^/v2/(?P<name>.+?)/(?P<kind>tags/list|manifests|blobs|referrers)(?:/(?P<ref>[^/]+))?$"
)
_REALM_PATH = re.compile(r"^/_realm/(?P<realm>\d+)/token$")
_PAGE_TAG = re.compile(r"^p(?P<page>\d{9})-\d{4}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


def _canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _image(architecture: str, seed: bytes) -> tuple[Blob, list[Blob]]:
    """A tiny single-platform image: its manifest and blobs (config, one uncompressed layer)."""
    layer = Blob(OCI_LAYER, b"hostile-registry layer " + seed + os.urandom(64))
    config = Blob(
        OCI_CONFIG,
        _canonical(
            {
                "architecture": architecture,
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        ),
    )
    manifest = Blob(
        OCI_MANIFEST,
        _canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            }
        ),
    )
    return manifest, [config, layer]


def _index(entries: list[dict[str, Any]]) -> Blob:
    return Blob(OCI_INDEX, _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}))


def _platform(architecture: str) -> dict[str, str]:
    return {"os": "linux", "architecture": architecture}


@dataclass
class Content:
    """What the registry serves, made once at start-up; manifests and blobs are found by digest in any
    repository."""

    image: Blob
    arm_image: Blob
    multi: Blob
    duplicate_children: Blob
    long_platform: Blob
    broken_manifest: Blob
    by_digest: dict[str, Blob] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Content:
        image, image_blobs = _image("amd64", b"amd64")
        arm_image, arm_blobs = _image("arm64", b"arm64")
        long_architecture = "a" * (LONG_PLATFORM_CHARS - len("linux/"))
        long_image, long_blobs = _image(long_architecture, b"long")
        content = cls(
            image=image,
            arm_image=arm_image,
            multi=_index(
                [
                    image.descriptor(platform=_platform("amd64")),
                    arm_image.descriptor(platform=_platform("arm64")),
                ]
            ),
            duplicate_children=_index(
                [image.descriptor(platform=_platform("amd64")) for _ in range(DUPLICATE_CHILDREN)]
            ),
            long_platform=_index(
                [
                    image.descriptor(platform=_platform("amd64")),
                    long_image.descriptor(platform=_platform(long_architecture)),
                ]
            ),
            broken_manifest=Blob(OCI_MANIFEST, BROKEN_JSON),
        )
        for blob in (
            image,
            arm_image,
            long_image,
            content.multi,
            content.duplicate_children,
            content.long_platform,
            content.broken_manifest,
            *image_blobs,
            *arm_blobs,
            *long_blobs,
        ):
            content.by_digest[blob.digest] = blob
        return content


class Stats:
    """Requests per repository and endpoint, requests still open, tokens handed out (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, Counter[str]] = {}
        self._open: Counter[str] = Counter()
        self.tokens_issued = 0
        self.token_bytes = 0

    def started(self, repository: str, endpoint: str) -> None:
        with self._lock:
            self._requests.setdefault(repository, Counter())[endpoint] += 1
            self._open[repository] += 1

    def finished(self, repository: str) -> None:
        with self._lock:
            self._open[repository] -= 1

    def token(self, size: int) -> None:
        with self._lock:
            self.tokens_issued += 1
            self.token_bytes += size

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "repositories": {
                    name: {
                        "requests": sum(counts.values()),
                        "open": self._open[name],
                        "endpoints": dict(counts),
                    }
                    for name, counts in self._requests.items()
                },
                "tokens": {"issued": self.tokens_issued, "bytes": self.token_bytes},
            }


@dataclass(frozen=True)
class Answer:
    """A complete response; ``trickle`` sends the headers (or the body) one byte per interval."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    trickle: str | None = None  # None | "headers" | "body"


def _error(status: int, code: str, message: str, *headers: tuple[str, str]) -> Answer:
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return Answer(status, body, (("Content-Type", JSON), *headers))


def _json(document: object, *headers: tuple[str, str]) -> Answer:
    return Answer(200, json.dumps(document).encode(), (("Content-Type", JSON), *headers))


def _raw_header(text: str) -> str:
    """``text`` as its UTF-8 bytes on the wire: http.server encodes header values as latin-1."""
    return text.encode().decode("latin-1")


class HostileRegistry:
    """Decides every answer; the request handler only moves bytes."""

    def __init__(self, port: int, trickle_interval: float) -> None:
        self.port = port
        self.trickle_interval = trickle_interval
        self.content = Content.create()
        self.stats = Stats()
        self._realms = itertools.count(1)
        # One 1 MiB string; each token is it with a unique prefix.
        self._token_body = base64.urlsafe_b64encode(os.urandom(TOKEN_BYTES))[:TOKEN_BYTES].decode()

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # --- routing -------------------------------------------------------------------------------------

    def classify(self, path: str) -> tuple[str, str]:
        """(repository, endpoint) a request is counted under."""
        url = urlsplit(path)
        match = _API_PATH.match(url.path)
        if match:
            return match["name"], match["kind"]
        if _REALM_PATH.match(url.path):
            scope = parse_qs(url.query).get("scope", [""])[0]
            parts = scope.split(":")
            return (parts[1] if len(parts) == 3 else "", "token")
        return "", url.path

    def answer(self, method: str, path: str) -> Answer:
        url = urlsplit(path)
        query = parse_qs(url.query)
        if url.path in ("/v2", "/v2/"):
            return _json({}, ("Docker-Distribution-API-Version", "registry/2.0"))
        if url.path == STATS_PATH:
            return _json(self.stats.snapshot())
        realm = _REALM_PATH.match(url.path)
        if realm:
            return self._token(query)
        match = _API_PATH.match(url.path)
        if match is None:
            return _error(404, "NOT_FOUND", f"no such endpoint {url.path}")
        if method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "this registry is read-only")
        name, kind, reference = match["name"], match["kind"], match["ref"]
        behaviour, _, rest = name.partition("/")
        variant = rest.partition("/")[0]
        if behaviour == "retry-after":
            after = "²" if variant == "superscript" else "300"
            return _error(429, "TOOMANYREQUESTS", "slow down", ("Retry-After", _raw_header(after)))
        if behaviour == "realm-churn":
            return self._challenge(name)
        if kind == "tags/list":
            return self._tags(name, behaviour, variant, query)
        if kind == "referrers":
            return self._referrers(name, behaviour, variant, reference or "", query)
        if kind == "blobs":
            return self._blob(reference or "")
        return self._manifest(method, behaviour, variant, reference or "")

    # --- behaviours ----------------------------------------------------------------------------------

    def _tags(self, name: str, behaviour: str, variant: str, query: Mapping[str, list[str]]) -> Answer:
        if behaviour == "endless-tags":
            size = DEFAULT_PAGE_SIZE
            requested = query.get("n", [""])[0]
            if requested.isdigit():
                size = max(1, min(int(requested), MAX_PAGE_SIZE))
            last = _PAGE_TAG.match(query.get("last", [""])[0])
            page = int(last["page"]) + 1 if last else 0
            tags = [f"p{page:09d}-{i:04d}" for i in range(size)]
            link = f'</v2/{name}/tags/list?n={size}&last={tags[-1]}>; rel="next"'
            return _json({"name": name, "tags": tags}, ("Link", link))
        tags = ["v1", "multi"]
        if behaviour == "malformed" and variant == "json":
            return Answer(
                200, b'{"name": "' + name.encode() + b'", "tags": ["v1", ', (("Content-Type", JSON),)
            )
        if behaviour == "malformed":
            tags = ["1.0.0", "v1", "9" * HUGE_TAG_DIGITS, "-bad"]
        elif behaviour == "redos":
            # One bait is enough: ^(a+)+$ on it takes ~2**30 steps in a backtracking engine (~1 min).
            tags = [REDOS_BAIT, "aaaa", "v1"]
        return _json({"name": name, "tags": tags})

    def _referrers(
        self, name: str, behaviour: str, variant: str, subject: str, query: Mapping[str, list[str]]
    ) -> Answer:
        page = _index([])
        headers: list[tuple[str, str]] = [("Content-Type", OCI_INDEX)]
        if behaviour == "self-referrers":
            target = f"/v2/{name}/referrers/{quote(subject, safe=':')}"
            if variant == "fresh":
                number = query.get("page", ["0"])[0]
                target += f"?page={int(number) + 1 if number.isdigit() else 1}"
            headers.append(("Link", f'<{target}>; rel="next"'))
        return Answer(200, page.data, tuple(headers))

    def _blob(self, digest: str) -> Answer:
        blob = self.content.by_digest.get(digest)
        if blob is None or blob.media_type in (OCI_MANIFEST, OCI_INDEX):
            return _error(404, "BLOB_UNKNOWN", f"blob {digest} unknown")
        return Answer(
            200,
            blob.data,
            (("Content-Type", "application/octet-stream"), ("Docker-Content-Digest", blob.digest)),
        )

    def _manifest(self, method: str, behaviour: str, variant: str, reference: str) -> Answer:
        content = self.content
        tagged: dict[str, Blob] = {"v1": content.image, "multi": content.multi}
        if behaviour == "duplicate-children":
            tagged = {"v1": content.duplicate_children}
        elif behaviour == "malformed" and variant == "platform":
            tagged = {"v1": content.long_platform}
        elif behaviour == "malformed" and variant == "json":
            tagged = {"v1": content.broken_manifest}
        elif behaviour == "malformed":
            tagged = {"1.0.0": content.image, "v1": content.image}
        elif behaviour == "redos":
            tagged = {"aaaa": content.image, "v1": content.image}
        elif behaviour in ("endless-tags", "trickle"):
            tagged = {}  # every tag is the image
        manifest = (
            content.by_digest.get(reference)
            if reference.startswith("sha256:")
            else tagged.get(reference, content.image if not tagged else None)
        )
        if behaviour == "malformed" and variant == "digest":
            manifest = content.image
        if manifest is None or manifest.media_type not in (OCI_MANIFEST, OCI_INDEX):
            return _error(404, "MANIFEST_UNKNOWN", f"manifest {reference} unknown")
        digest = "x:y" if behaviour == "malformed" and variant == "digest" else manifest.digest
        headers = (("Content-Type", manifest.media_type), ("Docker-Content-Digest", digest))
        trickle = None
        if behaviour == "trickle":
            trickle = "headers" if variant != "body" else "body" if method == "GET" else None
        return Answer(200, manifest.data, headers, trickle)

    def _challenge(self, repository: str) -> Answer:
        realm = next(self._realms)
        challenge = (
            f'Bearer realm="{self.origin}/_realm/{realm}/token",service="hostile-{realm}",'
            f'scope="repository:{repository}:pull"'
        )
        return _error(401, "UNAUTHORIZED", "authentication required", ("WWW-Authenticate", challenge))

    def _token(self, query: Mapping[str, list[str]]) -> Answer:
        scope = query.get("scope", [""])[0]
        fits = scope.startswith("repository:realm-churn/fits/")
        filler = self._token_body[:FITTING_TOKEN_BYTES] if fits else self._token_body
        token = f"{next(self._realms)}.{filler}"
        self.stats.token(len(token))
        body = ('{"token": "' + token + '", "expires_in": 1e300}').encode()
        return Answer(200, body, (("Content-Type", JSON),))


class HostileRequestHandler(BaseHTTPRequestHandler):
    server: HostileServer
    protocol_version = "HTTP/1.1"  # keep-alive: a client can be hurt as fast as it asks

    def _handle(self) -> None:
        registry = self.server.registry
        length = self.headers.get("Content-Length")
        if length and length.isdigit():
            self.rfile.read(int(length))  # drain uploads we refuse, so keep-alive stays in step
        repository, endpoint = registry.classify(self.path)
        counted = self.path != STATS_PATH
        if counted:
            registry.stats.started(repository, endpoint)
        sent = 0
        answer = Answer(500)
        try:
            answer = registry.answer(self.command, self.path)
            sent = self._send(answer)
        except (OSError, ssl.SSLError):
            self.close_connection = True  # the client hung up (often: gave up on a trickle)
        finally:
            if counted:
                registry.stats.finished(repository)
            self._access_log(answer.status, sent)

    # BaseHTTPRequestHandler dispatches on do_<METHOD>; every method gets the same hostile answer logic.
    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    def _send(self, answer: Answer) -> int:
        body = b"" if self.command == "HEAD" else answer.body
        head = [f"HTTP/1.1 {answer.status} {http.client.responses.get(answer.status, '')}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in answer.headers]
        head.append(f"Content-Length: {len(answer.body)}\r\n\r\n")
        head_bytes = "".join(head).encode("latin-1")
        if answer.trickle == "headers":
            status_line_end = head_bytes.index(b"\r\n") + 2
            self.wfile.write(head_bytes[:status_line_end])
            self._trickle(head_bytes[status_line_end:])
            self.wfile.write(body)
        elif answer.trickle == "body":
            self.wfile.write(head_bytes)
            self._trickle(body)
        else:
            self.wfile.write(head_bytes + body)
        self.wfile.flush()
        return len(body)

    def _trickle(self, data: bytes) -> None:
        for offset in range(len(data)):
            self.wfile.write(data[offset : offset + 1])
            self.wfile.flush()
            time.sleep(self.server.registry.trickle_interval)

    def _access_log(self, status: int, size: int) -> None:
        # Apache combined format, like distribution's access log (RegistryInfo.requests() parses it).
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        agent = (self.headers.get("User-Agent") or "").replace('"', "'")
        request = f"{self.command} {self.path} {self.request_version}"
        line = f'{self.client_address[0]} - - [{when}] "{request}" {status} {size} "" "{agent}"\n'
        self.server.write_log(line)

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own per-request lines on stderr: the access log on stdout says it all."""


class HostileServer(TlsThreadingHTTPServer):
    # Many connections at once: each trickle holds one (and its thread) until the client gives up.
    request_queue_size = 128

    def __init__(self, registry: HostileRegistry, tls_cert: Path, tls_key: Path) -> None:
        super().__init__(registry.port, HostileRequestHandler, tls_cert, tls_key)
        self.registry = registry
        self._log_lock = threading.Lock()

    def write_log(self, line: str) -> None:
        with self._log_lock:
            sys.stdout.write(line)
            sys.stdout.flush()


def fetch_stats(url: str, ca_bundle: Path, timeout: float = 10.0) -> dict[str, Any]:
    """``GET /_harness/stats`` of the hostile registry at ``url`` (``https://127.0.0.1:PORT``)."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=str(ca_bundle))
    connection = http.client.HTTPSConnection(
        parts.hostname or "127.0.0.1", parts.port, context=context, timeout=timeout
    )
    try:
        connection.request("GET", STATS_PATH)
        response = connection.getresponse()
        document: dict[str, Any] = json.loads(response.read())
    finally:
        connection.close()
    return document


def repository_stats(stats: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(repository, its counters) for each repository of a ``fetch_stats`` answer starting with ``prefix``."""
    for name, counters in stats.get("repositories", {}).items():
        if name.startswith(prefix):
            yield name, counters


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Hostile OCI registry for the ecr-operator test world")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", type=Path, required=True)
    parser.add_argument("--tls-key", type=Path, required=True)
    parser.add_argument("--trickle-interval", type=float, default=3.0, help="seconds per trickled byte")
    args = parser.parse_args(argv)
    registry = HostileRegistry(args.port, args.trickle_interval)
    server = HostileServer(registry, args.tls_cert, args.tls_key)
    print(f"hostile registry on {registry.origin}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
