"""The client and copy engine over a scripted in-memory transport: retries, redirects, auth, streaming.

Real registries cannot be made to throttle, redirect to storage, or drop a connection on cue; the
integration tests cover the rest against distribution itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field

import pytest
from yarl import URL

from ecr_operator.registry import mediatypes
from ecr_operator.registry.auth import Credentials, StaticCredentials
from ecr_operator.registry.client import RegistryClient, parse_next_link
from ecr_operator.registry.copy import VerifiedStream, copy_image
from ecr_operator.registry.errors import AuthError, ConnectionFailed, DigestMismatch, RegistryError
from ecr_operator.registry.reference import fallback_tag, parse_reference
from ecr_operator.registry.results import BlobDone, ProgressEvent
from ecr_operator.registry.transport import (
    CHUNK_SIZE,
    Body,
    HttpResponse,
    RetryPolicy,
    parse_retry_after,
    redirect_headers,
    send_following_redirects,
)
from registry_fakes import ScriptedResponse

pytestmark = pytest.mark.unit


# --- a scripted network -------------------------------------------------------------------------


@dataclass
class Sent:
    method: str
    url: URL
    headers: dict[str, str]


Handler = Callable[[str, URL, dict[str, str], Body], "ScriptedResponse | None"]


@dataclass
class FakeNetwork:
    """An HttpSender: scripted one-shot answers first, then the in-memory registries by host."""

    registries: dict[str, FakeRegistry] = field(default_factory=dict)
    script: list[tuple[Callable[[str, URL], bool], ScriptedResponse | Exception]] = field(
        default_factory=list
    )
    sent: list[Sent] = field(default_factory=list)

    def once(self, when: Callable[[str, URL], bool], answer: ScriptedResponse | Exception) -> None:
        self.script.append((when, answer))

    async def send(self, method: str, url: URL, headers: Mapping[str, str], body: Body) -> HttpResponse:
        self.sent.append(Sent(method, url, dict(headers)))
        for entry in self.script:
            when, answer = entry
            if when(method, url):
                self.script.remove(entry)
                if isinstance(answer, Exception):
                    if body is not None and not isinstance(body, bytes):
                        await _drain(body, limit=1)
                    raise answer
                return answer
        registry = self.registries.get(url.host_port_subcomponent or "")
        if registry is None:
            return ScriptedResponse(404)
        return await registry.handle(method, url, dict(headers), body)


async def _drain(body: AsyncIterable[bytes], limit: int | None = None) -> bytes:
    chunks = []
    async for chunk in body:
        chunks.append(chunk)
        if limit is not None and len(chunks) >= limit:
            break
    return b"".join(chunks)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    """Just enough of the distribution API: manifests, blobs, monolithic uploads."""

    host: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    # Which repositories link each blob: like distribution, a blob is visible only where it was pushed.
    links: set[tuple[str, str]] = field(default_factory=set)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)
    mount_enabled: bool = True
    referrers_api: bool = False
    completed_uploads: list[str] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)

    async def handle(self, method: str, url: URL, headers: dict[str, str], body: Body) -> ScriptedResponse:
        parts = url.path.split("/")
        if parts[1] == "upload":
            return await self._upload(method, parts[2], url, body)
        kind_at = next(i for i, part in enumerate(parts) if part in ("manifests", "blobs", "referrers"))
        repository, kind, target = "/".join(parts[2:kind_at]), parts[kind_at], "/".join(parts[kind_at + 1 :])
        if kind == "referrers":
            return self._referrers(target)
        if kind == "manifests":
            return await self._manifest(method, repository, target, headers, body)
        if target == "uploads/":
            if self.mount_enabled and (url.query.get("from"), url.query.get("mount")) in self.links:
                self.links.add((repository, url.query["mount"]))
                return ScriptedResponse(201)
            upload = str(uuid.uuid4())
            self.uploads[upload] = repository
            return ScriptedResponse(202, {"Location": f"/upload/{upload}?_state=a%3Db"})
        data = self.blobs.get(target) if (repository, target) in self.links else None
        if data is None:
            return ScriptedResponse(
                404, body=b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}'
            )
        return ScriptedResponse(200, {"Content-Length": str(len(data))}, data if method == "GET" else b"")

    def _referrers(self, subject: str) -> ScriptedResponse:
        if not self.referrers_api:
            return ScriptedResponse(404, body=b"404 page not found")
        entries = []
        for digest, (raw, media_type) in self.manifests.items():
            document = json.loads(raw)
            if document.get("subject", {}).get("digest") == subject:
                entry = {"mediaType": media_type, "digest": digest, "size": len(raw)}
                entries.append({**entry, "artifactType": document.get("artifactType")})
        index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": entries}
        return ScriptedResponse(200, {"Content-Type": mediatypes.OCI_INDEX}, json.dumps(index).encode())

    async def _manifest(
        self, method: str, repository: str, target: str, headers: dict[str, str], body: Body
    ) -> ScriptedResponse:
        if method == "PUT":
            assert isinstance(body, bytes)
            digest = _digest(body)
            self.manifests[digest] = (body, headers["Content-Type"])
            if ":" not in target:
                self.tags[(repository, target)] = digest
            self.pushed.append(target)
            answer = {"Docker-Content-Digest": digest}
            if self.referrers_api and "subject" in json.loads(body):
                answer["OCI-Subject"] = json.loads(body)["subject"]["digest"]
            return ScriptedResponse(201, answer)
        digest = self.tags.get((repository, target), target)
        if digest not in self.manifests:
            return ScriptedResponse(404, body=b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}')
        raw, media_type = self.manifests[digest]
        response_headers = {"Docker-Content-Digest": digest, "Content-Type": media_type}
        return ScriptedResponse(200, response_headers, raw if method == "GET" else b"")

    async def _upload(self, method: str, upload: str, url: URL, body: Body) -> ScriptedResponse:
        if method == "DELETE":
            self.uploads.pop(upload, None)
            return ScriptedResponse(204)
        assert url.query["_state"] == "a=b", "the upload URL must be used as given"
        assert body is not None
        assert not isinstance(body, bytes)
        try:
            data = await _drain(body)
        except Exception as exc:
            # What aiohttp does when the body producer fails: the request dies unfinished.
            raise ConnectionFailed("request body failed") from exc
        if _digest(data) != url.query["digest"]:
            return ScriptedResponse(400, body=b'{"errors":[{"code":"DIGEST_INVALID","message":"bad"}]}')
        self.blobs[url.query["digest"]] = data
        self.links.add((self.uploads[upload], url.query["digest"]))
        self.completed_uploads.append(url.query["digest"])
        return ScriptedResponse(201)

    def add_image(self, repository: str, tag: str, layers: list[bytes]) -> tuple[str, list[str]]:
        config = b'{"architecture":"amd64","os":"linux"}'
        descriptors: list[dict[str, object]] = []
        for data, media_type in [(config, "application/vnd.oci.image.config.v1+json")] + [
            (layer, "application/vnd.oci.image.layer.v1.tar") for layer in layers
        ]:
            self.blobs[_digest(data)] = data
            self.links.add((repository, _digest(data)))
            descriptors.append({"mediaType": media_type, "digest": _digest(data), "size": len(data)})
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mediatypes.OCI_MANIFEST,
                "config": descriptors[0],
                "layers": descriptors[1:],
            }
        ).encode()
        self.manifests[_digest(raw)] = (raw, mediatypes.OCI_MANIFEST)
        self.tags[(repository, tag)] = _digest(raw)
        return _digest(raw), [str(d["digest"]) for d in descriptors]

    def add_referrer(self, repository: str, subject: str, artifact_type: str) -> str:
        """An artifact manifest whose subject is ``subject`` (its blobs are the empty config only)."""
        empty = b"{}"
        self.blobs[_digest(empty)] = empty
        self.links.add((repository, _digest(empty)))
        raw, subject_type = self.manifests[subject]
        document = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": mediatypes.OCI_EMPTY, "digest": _digest(empty), "size": 2},
            "layers": [],
            "subject": {"mediaType": subject_type, "digest": subject, "size": len(raw)},
        }
        encoded = json.dumps(document).encode()
        self.manifests[_digest(encoded)] = (encoded, mediatypes.OCI_MANIFEST)
        return _digest(encoded)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _world() -> tuple[FakeNetwork, FakeRegistry, FakeRegistry, RegistryClient, Sleeps]:
    source, destination = FakeRegistry("src.example"), FakeRegistry("dst.example")
    network = FakeNetwork(registries={"src.example": source, "dst.example": destination})
    sleeps = Sleeps()
    client = RegistryClient(network, sleep=sleeps, retry=RetryPolicy(attempts=4))
    return network, source, destination, client, sleeps


SRC = parse_reference("src.example/team/app:v1")
DST = parse_reference("dst.example/mirror/app")


def _is(method: str, path_part: str) -> Callable[[str, URL], bool]:
    return lambda m, url: m == method and path_part in url.path


# --- redirects ----------------------------------------------------------------------------------


def test_redirect_to_another_host_drops_credentials() -> None:
    headers = {"Authorization": "Bearer registry-token", "Accept": "*/*", "Cookie": "c"}
    source = URL("https://registry.example/v2/app/blobs/sha256:1")
    assert redirect_headers(source, URL("https://registry.example/other"), headers) == headers
    elsewhere = redirect_headers(
        source, URL("https://bucket.s3.amazonaws.com/blob?X-Amz-Signature=s"), headers
    )
    assert elsewhere == {"Accept": "*/*"}
    # Another port is another origin, too.
    assert "Authorization" not in redirect_headers(source, URL("https://registry.example:8443/x"), headers)


def test_redirect_from_https_to_http_is_refused() -> None:
    with pytest.raises(RegistryError, match="insecure"):
        redirect_headers(URL("https://registry.example/x"), URL("http://registry.example/x"), {})


async def test_following_a_storage_redirect_sends_no_authorization() -> None:
    network = FakeNetwork()
    network.once(
        lambda m, url: url.host == "registry.example",
        ScriptedResponse(307, {"Location": "https://cdn.example/blob?sig=abc%2Fdef"}),
    )
    network.once(lambda m, url: url.host == "cdn.example", ScriptedResponse(200, body=b"blob"))
    response, final = await send_following_redirects(
        network, "GET", URL("https://registry.example/v2/a/blobs/x"), {"Authorization": "Bearer t"}
    )
    assert response.status == 200
    assert final.host == "cdn.example"
    assert str(final) == "https://cdn.example/blob?sig=abc%2Fdef"  # pre-signed query kept byte for byte
    assert network.sent[0].headers == {"Authorization": "Bearer t"}
    assert network.sent[1].headers == {}


async def test_redirect_loops_end() -> None:
    network = FakeNetwork()
    for _ in range(10):
        network.once(lambda m, url: True, ScriptedResponse(302, {"Location": "/again"}))
    with pytest.raises(RegistryError, match="redirects"):
        await send_following_redirects(network, "GET", URL("https://r.example/x"), {})


# --- retries ------------------------------------------------------------------------------------


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("²") is None  # "²".isdigit() is True, float("²") raises


def test_backoff_grows_is_jittered_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, max_retry_after=60)
    assert [policy.delay(n, None, jitter=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(3, None, jitter=lambda: 0.25) == 0.5
    assert policy.delay(1, 30.0) == 30.0
    assert policy.delay(1, 61.0) is None  # too long to hold a worker: surface it to the caller


async def test_throttled_request_waits_as_told_and_succeeds() -> None:
    network, source, _, client, sleeps = _world()
    digest, _ = source.add_image("team/app", "v1", [b"layer"])
    network.once(
        _is("HEAD", "/manifests/"),
        ScriptedResponse(
            429, {"Retry-After": "3"}, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
        ),
    )
    head = await client.head_manifest(SRC, "v1")
    assert head is not None
    assert head.digest == digest
    assert sleeps.delays == [3.0]


async def test_errors_carry_oci_codes_and_give_up_after_the_attempts() -> None:
    network, _, _, client, sleeps = _world()
    for _ in range(4):
        network.once(
            _is("GET", "/tags/list"),
            ScriptedResponse(503, body=b'{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}'),
        )
    with pytest.raises(RegistryError) as raised:
        await client.list_tags(SRC)
    assert raised.value.status == 503
    assert raised.value.codes == ("UNAVAILABLE",)
    assert len(sleeps.delays) == 3


async def test_client_errors_are_not_retried() -> None:
    network, _, _, client, sleeps = _world()
    network.once(
        _is("GET", "/tags/list"), ScriptedResponse(403, body=b'{"errors":[{"code":"DENIED","message":"no"}]}')
    )
    with pytest.raises(AuthError) as raised:
        await client.list_tags(SRC)
    assert raised.value.codes == ("DENIED",)
    assert sleeps.delays == []


# --- auth ---------------------------------------------------------------------------------------


def _bearer_network(expected_user: str | None) -> tuple[FakeNetwork, list[URL]]:
    network = FakeNetwork()
    token_requests: list[URL] = []
    challenge = 'Bearer realm="https://auth.example/token",service="reg.example",scope="repository:app:pull"'

    class TokenRegistry(FakeRegistry):
        async def handle(
            self, method: str, url: URL, headers: dict[str, str], body: Body
        ) -> ScriptedResponse:
            if headers.get("Authorization") != "Bearer good-token":
                return ScriptedResponse(401, {"WWW-Authenticate": challenge})
            return ScriptedResponse(200, body=b'{"tags": ["v1"]}')

    class Issuer(FakeRegistry):
        async def handle(
            self, method: str, url: URL, headers: dict[str, str], body: Body
        ) -> ScriptedResponse:
            token_requests.append(url)
            if expected_user is not None:
                assert headers["Authorization"] == Credentials(expected_user, "pw").basic_authorization()
            else:
                assert "Authorization" not in headers
            return ScriptedResponse(200, body=b'{"token": "good-token", "expires_in": 300}')

    network.registries = {"reg.example": TokenRegistry("reg.example"), "auth.example": Issuer("auth.example")}
    return network, token_requests


@pytest.mark.parametrize("user", [None, "alice"])
async def test_bearer_challenge_is_answered_once_and_the_token_reused(user: str | None) -> None:
    network, token_requests = _bearer_network(user)
    credentials = StaticCredentials({"reg.example": Credentials(user, "pw")} if user else {})
    client = RegistryClient(network, credentials=credentials)
    repo = parse_reference("reg.example/app")
    assert await client.list_tags(repo) == ["v1"]
    assert await client.list_tags(repo) == ["v1"]
    assert len(token_requests) == 1
    assert token_requests[0].query.getall("scope") == ["repository:app:pull"]
    assert token_requests[0].query["service"] == "reg.example"
    # 401, retry with token, then the second listing goes straight through with the cached token.
    assert [s.headers.get("Authorization") for s in network.sent if s.url.host == "reg.example"] == [
        None,
        "Bearer good-token",
        "Bearer good-token",
    ]


async def test_credentials_are_not_sent_to_a_plain_http_realm() -> None:
    network = FakeNetwork()
    network.once(
        lambda m, url: True,
        ScriptedResponse(401, {"WWW-Authenticate": 'Bearer realm="http://auth.example/t"'}),
    )
    client = RegistryClient(
        network, credentials=StaticCredentials({"reg.example": Credentials("u", "secret")})
    )
    with pytest.raises(AuthError, match="plain-HTTP"):
        await client.list_tags(parse_reference("reg.example/app"))
    assert all(sent.url.host != "auth.example" for sent in network.sent)


async def test_basic_challenge_without_credentials_says_so() -> None:
    network = FakeNetwork()
    network.once(lambda m, url: True, ScriptedResponse(401, {"WWW-Authenticate": 'Basic realm="r"'}))
    with pytest.raises(AuthError, match="requires credentials"):
        await RegistryClient(network).list_tags(parse_reference("reg.example/app"))


async def test_concurrent_requests_share_one_token_fetch() -> None:
    network, token_requests = _bearer_network("alice")
    client = RegistryClient(
        network, credentials=StaticCredentials({"reg.example": Credentials("alice", "pw")})
    )
    repo = parse_reference("reg.example/app")
    await client.list_tags(repo)  # learns the scheme
    token_requests.clear()
    client_with_new_scope = parse_reference("reg.example/other")
    results = await asyncio.gather(*(client.list_tags(client_with_new_scope) for _ in range(5)))
    assert results == [["v1"]] * 5
    assert len(token_requests) == 1


def test_endpoints_and_plain_http_are_per_registry() -> None:
    client = RegistryClient(
        FakeNetwork(),
        endpoints={"123456789012.dkr.ecr.us-east-1.amazonaws.com": "127.0.0.1:5000"},
        insecure_registries=["localhost:5000"],
    )
    assert client.base_url("123456789012.dkr.ecr.us-east-1.amazonaws.com") == URL("https://127.0.0.1:5000")
    assert client.base_url("docker.io") == URL("https://registry-1.docker.io")
    assert client.base_url("localhost:5000") == URL("http://localhost:5000")


# --- tags and referrers -------------------------------------------------------------------------


def test_next_link_parsing() -> None:
    assert parse_next_link('</v2/a/tags/list?n=2&last=b>; rel="next"') == "/v2/a/tags/list?n=2&last=b"
    assert parse_next_link('<https://x/1>; rel="prev", <https://x/3>; rel=next') == "https://x/3"
    assert parse_next_link('<https://x/1>; rel="prev"') is None
    assert parse_next_link(None) is None


async def test_tag_listing_follows_pages_of_1000() -> None:
    network = FakeNetwork()
    first = [f"t{i}" for i in range(1000)]
    network.once(
        lambda m, url: url.query.get("last") is None,
        ScriptedResponse(
            200,
            {"Link": '</v2/app/tags/list?n=1000&last=t999>; rel="next"'},
            json.dumps({"tags": first}).encode(),
        ),
    )
    network.once(
        lambda m, url: url.query.get("last") == "t999", ScriptedResponse(200, body=b'{"tags": ["z"]}')
    )
    tags = await RegistryClient(network).list_tags(parse_reference("reg.example/app"))
    assert tags == [*first, "z"]
    assert network.sent[0].url.query["n"] == "1000"


async def test_tag_listing_refuses_loops_and_foreign_links() -> None:
    network = FakeNetwork()
    network.once(
        lambda m, url: True, ScriptedResponse(200, {"Link": '</v2/app/tags/list?n=1000>; rel="next"'}, b"{}")
    )
    with pytest.raises(RegistryError, match="loops"):
        await RegistryClient(network).list_tags(parse_reference("reg.example/app"))
    network.once(
        lambda m, url: True, ScriptedResponse(200, {"Link": '<https://evil.example/x>; rel="next"'}, b"{}")
    )
    with pytest.raises(RegistryError, match="leaves"):
        await RegistryClient(network).list_tags(parse_reference("reg.example/app"))


async def test_referrers_api_absence_is_not_an_error() -> None:
    network = FakeNetwork()
    assert (
        await RegistryClient(network).list_referrers(parse_reference("reg.example/app"), "sha256:" + "a" * 64)
        is None
    )


# --- streaming verification ---------------------------------------------------------------------


async def test_verified_stream_passes_good_content_through_in_bounded_chunks() -> None:
    data = bytes(range(256)) * 20_000  # several chunks
    stream = VerifiedStream(ScriptedResponse(200, body=data), _digest(data), len(data))
    chunks = [chunk async for chunk in stream.chunks()]
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= CHUNK_SIZE
    assert stream.failure is None


@pytest.mark.parametrize("tamper", ["flip", "truncate", "extend"])
async def test_verified_stream_never_releases_the_last_chunk_of_a_wrong_blob(tamper: str) -> None:
    expected = bytes(range(256)) * 20_000
    served = {
        "flip": expected[:-1] + b"\x00",
        "truncate": expected[:-10],
        "extend": expected + b"more",
    }[tamper]
    stream = VerifiedStream(ScriptedResponse(200, body=served), _digest(expected), len(expected))
    received = bytearray()

    async def consume() -> None:
        async for chunk in stream.chunks():
            received.extend(chunk)

    with pytest.raises(DigestMismatch):
        await consume()
    assert len(received) < len(expected)
    assert isinstance(stream.failure, DigestMismatch)


# --- the copy engine ----------------------------------------------------------------------------


async def test_copy_streams_blobs_then_pushes_the_exact_manifest() -> None:
    network, source, destination, client, _ = _world()
    digest, blobs = source.add_image("team/app", "v1", [b"a" * 3_000_000, b"b" * 10])
    events: list[ProgressEvent] = []
    result = await copy_image(SRC, DST, source_client=client, progress=events.append)
    assert result.destination_digest == digest
    assert destination.manifests[digest] == source.manifests[digest]
    assert destination.tags[("mirror/app", "v1")] == digest
    assert sorted(destination.completed_uploads) == sorted(blobs)
    assert result.bytes_copied == 3_000_010 + len(source.blobs[blobs[0]])
    assert {event.digest for event in events if isinstance(event, BlobDone)} == set(blobs)
    # One upload request per blob, its length announced: no chunked PATCHes (ECR mishandles them).
    uploads = [sent for sent in network.sent if sent.url.path.startswith("/upload/")]
    assert [sent.method for sent in uploads] == ["PUT"] * len(blobs)
    assert sorted(int(sent.headers["Content-Length"]) for sent in uploads) == sorted(
        len(source.blobs[blob]) for blob in blobs
    )


async def test_connection_loss_mid_blob_restarts_that_blob() -> None:
    network, source, destination, client, sleeps = _world()
    _, blobs = source.add_image("team/app", "v1", [b"x" * 3_000_000])
    layer = blobs[1]
    network.once(_is("GET", layer), ScriptedResponse(200, body=source.blobs[layer], break_after=1_048_576))
    result = await copy_image(SRC, DST, source_client=client)
    assert result.blobs_copied == 2
    assert destination.blobs[layer] == source.blobs[layer]
    assert len(sleeps.delays) == 1
    # The broken attempt's upload session was abandoned, then a fresh one completed.
    assert sum(1 for s in network.sent if s.method == "POST") == 3
    assert sum(1 for s in network.sent if s.method == "DELETE") == 1


async def test_throttled_blob_upload_is_retried_after_retry_after() -> None:
    network, source, _, client, sleeps = _world()
    digest, _ = source.add_image("team/app", "v1", [b"layer"])
    network.once(_is("POST", "/blobs/uploads/"), ScriptedResponse(429, {"Retry-After": "2"}))
    result = await copy_image(SRC, DST, source_client=client)
    assert result.destination_digest == digest
    assert sleeps.delays == [2.0]


async def test_a_declined_mount_uploads_through_the_session_it_opened() -> None:
    network, source, _, client, _ = _world()
    source.mount_enabled = False  # like ECR without the cross-repository mount opt-in
    digest, blobs = source.add_image("team/app", "v1", [b"layer"])
    result = await copy_image(SRC, parse_reference("src.example/other/app:copy"), source_client=client)
    assert result.destination_digest == digest
    assert (result.blobs_mounted, result.blobs_copied) == (0, len(blobs))
    posts = [sent.url for sent in network.sent if sent.method == "POST"]
    assert len(posts) == len(blobs)
    assert all("mount" in url.query for url in posts)


async def test_corrupted_source_blob_is_refused_and_nothing_is_pushed() -> None:
    _, source, destination, client, _ = _world()
    _, blobs = source.add_image("team/app", "v1", [b"y" * 3_000_000])
    layer = blobs[1]
    source.blobs[layer] = b"z" * 3_000_000  # same size, wrong bytes
    with pytest.raises(DigestMismatch):
        await copy_image(SRC, DST, source_client=client)
    assert layer not in destination.blobs
    assert layer not in destination.completed_uploads
    assert destination.pushed == []


# --- referrers ----------------------------------------------------------------------------------


async def test_referrers_from_the_api_get_a_fallback_tag_where_the_api_is_missing() -> None:
    _, source, destination, client, _ = _world()
    source.referrers_api = True
    digest, _ = source.add_image("team/app", "v1", [b"layer"])
    sbom = source.add_referrer("team/app", digest, "application/spdx+json")

    result = await copy_image(SRC, DST, source_client=client, referrers=True)

    assert [(r.subject, r.digest) for r in result.referrers] == [(digest, sbom)]
    assert destination.manifests[sbom] == source.manifests[sbom]
    listing = json.loads(destination.manifests[destination.tags[("mirror/app", fallback_tag(digest))]][0])
    assert listing["manifests"] == [
        {
            "mediaType": mediatypes.OCI_MANIFEST,
            "digest": sbom,
            "size": len(source.manifests[sbom][0]),
            "artifactType": "application/spdx+json",
        }
    ]


async def test_destinations_with_the_referrers_api_get_no_fallback_tag() -> None:
    _, source, destination, client, _ = _world()
    source.referrers_api = destination.referrers_api = True
    digest, _ = source.add_image("team/app", "v1", [b"layer"])
    signature = source.add_referrer("team/app", digest, "application/vnd.dev.cosign.artifact.sig.v1+json")

    await copy_image(SRC, DST, source_client=client, referrers=True)

    assert signature in destination.manifests
    assert [tag for _, tag in destination.tags] == ["v1"]


async def test_an_existing_fallback_index_is_extended_not_replaced() -> None:
    _, source, destination, client, _ = _world()
    source.referrers_api = True
    digest, _ = source.add_image("team/app", "v1", [b"layer"])
    sbom = source.add_referrer("team/app", digest, "application/spdx+json")
    local = {"mediaType": mediatypes.OCI_MANIFEST, "digest": "sha256:" + "e" * 64, "size": 7}
    existing = json.dumps(
        {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [local]}
    ).encode()
    destination.manifests[_digest(existing)] = (existing, mediatypes.OCI_INDEX)
    destination.tags[("mirror/app", fallback_tag(digest))] = _digest(existing)

    await copy_image(SRC, DST, source_client=client, referrers=True)

    listing = json.loads(destination.manifests[destination.tags[("mirror/app", fallback_tag(digest))]][0])
    assert [entry["digest"] for entry in listing["manifests"]] == [local["digest"], sbom]
