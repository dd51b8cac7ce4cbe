"""Registry authentication: challenges, credentials, bearer tokens.

Flow (the distribution "token authentication" spec, as Docker Hub, ghcr.io, quay.io and ECR use it):
the first request goes out without credentials; a 401 carries ``WWW-Authenticate: Basic ...`` or
``Bearer realm=...,service=...,scope=...``. Basic means: send the credentials on every request. Bearer means:
GET the realm with service and scopes (authenticated with the credentials, or anonymously) for a token,
then send the token. The scheme a registry uses is remembered, so later requests carry credentials from
the start and the 401 round trip happens once per registry, not per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from yarl import URL

from ecr_operator.json_object import parse_json_object
from ecr_operator.registry.errors import AuthError, InvalidChallenge, LimitExceeded, RegistryError
from ecr_operator.registry.limits import DEFAULT_DEADLINES, Deadlines
from ecr_operator.registry.reference import normalize_registry
from ecr_operator.registry.transport import (
    HttpSender,
    parse_retry_after,
    read_body,
    redact,
    send_following_redirects,
    within,
)

# --- WWW-Authenticate (RFC 9110 section 11.6.1) --------------------------------------------------

_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68_CHARS = frozenset("-._~+/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SPACE = " \t"
# Real challenges are a few hundred characters; the parser is linear, but the values end up in token
# cache keys and token URLs, so hostile sizes are refused before parsing.
MAX_CHALLENGE = 8 * 1024
MAX_SCOPES = 16


@dataclass(frozen=True)
class Challenge:
    """One challenge: scheme (lowercase), parameters (names lowercase), or a token68 blob."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())


class _ChallengeParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> InvalidChallenge:
        return InvalidChallenge(f"malformed WWW-Authenticate header at offset {self.pos}: {why}")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_spaces(self) -> int:
        start = self.pos
        while self.peek() and self.peek() in _SPACE:
            self.pos += 1
        return self.pos - start

    def skip_list_separators(self) -> None:
        while self.peek() and self.peek() in _SPACE + ",":
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _TCHARS:
            self.pos += 1
        if start == self.pos:
            raise self.fail(f"expected a token, found {self.peek()!r}" if self.peek() else "unexpected end")
        return self.text[start : self.pos]

    def quoted_string(self) -> str:
        self.pos += 1  # opening quote
        value: list[str] = []
        while not self.at_end():
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(value)
            if char == "\\":
                if self.at_end():
                    break
                char = self.text[self.pos]
                self.pos += 1
            value.append(char)
        raise self.fail("unterminated quoted string")

    def token68_here(self) -> str | None:
        """A token68 credential, if one stands at the cursor followed by the end of this challenge."""
        end = self.pos
        while end < len(self.text) and self.text[end] in _TOKEN68_CHARS:
            end += 1
        if end == self.pos:
            return None
        while end < len(self.text) and self.text[end] == "=":
            end += 1
        rest = self.text[end:].lstrip(_SPACE)
        if rest and not rest.startswith(","):
            return None
        value = self.text[self.pos : end]
        self.pos = end
        return value

    def param_follows(self) -> bool:
        """Whether the cursor is at ``token BWS "="`` (another parameter, not the next challenge)."""
        end = self.pos
        while end < len(self.text) and self.text[end] in _TCHARS:
            end += 1
        if end == self.pos:
            return False
        while end < len(self.text) and self.text[end] in _SPACE:
            end += 1
        return end < len(self.text) and self.text[end] == "="

    def param(self, params: dict[str, str]) -> None:
        name = self.token().lower()
        self.skip_spaces()
        self.pos += 1  # "=", guaranteed by param_follows
        self.skip_spaces()
        if self.peek() == '"':
            value = self.quoted_string()
        else:
            # Unquoted values must be tokens; registries in the wild send URLs unquoted, so accept any
            # run of characters up to the next separator.
            start = self.pos
            while self.peek() and self.peek() not in _SPACE + ',"':
                self.pos += 1
            if start == self.pos:
                raise self.fail(f"parameter {name!r} has no value")
            value = self.text[start : self.pos]
        if name in params:
            raise self.fail(f"parameter {name!r} given twice")
        params[name] = value

    def challenges(self) -> list[Challenge]:
        found: list[Challenge] = []
        self.skip_list_separators()
        while not self.at_end():
            found.append(self.challenge())
        return found

    def challenge(self) -> Challenge:
        """One challenge; leaves the cursor at the end or at the start of the next challenge."""
        scheme = self.token().lower()
        spaces = self.skip_spaces()
        if self.at_end() or self.peek() == ",":
            self.skip_list_separators()
            return Challenge(scheme=scheme)
        if not spaces:
            raise self.fail(f"expected a space after scheme {scheme!r}")
        if not self.param_follows():
            token68 = self.token68_here()
            if token68 is None:
                raise self.fail(f"expected parameters or a token68 after scheme {scheme!r}")
            self.skip_list_separators()
            return Challenge(scheme=scheme, token68=token68)
        params: dict[str, str] = {}
        while True:
            self.param(params)
            self.skip_spaces()
            if self.at_end():
                break
            if self.peek() != ",":
                raise self.fail(f"expected ',' between parameters, found {self.peek()!r}")
            self.skip_list_separators()
            if self.at_end() or not self.param_follows():
                break
        return Challenge(scheme=scheme, params=params)


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges; raises InvalidChallenge if malformed
    (never anything else: it is upstream input)."""
    if len(header) > MAX_CHALLENGE:
        raise InvalidChallenge(f"WWW-Authenticate header longer than {MAX_CHALLENGE} characters")
    challenges = _ChallengeParser(header).challenges()
    if not challenges:
        raise InvalidChallenge("empty WWW-Authenticate header")
    return challenges


# --- Credentials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Username and password (or token) for one registry. The password never appears in ``repr``."""

    username: str
    password: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """Identifies credentials in cache keys: a token obtained with one secret never serves another."""
        return hashlib.sha256(f"{self.username}\0{self.password}".encode()).hexdigest()[:16]

    def basic_authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")


class CredentialsProvider(Protocol):
    """Where the client gets credentials for a registry (the normalised name, e.g. ``docker.io``).

    Return None for anonymous access. Called before each token fetch, so a provider backed by expiring
    tokens (ECR's 12 h authorization tokens) can hand out a fresh one.
    """

    async def credentials_for(self, registry: str, repository: str) -> Credentials | None: ...


class Anonymous:
    async def credentials_for(self, registry: str, repository: str) -> Credentials | None:
        return None


class StaticCredentials:
    """Fixed credentials per registry name."""

    def __init__(self, by_registry: Mapping[str, Credentials]) -> None:
        self._by_registry = {normalize_registry(host): creds for host, creds in by_registry.items()}

    async def credentials_for(self, registry: str, repository: str) -> Credentials | None:
        return self._by_registry.get(registry)


class ChainedCredentials:
    """The first provider that has credentials for a registry wins."""

    def __init__(self, *providers: CredentialsProvider) -> None:
        self._providers = providers

    async def credentials_for(self, registry: str, repository: str) -> Credentials | None:
        for provider in self._providers:
            found = await provider.credentials_for(registry, repository)
            if found is not None:
                return found
        return None


class InvalidDockerConfig(ValueError):
    """A dockerconfigjson document is malformed. The message never contains a credential."""


@dataclass(frozen=True)
class _ConfigEntry:
    host: str
    path: str
    credentials: Credentials | None
    unsupported: str | None = None


class DockerConfigCredentials:
    """Credentials from a ``kubernetes.io/dockerconfigjson`` (or legacy ``dockercfg``) document.

    Keys are matched the way the kubelet matches image pull secrets: scheme and ``/v1/``-style API paths
    are ignored, every Docker Hub spelling (``https://index.docker.io/v1/``, ``docker.io``, ...) means
    ``docker.io``, and a key with a repository path (``ghcr.io/org``) applies to repositories under it,
    the longest match winning.
    """

    def __init__(self, entries: Iterable[_ConfigEntry]) -> None:
        self._entries = sorted(entries, key=lambda entry: len(entry.path), reverse=True)

    @classmethod
    def from_json(cls, document: str | bytes | Mapping[str, Any]) -> DockerConfigCredentials:
        if not isinstance(document, Mapping):
            document = parse_json_object(
                document,
                InvalidDockerConfig,
                "docker config is not JSON",
                "docker config must be a JSON object",
            )
        auths = document.get("auths", document)
        if not isinstance(auths, Mapping):
            raise InvalidDockerConfig("docker config 'auths' must be an object")
        return cls(_config_entry(str(key), value) for key, value in auths.items())

    async def credentials_for(self, registry: str, repository: str) -> Credentials | None:
        for entry in self._entries:
            if entry.host != registry:
                continue
            if entry.path and repository != entry.path and not repository.startswith(entry.path + "/"):
                continue
            if entry.unsupported is not None:
                raise AuthError(f"credentials for {registry}: {entry.unsupported}")
            return entry.credentials
        return None


def _config_key(key: str) -> tuple[str, str]:
    """Split a config key: ``https://index.docker.io/v1/`` -> docker.io, ``ghcr.io/org`` -> ghcr.io + org."""
    bare = key.strip()
    for scheme in ("https://", "http://"):
        if bare.lower().startswith(scheme):
            bare = bare[len(scheme) :]
    host, _, path = bare.partition("/")
    path = path.strip("/")
    if path in ("v1", "v2"):
        path = ""
    return normalize_registry(host.lower()), path


def _config_entry(key: str, value: object) -> _ConfigEntry:
    host, path = _config_key(key)
    if not isinstance(value, Mapping):
        raise InvalidDockerConfig(f"docker config entry for {host!r} must be an object")
    auth, username, password = value.get("auth"), value.get("username"), value.get("password")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidDockerConfig(f"docker config entry for {host!r}: 'auth' is not base64") from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise InvalidDockerConfig(f"docker config entry for {host!r}: 'auth' is not user:password")
    if isinstance(username, str) and isinstance(password, str) and (username or password):
        return _ConfigEntry(host, path, Credentials(username, password))
    if value.get("identitytoken") or value.get("registrytoken"):
        return _ConfigEntry(host, path, None, unsupported="identity/registry tokens are not supported")
    raise InvalidDockerConfig(f"docker config entry for {host!r} has neither 'auth' nor username/password")


# --- Tokens -------------------------------------------------------------------------------------

# The distribution token spec: a token without expires_in is valid for 60 seconds.
DEFAULT_TOKEN_LIFETIME = 60.0
# Longer lifetimes are not believed: a token is fetched again after an hour at the latest, whatever
# expires_in says (1e300, infinity), so every cache entry expires.
MAX_TOKEN_LIFETIME = 3600.0
# Real bearer tokens (JWTs) are a few KiB; Docker Hub sends each twice (token, access_token).
MAX_TOKEN_SIZE = 64 * 1024
MAX_TOKEN_RESPONSE = 4 * MAX_TOKEN_SIZE


@dataclass(frozen=True)
class TokenKey:
    """A token is valid for one registry, one set of scopes, and was obtained with one set of credentials."""

    registry: str
    realm: str
    service: str
    scopes: tuple[str, ...]
    credentials: str  # Credentials.fingerprint, or "" when anonymous

    @property
    def weight(self) -> int:
        """Roughly the bytes this key holds (realm, service and scopes are upstream-chosen)."""
        return (
            len(self.registry) + len(self.realm) + len(self.service) + sum(len(s) for s in self.scopes) + 64
        )


class BearerTokenCache:
    """Bearer tokens of source registries per (registry, realm, scopes, credentials), reused until
    shortly before they expire; one per process, shared by every mirror.

    Bounded, because realms, scopes and tokens are upstream input: a registry answering every request
    with a new realm and a giant token must not grow it. Expiry is capped at MAX_TOKEN_LIFETIME; at most
    ``max_entries`` tokens of at most ``max_bytes`` in all, and ``max_per_registry`` for one registry
    name, so one churning upstream evicts its own tokens first and others' only by the global bound.
    Expired entries are pruned on every put; beyond a bound the least recently used go first.
    (Not the ECR authorization-token cache, ``aws.tokens.EcrTokenCache``.)
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_entries: int = 1_000,
        max_bytes: int = 16 * 1024 * 1024,
        max_per_registry: int = 64,
    ) -> None:
        self._clock = clock
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_per_registry = max_per_registry
        self._tokens: OrderedDict[TokenKey, tuple[str, float]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def size_bytes(self) -> int:
        """Bytes held (tokens and keys), as counted against ``max_bytes``."""
        return self._bytes

    def get(self, key: TokenKey) -> str | None:
        found = self._tokens.get(key)
        if found is None:
            return None
        token, usable_until = found
        if self._clock() >= usable_until:
            self._remove(key)
            return None
        self._tokens.move_to_end(key)
        return token

    def put(self, key: TokenKey, token: str, expires_in: float) -> None:
        if len(token) > MAX_TOKEN_SIZE:
            raise LimitExceeded(
                f"bearer token of {len(token)} bytes exceeds {MAX_TOKEN_SIZE} bytes",
                limit="token size",
                bound=MAX_TOKEN_SIZE,
            )
        lifetime = clamp_lifetime(expires_in)
        now = self._clock()
        # Stop using a token a little before it expires so a request never arrives with a dead one.
        margin = min(30.0, lifetime / 4)
        self._remove(key)
        for stale in [k for k, (_, until) in self._tokens.items() if until <= now]:
            self._remove(stale)
        same_registry = [k for k in self._tokens if k.registry == key.registry]
        for oldest in same_registry[: max(0, len(same_registry) - self.max_per_registry + 1)]:
            self._remove(oldest)
        weight = key.weight + len(token)
        while self._tokens and (
            len(self._tokens) >= self.max_entries or self._bytes + weight > self.max_bytes
        ):
            self._remove(next(iter(self._tokens)))
        if weight > self.max_bytes:
            return  # larger than the whole cache: used once, never kept
        self._tokens[key] = (token, now + lifetime - margin)
        self._bytes += weight

    def _remove(self, key: TokenKey) -> None:
        found = self._tokens.pop(key, None)
        if found is not None:
            self._bytes -= key.weight + len(found[0])


def clamp_lifetime(expires_in: float) -> float:
    """A token lifetime in [DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME]; NaN and nonsense -> default."""
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
        return DEFAULT_TOKEN_LIFETIME
    # float() of an int of 400 digits (valid JSON) raises OverflowError: clip ints first.
    value = float(min(expires_in, 10**9)) if isinstance(expires_in, int) else float(expires_in)
    if math.isnan(value) or value <= 0:
        return DEFAULT_TOKEN_LIFETIME
    return min(max(value, DEFAULT_TOKEN_LIFETIME), MAX_TOKEN_LIFETIME)


def parse_token_response(body: bytes) -> tuple[str, float]:
    """``{"token" | "access_token": ..., "expires_in": ...}`` -> (token, lifetime in seconds).

    The lifetime is clamped (``clamp_lifetime``); a token larger than MAX_TOKEN_SIZE, or with characters
    that cannot travel in an HTTP header (CR/LF would inject headers), is refused.
    """
    document = parse_json_object(
        body,
        AuthError,
        "token endpoint answered with something that is not JSON",
        "token endpoint answered with something that is not a JSON object",
    )
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token:
        raise AuthError("token endpoint answer has no token")
    if len(token) > MAX_TOKEN_SIZE:
        raise AuthError(
            f"token endpoint answered with a token of {len(token)} bytes (at most {MAX_TOKEN_SIZE})"
        )
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise AuthError("token endpoint answered with a token that is not printable ASCII")
    expires_in = document.get("expires_in")
    lifetime = expires_in if isinstance(expires_in, int | float) else DEFAULT_TOKEN_LIFETIME
    return token, clamp_lifetime(lifetime)


def repository_scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Authenticator:
    """Authorization headers for registry requests, learning each registry's scheme from its 401s.

    One per RegistryClient (that is, per credentials provider). The token cache may be shared: its keys
    include the credentials, so tokens never cross from one tenant's secret to another's.
    """

    def __init__(
        self,
        sender: HttpSender,
        credentials: CredentialsProvider,
        token_cache: BearerTokenCache,
        *,
        insecure_hosts: frozenset[str] = frozenset(),
        deadlines: Deadlines = DEFAULT_DEADLINES,
    ) -> None:
        self._sender = sender
        self._credentials = credentials
        self._tokens = token_cache
        self._insecure_hosts = insecure_hosts
        self._deadlines = deadlines
        self._schemes: dict[str, Challenge] = {}
        self._locks: dict[TokenKey, _KeyLock] = {}

    async def authorization(self, registry: str, repository: str, scopes: tuple[str, ...]) -> str | None:
        """The header for a request, if this registry's scheme is known; None means "try without"."""
        challenge = self._schemes.get(registry)
        if challenge is None:
            return None
        return await self._header(registry, repository, scopes, challenge, rejected=None)

    async def challenged(
        self,
        registry: str,
        repository: str,
        scopes: tuple[str, ...],
        header: str | None,
        *,
        rejected: str | None,
        what: str,
    ) -> str:
        """Answer a 401: learn the scheme from ``header`` and return the Authorization to retry with.

        ``rejected`` is the Authorization the registry just refused: a cached token equal to it is
        replaced, one that another request refreshed meanwhile is reused.
        """
        if not header:
            raise AuthError(f"{what}: 401 without WWW-Authenticate", status=401)
        try:
            challenges = parse_www_authenticate(header)
        except InvalidChallenge as exc:
            raise AuthError(f"{what}: {exc}", status=401) from exc
        by_scheme = {challenge.scheme: challenge for challenge in challenges}
        challenge = by_scheme.get("bearer") or by_scheme.get("basic")
        if challenge is None:
            schemes = ", ".join(sorted(by_scheme))[:200]
            raise AuthError(f"{what}: unsupported authentication scheme(s) {schemes}", status=401)
        if len(challenge.scopes) > MAX_SCOPES:
            raise AuthError(f"{what}: challenge asks for more than {MAX_SCOPES} scopes", status=401)
        self._schemes[registry] = challenge
        return await self._header(
            registry, repository, scopes, challenge, rejected=rejected, extra_scopes=challenge.scopes
        )

    async def _header(
        self,
        registry: str,
        repository: str,
        scopes: tuple[str, ...],
        challenge: Challenge,
        *,
        rejected: str | None,
        extra_scopes: tuple[str, ...] = (),
    ) -> str:
        credentials = await self._credentials.credentials_for(registry, repository)
        if challenge.scheme == "basic":
            if credentials is None:
                raise AuthError(f"{registry} requires credentials (Basic authentication), none configured")
            return credentials.basic_authorization()
        realm = challenge.realm
        if not realm:
            raise AuthError(f"{registry}: Bearer challenge without realm")
        key = TokenKey(
            registry=registry,
            realm=realm,
            service=challenge.service or "",
            scopes=tuple(sorted(scopes)),
            credentials=credentials.fingerprint if credentials else "",
        )
        # One fetch per key at a time: concurrent blob copies would otherwise each ask for the same token.
        # The lock is dropped when nobody waits on it, so realm churn cannot grow this dict either.
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = _KeyLock()
        lock.users += 1
        try:
            async with lock.lock:
                cached = self._tokens.get(key)
                if cached is not None and f"Bearer {cached}" != rejected:
                    return f"Bearer {cached}"
                wanted = tuple(sorted(set(scopes) | set(extra_scopes)))
                what = f"token request to {redact(URL(realm)) if _is_url(realm) else 'an invalid realm'}"
                token, lifetime = await within(
                    self._deadlines.request,
                    lambda: self._fetch_token(realm, challenge.service, wanted, credentials),
                    what=what,
                )
                self._tokens.put(key, token, lifetime)
        finally:
            lock.users -= 1
            if lock.users == 0:
                del self._locks[key]
        return f"Bearer {token}"

    async def _fetch_token(
        self, realm: str, service: str | None, scopes: tuple[str, ...], credentials: Credentials | None
    ) -> tuple[str, float]:
        if not _is_url(realm):
            raise AuthError(f"token realm {realm[:100]!r} is not an http(s) URL")
        url = URL(realm)
        if (
            url.scheme == "http"
            and credentials is not None
            and url.host_port_subcomponent not in self._insecure_hosts
        ):
            raise AuthError(f"refusing to send credentials to plain-HTTP token realm {redact(url)}")
        query: list[tuple[str, str]] = [("service", service)] if service else []
        query += [("scope", scope) for scope in scopes]
        url = url.extend_query(query)
        headers = {"Accept": "application/json"}
        if credentials is not None:
            headers["Authorization"] = credentials.basic_authorization()
        what = f"token request to {redact(url)}"
        response, _ = await send_following_redirects(self._sender, "GET", url, headers)
        status = response.status
        body = await read_body(response, MAX_TOKEN_RESPONSE, what, too_large=TokenTooLarge)
        if status in (401, 403):
            raise AuthError(f"{what}: credentials refused ({status})", status=status)
        if status != 200:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RegistryError(f"{what}: HTTP {status}", status=status, retry_after=retry_after)
        return parse_token_response(body)


class TokenTooLarge(AuthError):
    """A token endpoint answered with more than MAX_TOKEN_RESPONSE bytes."""


def _is_url(realm: str) -> bool:
    """Whether a realm is an absolute http(s) URL with a host (yarl raises on some garbage)."""
    try:
        url = URL(realm)
        return url.scheme in ("https", "http") and bool(url.host)
    except (ValueError, TypeError, UnicodeError):
        return False
