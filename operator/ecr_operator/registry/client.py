"""RegistryClient: the OCI distribution API (manifests, blobs, uploads, tags, referrers) for any registry."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from yarl import URL

from ecr_operator.registry import mediatypes
from ecr_operator.registry.auth import (
    Anonymous,
    Authenticator,
    CredentialsProvider,
    TokenCache,
    repository_scope,
)
from ecr_operator.registry.digests import algorithm_of
from ecr_operator.registry.errors import (
    AuthError,
    DigestMismatch,
    ManifestTooLarge,
    NotFound,
    RegistryError,
    parse_error_body,
)
from ecr_operator.registry.manifest import MAX_MANIFEST_SIZE, Descriptor, Manifest, parse_manifest
from ecr_operator.registry.reference import Reference, api_host
from ecr_operator.registry.transport import (
    Body,
    HttpResponse,
    HttpSender,
    RetryPolicy,
    origin,
    parse_retry_after,
    read_body,
    redact,
    retrying,
    send_following_redirects,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = "ecr-operator"
MAX_ERROR_BODY = 64 * 1024
MAX_TAG_PAGE = 8 * 1024 * 1024
# ECR caps a tag page at 1000; distribution and Docker Hub accept it too.
TAG_PAGE_SIZE = 1000
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;[^,]*?\brel="?next"?', re.IGNORECASE)


@dataclass(frozen=True)
class ManifestHead:
    """What a manifest HEAD tells: enough to decide whether anything must be copied."""

    digest: str | None
    media_type: str | None
    size: int | None


@dataclass(frozen=True)
class PushedManifest:
    digest: str
    # Set by registries that implement the referrers API when the manifest has a subject (OCI 1.1).
    subject: str | None


def parse_next_link(header: str | None) -> str | None:
    """The ``rel="next"`` target of an RFC 8288 ``Link`` header."""
    if not header:
        return None
    match = _NEXT_LINK.search(header)
    return match.group(1) if match else None


def _pull(repository: str) -> tuple[str, ...]:
    return (repository_scope(repository, "pull"),)


def _push(repository: str) -> tuple[str, ...]:
    return (repository_scope(repository, "pull", "push"),)


class RegistryClient:
    """Talks to OCI registries on behalf of one credentials provider.

    Construct one per set of credentials over the process's shared HttpSender/aiohttp session; it is
    cheap. ``endpoints`` maps a registry name to the ``host:port`` that really serves it (ECR through
    moto's stand-in); ``insecure_registries`` lists names or hosts spoken to over plain HTTP.
    """

    def __init__(
        self,
        sender: HttpSender,
        *,
        credentials: CredentialsProvider | None = None,
        token_cache: TokenCache | None = None,
        retry: RetryPolicy | None = None,
        endpoints: Mapping[str, str] | None = None,
        insecure_registries: Collection[str] = (),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sender = sender
        self._endpoints = dict(endpoints or {})
        self._insecure = frozenset(insecure_registries)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._auth = Authenticator(
            sender, credentials or Anonymous(), token_cache or TokenCache(), insecure_hosts=self._insecure
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    @property
    def sleep(self) -> Callable[[float], Awaitable[None]]:
        return self._sleep

    def base_url(self, registry: str) -> URL:
        host = self._endpoints.get(registry) or api_host(registry)
        scheme = "http" if registry in self._insecure or host in self._insecure else "https"
        return URL.build(scheme=scheme, authority=host)

    # --- manifests ------------------------------------------------------------------------------

    async def head_manifest(self, repo: Reference, target: str) -> ManifestHead | None:
        """HEAD a manifest by tag or digest; None when it does not exist. Never counts as a pull."""
        url = self._url(repo, f"manifests/{target}")

        async def attempt() -> ManifestHead | None:
            response = await self._send(
                "HEAD", repo, url, _pull(repo.repository), {"Accept": mediatypes.MANIFEST_ACCEPT}
            )
            try:
                if response.status == 404:
                    return None
                await self._check(response, f"HEAD {redact(url)}", (200,))
                headers = response.headers
            finally:
                response.close()
            digest = headers.get("Docker-Content-Digest") or (target if ":" in target else None)
            length = headers.get("Content-Length")
            return ManifestHead(
                digest=digest,
                media_type=mediatypes.bare_media_type(headers.get("Content-Type")),
                size=int(length) if length and length.isdigit() else None,
            )

        return await self._retrying(attempt, f"HEAD {redact(url)}")

    async def get_manifest(self, repo: Reference, target: str) -> Manifest:
        """GET a manifest, verified against ``target`` when it is a digest. Counts as a pull on Docker Hub."""
        url = self._url(repo, f"manifests/{target}")
        what = f"GET {redact(url)}"

        async def attempt() -> Manifest:
            response = await self._send(
                "GET", repo, url, _pull(repo.repository), {"Accept": mediatypes.MANIFEST_ACCEPT}
            )
            await self._check(response, what, (200,))
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                response.close()
                raise ManifestTooLarge(
                    f"{what}: manifest of {length} bytes exceeds {MAX_MANIFEST_SIZE} bytes"
                )
            content_type = response.headers.get("Content-Type")
            served_digest = response.headers.get("Docker-Content-Digest")
            raw = await read_body(response, MAX_MANIFEST_SIZE, what, too_large=ManifestTooLarge)
            manifest = parse_manifest(
                raw, content_type=content_type, expected_digest=target if ":" in target else None
            )
            if served_digest and algorithm_of(served_digest) == "sha256" and served_digest != manifest.digest:
                raise DigestMismatch(
                    f"{what}: registry says {served_digest}, content hashes to {manifest.digest}"
                )
            return manifest

        return await self._retrying(attempt, what)

    async def put_manifest(self, repo: Reference, target: str, manifest: Manifest) -> PushedManifest:
        """PUT the manifest's exact bytes under a tag or its digest; the registry must agree on the digest."""
        url = self._url(repo, f"manifests/{target}")
        what = f"PUT {redact(url)}"

        async def attempt() -> PushedManifest:
            headers = {"Content-Type": manifest.media_type}
            response = await self._send("PUT", repo, url, _push(repo.repository), headers, manifest.raw)
            try:
                await self._check(response, what, (200, 201))
                stored = response.headers.get("Docker-Content-Digest")
                subject = response.headers.get("OCI-Subject")
            finally:
                response.close()
            if stored and stored != manifest.digest:
                raise DigestMismatch(f"{what}: registry stored {stored}, expected {manifest.digest}")
            return PushedManifest(digest=manifest.digest, subject=subject)

        return await self._retrying(attempt, what)

    # --- blobs ----------------------------------------------------------------------------------

    async def blob_exists(self, repo: Reference, digest: str, *, for_push: bool = False) -> bool:
        url = self._url(repo, f"blobs/{digest}")
        scopes = _push(repo.repository) if for_push else _pull(repo.repository)

        async def attempt() -> bool:
            response = await self._send("HEAD", repo, url, scopes, {})
            try:
                if response.status == 404:
                    return False
                await self._check(response, f"HEAD {redact(url)}", (200,))
                return True
            finally:
                response.close()

        return await self._retrying(attempt, f"HEAD {redact(url)}")

    async def open_blob(self, repo: Reference, digest: str) -> HttpResponse:
        """Start streaming a blob (redirects to storage followed without credentials). Caller closes."""
        url = self._url(repo, f"blobs/{digest}")
        what = f"GET {redact(url)}"

        async def attempt() -> HttpResponse:
            response = await self._send(
                "GET", repo, url, _pull(repo.repository), {"Accept-Encoding": "identity"}
            )
            await self._check(response, what, (200,))
            return response

        return await self._retrying(attempt, what)

    async def start_upload(self, repo: Reference) -> URL:
        """POST a new upload session; returns where to PUT the blob."""
        location = await self._post_upload(repo, self._url(repo, "blobs/uploads/"), _push(repo.repository))
        if location is None:
            raise RegistryError(f"POST {redact(self._url(repo, 'blobs/uploads/'))}: 201 without an upload")
        return location

    async def mount_blob(self, repo: Reference, digest: str, source: Reference) -> URL | None:
        """Ask the registry to link ``digest`` from another of its repositories (no bytes move).

        None means mounted; a URL means the registry declined and opened an ordinary upload there.
        """
        url = self._url(repo, "blobs/uploads/").with_query({"mount": digest, "from": source.repository})
        return await self._post_upload(repo, url, _push(repo.repository) + _pull(source.repository))

    async def _post_upload(self, repo: Reference, url: URL, scopes: tuple[str, ...]) -> URL | None:
        what = f"POST {redact(url)}"

        async def attempt() -> URL | None:
            response = await self._send("POST", repo, url, scopes, {"Content-Length": "0"}, b"")
            try:
                await self._check(response, what, (201, 202))
                status, location = response.status, response.headers.get("Location")
            finally:
                response.close()
            if status == 201:
                return None
            if not location:
                raise RegistryError(f"{what}: upload started without Location", status=status)
            return url.join(URL(location, encoded=True))

        return await self._retrying(attempt, what)

    async def upload_blob(
        self, repo: Reference, location: URL, digest: str, size: int, chunks: AsyncIterable[bytes]
    ) -> None:
        """Complete an upload with ONE streamed PUT of the whole blob.

        Chunked PATCH uploads are avoided on purpose: ECR answers them wrongly (201 instead of 202, parts
        under 5 MiB refused, later PATCHes dropped — aws/containers-roadmap#2831). Not retried here: a
        stream cannot be replayed; the copy engine restarts the whole blob instead.
        """
        url = location.extend_query(digest=digest)
        what = f"PUT {redact(location)}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        response = await self._send("PUT", repo, url, _push(repo.repository), headers, chunks)
        try:
            await self._check(response, what, (201, 204))
        finally:
            response.close()

    async def cancel_upload(self, repo: Reference, location: URL) -> None:
        """Best effort: tell the registry to drop an upload session we abandon."""
        try:
            response = await self._send("DELETE", repo, location, _push(repo.repository), {})
            response.close()
        except RegistryError as exc:
            log.debug("abandoned upload not cancelled", extra={"upload": redact(location), "error": str(exc)})

    # --- tags and referrers ---------------------------------------------------------------------

    async def list_tags(self, repo: Reference) -> list[str]:
        """Every tag of a repository, following ``Link`` pagination (pages of TAG_PAGE_SIZE)."""
        url: URL | None = self._url(repo, "tags/list").with_query({"n": str(TAG_PAGE_SIZE)})
        tags: dict[str, None] = {}
        seen: set[str] = set()
        while url is not None:
            if str(url) in seen:
                raise RegistryError(f"tag listing of {repo.name} loops at {redact(url)}")
            seen.add(str(url))
            body, link = await self._get_json_page(repo, url)
            page = body.get("tags") or []
            if not isinstance(page, list):
                raise RegistryError(f"tag listing of {repo.name}: 'tags' is not a list")
            tags.update(dict.fromkeys(tag for tag in page if isinstance(tag, str)))
            url = self._next_page(url, link)
        return list(tags)

    async def list_referrers(self, repo: Reference, digest: str) -> tuple[Descriptor, ...] | None:
        """Manifests whose ``subject`` is ``digest``, from the referrers API; None when the registry
        does not implement it (callers then read the ``sha256-<hex>`` fallback tag)."""
        url: URL | None = self._url(repo, f"referrers/{digest}")
        found: dict[str, Descriptor] = {}
        while url is not None:
            page = await self._referrers_page(repo, url)
            if page is None:
                return None
            index, link = page
            found.update((child.digest, child) for child in index.children)
            url = self._next_page(url, link)
        return tuple(found.values())

    async def _referrers_page(self, repo: Reference, url: URL) -> tuple[Manifest, str | None] | None:
        what = f"GET {redact(url)}"

        async def attempt() -> tuple[Manifest, str | None] | None:
            response = await self._send(
                "GET", repo, url, _pull(repo.repository), {"Accept": mediatypes.OCI_INDEX}
            )
            # The spec forbids 404 from registries that implement the API; 404/405 mean "not here".
            if response.status in (404, 405):
                response.close()
                return None
            await self._check(response, what, (200,))
            link = response.headers.get("Link")
            raw = await read_body(response, MAX_MANIFEST_SIZE, what, too_large=ManifestTooLarge)
            return parse_manifest(raw, content_type=mediatypes.OCI_INDEX), link

        return await self._retrying(attempt, what)

    # --- plumbing -------------------------------------------------------------------------------

    def _url(self, repo: Reference, path: str) -> URL:
        return self.base_url(repo.registry).with_path(f"/v2/{repo.repository}/{path}", encoded=True)

    def _next_page(self, current: URL, link: str | None) -> URL | None:
        target = parse_next_link(link)
        if target is None:
            return None
        following = current.join(URL(target, encoded=True))
        if origin(following) != origin(current):
            raise RegistryError(f"pagination link leaves {redact(current)} for {redact(following)}")
        return following

    async def _get_json_page(self, repo: Reference, url: URL) -> tuple[Mapping[str, object], str | None]:
        what = f"GET {redact(url)}"

        async def attempt() -> tuple[Mapping[str, object], str | None]:
            response = await self._send(
                "GET", repo, url, _pull(repo.repository), {"Accept": "application/json"}
            )
            await self._check(response, what, (200,))
            link = response.headers.get("Link")
            raw = await read_body(response, MAX_TAG_PAGE, what)
            try:
                document = json.loads(raw)
            except ValueError as exc:
                raise RegistryError(f"{what}: response is not JSON") from exc
            if not isinstance(document, dict):
                raise RegistryError(f"{what}: response is not a JSON object")
            return document, link

        return await self._retrying(attempt, what)

    async def _retrying(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        return await retrying(operation, self._retry, what=what, sleep=self._sleep)

    async def _send(
        self,
        method: str,
        repo: Reference,
        url: URL,
        scopes: tuple[str, ...],
        headers: Mapping[str, str],
        body: Body = None,
    ) -> HttpResponse:
        """One request with authentication: credentials are sent only to the registry's own origin."""
        registry, repository = repo.registry, repo.repository
        request_headers = {"User-Agent": USER_AGENT, **headers}
        same_origin = origin(url) == origin(self.base_url(registry))
        if same_origin:
            authorization = await self._auth.authorization(registry, repository, scopes)
            if authorization is not None:
                request_headers["Authorization"] = authorization
        response, answered_by = await send_following_redirects(
            self._sender, method, url, request_headers, body
        )
        # Only the registry's own challenges are answered with its credentials, never a storage host's.
        if response.status != 401 or not same_origin or origin(answered_by) != origin(url):
            return response
        what = f"{method} {redact(url)}"
        if body is not None and not isinstance(body, bytes):
            await self._raise_error(response, what)  # a stream cannot be sent twice
        challenge = response.headers.get("WWW-Authenticate")
        response.close()
        # First contact with this registry, or a cached token it no longer accepts: answer the challenge
        # once; a second 401 surfaces as AuthError from the caller's status check.
        rejected = request_headers.get("Authorization")
        authorization = await self._auth.challenged(
            registry, repository, scopes, challenge, rejected=rejected, what=what
        )
        if authorization == rejected:
            raise AuthError(f"{what}: credentials refused", status=401)
        request_headers["Authorization"] = authorization
        response, _ = await send_following_redirects(self._sender, method, url, request_headers, body)
        return response

    async def _check(self, response: HttpResponse, what: str, expected: tuple[int, ...]) -> None:
        if response.status not in expected:
            await self._raise_error(response, what)

    async def _raise_error(self, response: HttpResponse, what: str) -> NoReturn:
        status = response.status
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        try:
            body = await read_body(response, MAX_ERROR_BODY, what)
        except RegistryError:
            body = b""
        errors = parse_error_body(body)
        detail = "; ".join(
            f"{error.code}: {error.message}" if error.message else error.code for error in errors
        )
        message = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
        error_type: type[RegistryError] = RegistryError
        if status in (401, 403):
            error_type = AuthError
        elif status == 404:
            error_type = NotFound
        raise error_type(message, status=status, errors=errors, retry_after=retry_after)
