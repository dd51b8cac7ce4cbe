"""RegistryClient: the OCI distribution API (manifests, blobs, uploads, tags, referrers) for any registry."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from yarl import URL

from ecr_operator.json_object import parse_json_object
from ecr_operator.registry import mediatypes
from ecr_operator.registry.auth import (
    Anonymous,
    Authenticator,
    BearerTokenCache,
    CredentialsProvider,
    repository_scope,
)
from ecr_operator.registry.digests import validate_digest
from ecr_operator.registry.errors import (
    AuthError,
    DigestMismatch,
    InvalidReference,
    LimitExceeded,
    MalformedResponse,
    ManifestTooLarge,
    NotFound,
    PaginationLoop,
    RegistryError,
    parse_error_body,
)
from ecr_operator.registry.limits import DEFAULT_DEADLINES, DEFAULT_LIMITS, Deadlines, Limits
from ecr_operator.registry.manifest import MAX_MANIFEST_SIZE, Descriptor, Manifest, parse_manifest
from ecr_operator.registry.reference import Reference, api_host, is_valid_tag, validate_tag
from ecr_operator.registry.transport import (
    Body,
    HttpResponse,
    HttpSender,
    PacedResponse,
    RetryPolicy,
    origin,
    parse_retry_after,
    read_body,
    redact,
    resolve_location,
    retrying,
    send_following_redirects,
    within,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = "ecr-operator"
MAX_ERROR_BODY = 64 * 1024
# A page of 1000 tags of at most 128 characters is under 140 KiB.
MAX_TAG_PAGE = 1024 * 1024
# ECR caps a tag page at 1000; distribution and Docker Hub accept it too.
TAG_PAGE_SIZE = 1000
MAX_LINK_HEADER = 8 * 1024
# Manifests larger than this are parsed (and hashed) in a worker thread, off the event loop.
OFF_LOOP_MANIFEST_BYTES = 64 * 1024
# Content-Length beyond 19 digits cannot be an int64 (and int() of thousands of digits raises).
_MAX_LENGTH_DIGITS = 19


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


class TagList(list[str]):
    """The valid tags of a listing, in registry order, without duplicates. ``rejected`` counts the
    entries that were not tags at all (``-bad``, 4,400 digits, non-strings); ``rejected_examples``
    shows a few of them, shortened, for a condition message."""

    def __init__(self, tags: list[str], rejected: int = 0, rejected_examples: tuple[str, ...] = ()) -> None:
        super().__init__(tags)
        self.rejected = rejected
        self.rejected_examples = rejected_examples


def parse_next_link(header: str | None) -> str | None:
    """The ``rel="next"`` target of an RFC 8288 ``Link`` header (linear in the header, never raises
    anything but MalformedResponse)."""
    if not header:
        return None
    if len(header) > MAX_LINK_HEADER:
        raise MalformedResponse(f"Link header longer than {MAX_LINK_HEADER} characters")
    position = 0
    while True:
        start = header.find("<", position)
        if start < 0:
            return None
        end = header.find(">", start + 1)
        if end < 0:
            return None
        target = header[start + 1 : end]
        # The link's parameters run to the next comma outside a quoted string.
        cursor, quoted = end + 1, False
        while cursor < len(header) and (quoted or header[cursor] != ","):
            if header[cursor] == '"':
                quoted = not quoted
            cursor += 1
        for parameter in header[end + 1 : cursor].split(";"):
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').lower().split():
                return target
        position = cursor


def parse_content_length(value: str | None) -> int | None:
    """A Content-Length header as an int; None when absent or not plain ASCII digits."""
    if not value:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_LENGTH_DIGITS:
        return None
    return int(value)


def header_digest(value: str | None, what: str) -> str | None:
    """A ``Docker-Content-Digest`` header: None when absent, MalformedResponse when not a digest."""
    if value is None:
        return None
    try:
        return validate_digest(value.strip())
    except InvalidReference as exc:
        raise MalformedResponse(f"{what}: Docker-Content-Digest {value[:80]!r} is not a digest") from exc


def validate_target(target: str) -> str:
    """A manifest request names a tag or a digest; anything else would reach into other URL paths."""
    return validate_digest(target) if ":" in target else validate_tag(target)


def _link_header(response: HttpResponse) -> str | None:
    links = response.headers.getall("Link", [])
    return ", ".join(links) if links else None


def _too_many_tags(repo: Reference, bound: int) -> LimitExceeded:
    return LimitExceeded(
        f"tag listing of {repo.name} has more than {bound} tags (limit max_tags); list the tags to mirror"
        " explicitly instead of selecting them by pattern or range",
        limit="max_tags",
        bound=bound,
    )


class _PageTooLarge(LimitExceeded):
    def __init__(self, message: str) -> None:
        super().__init__(message, limit="page size", bound=MAX_TAG_PAGE)


class _Pages:
    """The pages one listing visited: a bound on their number, and loop detection by URL and content."""

    def __init__(self, what: str, max_pages: int, limit: str) -> None:
        self._what = what
        self._max_pages = max_pages
        self._limit = limit
        self._urls: set[str] = set()
        self._contents: set[str] = set()

    def visit(self, url: URL) -> None:
        if str(url) in self._urls:
            raise PaginationLoop(f"{self._what} loops: {redact(url)} was already read")
        if len(self._urls) >= self._max_pages:
            raise LimitExceeded(
                f"{self._what}: more than {self._max_pages} pages (limit {self._limit})",
                limit=self._limit,
                bound=self._max_pages,
            )
        self._urls.add(str(url))

    def content(self, url: URL, fingerprint: str) -> None:
        if fingerprint in self._contents:
            raise PaginationLoop(f"{self._what} loops: {redact(url)} repeats an earlier page")
        self._contents.add(fingerprint)


def _pull(repository: str) -> tuple[str, ...]:
    return (repository_scope(repository, "pull"),)


def _push(repository: str) -> tuple[str, ...]:
    return (repository_scope(repository, "pull", "push"),)


class RegistryClient:
    """Talks to OCI registries on behalf of one credentials provider.

    Construct one per set of credentials over the process's shared HttpSender/aiohttp session; it is
    cheap. ``endpoints`` maps a registry name to the ``host:port`` that really serves it (ECR through
    moto's stand-in); ``insecure_registries`` lists names or hosts spoken to over plain HTTP.

    No registry can hold the caller: every small exchange (HEAD, manifest, tag/referrer page, token,
    upload session) runs under ``deadlines.request``, blob streams under the throughput floor of
    ``deadlines`` (see ``limits.Deadlines``; the session made by ``create_session`` adds the connect and
    read deadlines); listings and copies are bounded by ``limits`` (``limits.Limits``); ``retry`` caps
    ``Retry-After`` and the total sleep. ``token_cache`` is the process's shared ``BearerTokenCache``.
    Every failure is a RegistryError subclass; ``retryable`` and ``retry_after`` say whether and when
    to come back.
    """

    def __init__(
        self,
        sender: HttpSender,
        *,
        credentials: CredentialsProvider | None = None,
        token_cache: BearerTokenCache | None = None,
        retry: RetryPolicy | None = None,
        endpoints: Mapping[str, str] | None = None,
        insecure_registries: Collection[str] = (),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        deadlines: Deadlines = DEFAULT_DEADLINES,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._sender = sender
        self._endpoints = dict(endpoints or {})
        self._insecure = frozenset(insecure_registries)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._deadlines = deadlines
        self._limits = limits
        self._auth = Authenticator(
            sender,
            credentials or Anonymous(),
            # Not ``token_cache or ...``: an empty cache is falsy, and the shared one must be used.
            token_cache if token_cache is not None else BearerTokenCache(),
            insecure_hosts=self._insecure,
            deadlines=deadlines,
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    @property
    def deadlines(self) -> Deadlines:
        return self._deadlines

    @property
    def limits(self) -> Limits:
        return self._limits

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
        url = self._url(repo, f"manifests/{validate_target(target)}")
        what = f"HEAD {redact(url)}"

        async def attempt() -> ManifestHead | None:
            response = await self._send(
                "HEAD", repo, url, _pull(repo.repository), {"Accept": mediatypes.MANIFEST_ACCEPT}
            )
            try:
                if response.status == 404:
                    return None
                await self._check(response, what, (200,))
                headers = response.headers
            finally:
                response.close()
            digest = header_digest(headers.get("Docker-Content-Digest"), what)
            if digest is None and ":" in target:
                digest = target
            if ":" in target and digest != target:
                raise DigestMismatch(f"{what}: registry says {digest}")
            return ManifestHead(
                digest=digest,
                media_type=mediatypes.bare_media_type(headers.get("Content-Type")),
                size=parse_content_length(headers.get("Content-Length")),
            )

        return await self._retrying(attempt, what)

    async def get_manifest(self, repo: Reference, target: str) -> Manifest:
        """GET a manifest, verified against ``target`` when it is a digest. Counts as a pull on Docker Hub."""
        url = self._url(repo, f"manifests/{validate_target(target)}")
        what = f"GET {redact(url)}"

        async def attempt() -> Manifest:
            response = await self._send(
                "GET", repo, url, _pull(repo.repository), {"Accept": mediatypes.MANIFEST_ACCEPT}
            )
            await self._check(response, what, (200,))
            try:
                length = parse_content_length(response.headers.get("Content-Length"))
                if length is not None and length > MAX_MANIFEST_SIZE:
                    raise ManifestTooLarge(
                        f"{what}: manifest of {length} bytes exceeds {MAX_MANIFEST_SIZE} bytes"
                    )
                content_type = response.headers.get("Content-Type")
                served_digest = header_digest(response.headers.get("Docker-Content-Digest"), what)
            except RegistryError:
                response.close()
                raise
            raw = await read_body(response, MAX_MANIFEST_SIZE, what, too_large=ManifestTooLarge)
            manifest = await _parse_manifest(
                raw, content_type=content_type, expected_digest=target if ":" in target else None
            )
            if served_digest and served_digest.startswith("sha256:") and served_digest != manifest.digest:
                raise DigestMismatch(
                    f"{what}: registry says {served_digest}, content hashes to {manifest.digest}"
                )
            return manifest

        return await self._retrying(attempt, what)

    async def put_manifest(self, repo: Reference, target: str, manifest: Manifest) -> PushedManifest:
        """PUT the manifest's exact bytes under a tag or its digest; the registry must agree on the digest."""
        url = self._url(repo, f"manifests/{validate_target(target)}")
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
            if stored and stored.strip() != manifest.digest:
                raise DigestMismatch(f"{what}: registry stored {stored[:80]!r}, expected {manifest.digest}")
            return PushedManifest(digest=manifest.digest, subject=subject)

        return await self._retrying(attempt, what)

    # --- blobs ----------------------------------------------------------------------------------

    async def blob_exists(self, repo: Reference, digest: str, *, for_push: bool = False) -> bool:
        url = self._url(repo, f"blobs/{validate_digest(digest)}")
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
        """Start streaming a blob (redirects to storage followed without credentials). Caller closes.

        The answer's headers must come within ``deadlines.request``; its body must keep flowing (no
        silence over ``deadlines.read``, at least ``deadlines.blob_min_rate`` per ``blob_window``).
        """
        url = self._url(repo, f"blobs/{validate_digest(digest)}")
        what = f"GET {redact(url)}"

        async def attempt() -> HttpResponse:
            response = await self._send(
                "GET", repo, url, _pull(repo.repository), {"Accept-Encoding": "identity"}
            )
            await self._check(response, what, (200,))
            return response

        return PacedResponse(await self._retrying(attempt, what), self._deadlines, what)

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
            return resolve_location(url, location, what=f"{what}: upload")

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
            response = await within(
                self._deadlines.request,
                lambda: self._send("DELETE", repo, location, _push(repo.repository), {}),
                what=f"DELETE {redact(location)}",
            )
            response.close()
        except RegistryError as exc:
            log.debug("abandoned upload not cancelled", extra={"upload": redact(location), "error": str(exc)})

    # --- tags and referrers ---------------------------------------------------------------------

    async def list_tags(self, repo: Reference, *, max_tags: int | None = None) -> TagList:
        """Every tag of a repository, following ``Link`` pagination (pages of TAG_PAGE_SIZE).

        Bounded: at most ``max_tags`` (default ``limits.max_tags``) distinct tags and
        ``limits.max_tag_pages`` pages, else LimitExceeded; a page URL or page content seen before is a
        PaginationLoop. Entries that are not valid tags are left out and counted (``TagList.rejected``).
        """
        bound = self._limits.max_tags if max_tags is None else max_tags
        url: URL | None = self._url(repo, "tags/list").with_query({"n": str(TAG_PAGE_SIZE)})
        tags: dict[str, None] = {}
        rejected: list[str] = []
        rejected_count = 0
        pages = _Pages(f"tag listing of {repo.name}", self._limits.max_tag_pages, "max_tag_pages")
        while url is not None:
            pages.visit(url)
            body, link, fingerprint = await self._get_json_page(repo, url)
            pages.content(url, fingerprint)
            page = body.get("tags") or []
            if not isinstance(page, list):
                raise MalformedResponse(f"tag listing of {repo.name}: 'tags' is not a list")
            if len(page) > bound:
                raise _too_many_tags(repo, bound)
            for tag in page:
                if is_valid_tag(tag):
                    tags[tag] = None
                else:
                    rejected_count += 1
                    if len(rejected) < 3:
                        text = tag if isinstance(tag, str) else repr(tag)
                        rejected.append(text if len(text) <= 40 else f"{text[:30]}…({len(text)} chars)")
            if len(tags) > bound:
                raise _too_many_tags(repo, bound)
            url = self._next_page(url, link)
        if rejected_count:
            log.warning(
                "upstream tags that are not valid tags were left out",
                extra={"repository": repo.name, "rejected": rejected_count, "examples": rejected},
            )
        return TagList(list(tags), rejected_count, tuple(rejected))

    async def list_referrers(self, repo: Reference, digest: str) -> tuple[Descriptor, ...] | None:
        """Manifests whose ``subject`` is ``digest``, from the referrers API; None when the registry
        does not implement it (callers then read the ``sha256-<hex>`` fallback tag).

        Bounded like tag listings: ``limits.max_referrer_pages`` pages, ``limits.max_referrers``
        distinct referrers (LimitExceeded beyond), loops refused (PaginationLoop)."""
        url: URL | None = self._url(repo, f"referrers/{validate_digest(digest)}")
        found: dict[str, Descriptor] = {}
        what = f"referrers of {digest} in {repo.name}"
        pages = _Pages(what, self._limits.max_referrer_pages, "max_referrer_pages")
        while url is not None:
            pages.visit(url)
            page = await self._referrers_page(repo, url)
            if page is None:
                return None
            index, link = page
            pages.content(url, index.digest)
            found.update((child.digest, child) for child in index.children)
            if len(found) > self._limits.max_referrers:
                bound = self._limits.max_referrers
                raise LimitExceeded(
                    f"{what}: more than {bound} referrers (limit max_referrers)",
                    limit="max_referrers",
                    bound=bound,
                )
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
            link = _link_header(response)
            raw = await read_body(response, MAX_MANIFEST_SIZE, what, too_large=ManifestTooLarge)
            index = await _parse_manifest(raw, content_type=mediatypes.OCI_INDEX)
            if not index.is_index:
                raise MalformedResponse(f"{what}: the referrers answer is not an image index")
            return index, link

        return await self._retrying(attempt, what)

    # --- plumbing -------------------------------------------------------------------------------

    def _url(self, repo: Reference, path: str) -> URL:
        return self.base_url(repo.registry).with_path(f"/v2/{repo.repository}/{path}", encoded=True)

    def _next_page(self, current: URL, link: str | None) -> URL | None:
        target = parse_next_link(link)
        if target is None:
            return None
        following = resolve_location(current, target, what=f"pagination of {redact(current)}")
        if origin(following) != origin(current):
            raise RegistryError(f"pagination link leaves {redact(current)} for {redact(following)}")
        return following

    async def _get_json_page(self, repo: Reference, url: URL) -> tuple[Mapping[str, object], str | None, str]:
        """A JSON object page, its Link header and a fingerprint of its content."""
        what = f"GET {redact(url)}"

        async def attempt() -> tuple[Mapping[str, object], str | None, str]:
            response = await self._send(
                "GET", repo, url, _pull(repo.repository), {"Accept": "application/json"}
            )
            await self._check(response, what, (200,))
            link = _link_header(response)
            raw = await read_body(response, MAX_TAG_PAGE, what, too_large=_PageTooLarge)
            document = parse_json_object(
                raw,
                MalformedResponse,
                f"{what}: response is not JSON",
                f"{what}: response is not a JSON object",
            )
            return document, link, hashlib.sha256(raw).hexdigest()

        return await self._retrying(attempt, what)

    async def _retrying(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Retries of ``operation``, each attempt under the whole-request deadline."""
        seconds = self._deadlines.request
        return await retrying(
            lambda: within(seconds, operation, what=what), self._retry, what=what, sleep=self._sleep
        )

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


async def _parse_manifest(
    raw: bytes, *, content_type: str | None, expected_digest: str | None = None
) -> Manifest:
    """``parse_manifest``, in a worker thread for large bodies: parsing costs ~20 µs per descriptor
    (measured), so a 4 MiB index of tens of thousands of entries would hold the event loop for a second."""
    if len(raw) <= OFF_LOOP_MANIFEST_BYTES:
        return parse_manifest(raw, content_type=content_type, expected_digest=expected_digest)
    return await asyncio.to_thread(
        parse_manifest, raw, content_type=content_type, expected_digest=expected_digest
    )
