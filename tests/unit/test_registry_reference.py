"""Image references: Docker Hub normalisation, ports, tags, digests, and clear errors."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ecr_operator.registry.digests import StreamVerifier, sha256_digest, validate_digest
from ecr_operator.registry.errors import DigestMismatch, InvalidReference
from ecr_operator.registry.reference import Reference, fallback_tag, parse_reference
from refusals import unless_refused

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", None, None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("docker.io/nginx", "docker.io", "library/nginx", None, None),
        ("index.docker.io/library/nginx:latest", "docker.io", "library/nginx", "latest", None),
        ("registry-1.docker.io/bitnami/redis", "docker.io", "bitnami/redis", None, None),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/team/app:v1", "localhost:5000", "team/app", "v1", None),
        ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", None, None),
        ("[::1]:5000/app:dev", "[::1]:5000", "app", "dev", None),
        (f"ghcr.io/org/app@{DIGEST}", "ghcr.io", "org/app", None, DIGEST),
        (f"ghcr.io/org/app:v1@{DIGEST}", "ghcr.io", "org/app", "v1", DIGEST),
        (f"nginx@{DIGEST}", "docker.io", "library/nginx", None, DIGEST),
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:v1",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "team/app",
            "v1",
            None,
        ),
        ("Registry/app", "Registry", "app", None, None),  # an uppercase first component is a host
        ("a.b-c/e--f.g_h__i:T_a-g.1", "a.b-c", "e--f.g_h__i", "T_a-g.1", None),
    ],
)
def test_parse_normalises_like_docker(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    reference = parse_reference(text)
    assert reference == Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def test_docker_hub_api_host_differs_from_its_name() -> None:
    assert parse_reference("nginx").api_host == "registry-1.docker.io"
    assert parse_reference("ghcr.io/org/app").api_host == "ghcr.io"


def test_target_prefers_digest_then_tag_then_latest() -> None:
    assert parse_reference(f"app:v1@{DIGEST}").target == DIGEST
    assert parse_reference("app:v1").target == "v1"
    assert parse_reference("app").target == "latest"


def test_str_is_fully_qualified() -> None:
    assert str(parse_reference("nginx:1.25")) == "docker.io/library/nginx:1.25"
    assert str(parse_reference(f"ghcr.io/o/a:v@{DIGEST}")) == f"ghcr.io/o/a:v@{DIGEST}"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty"),
        (f"@{DIGEST}", "no repository"),
        ("library/Nginx", "must be lowercase"),
        ("nginx:", "invalid tag"),
        ("nginx:-dash", "invalid tag"),
        ("nginx:" + "t" * 129, "invalid tag"),
        ("nginx@sha256:abc", "64 lowercase hex"),
        ("nginx@sha256:" + "AB" * 32, "64 lowercase hex"),
        ("nginx@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("nginx@latest", "invalid digest"),
        ("a//b", "invalid repository"),
        ("-a/b", "invalid repository"),
        ("a/b_", "invalid repository"),
        ("a:b:c", "invalid repository"),
        ("host:99999/app", "invalid port"),
        ("ho_st.io/app", "invalid registry host"),
        ("example.com/", "invalid repository"),
        ("example.com/" + "a" * 250, "longer than 255"),
    ],
)
def test_malformed_references_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(InvalidReference, match=complaint):
        parse_reference(text)


def test_fallback_tag_follows_the_referrers_tag_schema() -> None:
    assert fallback_tag(DIGEST) == "sha256-" + "ab" * 32
    assert fallback_tag("sha512:" + "c" * 128) == "sha512-" + "c" * 64


def test_with_tag_drops_digest_and_validates() -> None:
    pinned = parse_reference(f"app:v1@{DIGEST}")
    assert pinned.with_tag("v2") == Reference("docker.io", "library/app", "v2", None)
    with pytest.raises(InvalidReference):
        pinned.with_tag("bad tag")


def test_stream_verifier_accepts_exact_content_and_refuses_the_rest() -> None:
    data = b"layer bytes"
    digest = sha256_digest(data)
    good = StreamVerifier(digest, len(data))
    good.update(data[:4])
    good.update(data[4:])
    good.verify()

    longer = StreamVerifier(digest, len(data))
    with pytest.raises(DigestMismatch, match="more than"):
        longer.update(data + b"!")

    shorter = StreamVerifier(digest, len(data))
    shorter.update(data[:-1])
    with pytest.raises(DigestMismatch, match="got 10 bytes"):
        shorter.verify()

    other = StreamVerifier(digest, len(data))
    other.update(b"LAYER BYTES")
    with pytest.raises(DigestMismatch, match="hashes to"):
        other.verify()


# --- properties ---------------------------------------------------------------------------------

_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--"])
_path_component = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    _alnum,
    st.lists(st.tuples(_separator, _alnum), max_size=2),
)
_repository = st.lists(_path_component, min_size=1, max_size=3).map("/".join)
_domain_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?", fullmatch=True)
_registry = st.one_of(
    st.builds(lambda labels: ".".join(labels), st.lists(_domain_label, min_size=2, max_size=3)),
    st.builds(lambda label, port: f"{label}:{port}", _domain_label, st.integers(1, 65535)),
    st.just("localhost"),
    st.none(),
)
_tag = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
_digest = st.one_of(st.none(), st.binary(min_size=32, max_size=32).map(lambda raw: "sha256:" + raw.hex()))


@given(registry=_registry, repository=_repository, tag=_tag, digest=_digest)
def test_round_trip_reaches_the_canonical_form(
    registry: str | None, repository: str, tag: str | None, digest: str | None
) -> None:
    # Without a registry, a first component with a dot would itself be read as a registry host.
    assume(registry is not None or "." not in repository.split("/")[0])
    text = (f"{registry}/" if registry else "") + repository
    text += f":{tag}" if tag else ""
    text += f"@{digest}" if digest else ""

    expected_registry = registry or "docker.io"
    if expected_registry.lower() in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        expected_registry = "docker.io"
    expected_repository = repository
    if expected_registry == "docker.io" and "/" not in repository:
        expected_repository = f"library/{repository}"
    canonical = f"{expected_registry}/{expected_repository}"
    canonical += f":{tag}" if tag else ""
    canonical += f"@{digest}" if digest else ""

    parsed = parse_reference(text)
    assert str(parsed) == canonical
    assert parse_reference(str(parsed)) == parsed


@given(st.text(max_size=80))
def test_parser_never_crashes_on_arbitrary_text(text: str) -> None:
    parsed = unless_refused(InvalidReference, parse_reference, text)
    assert parsed is None or parse_reference(str(parsed)) == parsed


@given(st.text(max_size=140))
def test_digest_validation_only_raises_invalid_reference(text: str) -> None:
    with contextlib.suppress(InvalidReference):
        assert validate_digest(text) == text
