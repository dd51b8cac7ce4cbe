"""WWW-Authenticate parsing, docker config credentials, the token cache."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_operator.registry.auth import (
    BearerTokenCache,
    ChainedCredentials,
    Challenge,
    Credentials,
    DockerConfigCredentials,
    InvalidDockerConfig,
    StaticCredentials,
    TokenKey,
    parse_token_response,
    parse_www_authenticate,
)
from ecr_operator.registry.errors import AuthError, InvalidChallenge
from refusals import unless_refused

pytestmark = pytest.mark.unit


# --- WWW-Authenticate ---------------------------------------------------------------------------


def test_docker_hub_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )
    [challenge] = parse_www_authenticate(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.service == "registry.docker.io"
    assert challenge.scopes == ("repository:library/nginx:pull",)


def test_scheme_and_parameter_names_are_case_insensitive() -> None:
    [challenge] = parse_www_authenticate('BEARER Realm="r", SERVICE=s')
    assert challenge == Challenge(scheme="bearer", params={"realm": "r", "service": "s"})


def test_quoted_strings_unescape_and_may_hold_commas() -> None:
    [challenge] = parse_www_authenticate(r'Bearer realm="a \"quoted\" realm, with comma",error="x\\y"')
    assert challenge.realm == 'a "quoted" realm, with comma'
    assert challenge.params["error"] == "x\\y"


def test_several_challenges_in_one_header() -> None:
    header = 'Basic realm="basic-realm", Bearer realm="https://t/token", service="svc",scope="a b"'
    basic, bearer = parse_www_authenticate(header)
    assert basic == Challenge(scheme="basic", params={"realm": "basic-realm"})
    assert bearer.params == {"realm": "https://t/token", "service": "svc", "scope": "a b"}
    assert bearer.scopes == ("a", "b")


def test_whitespace_around_equals_and_empty_list_elements() -> None:
    [first, second] = parse_www_authenticate(' , Bearer realm = "r" ,, service= "s" , Basic')
    assert first.params == {"realm": "r", "service": "s"}
    assert second == Challenge(scheme="basic")


def test_token68_challenge() -> None:
    [challenge, other] = parse_www_authenticate("Negotiate abc+/def==, Basic realm=x")
    assert challenge == Challenge(scheme="negotiate", token68="abc+/def==")
    assert other.realm == "x"


def test_unquoted_urls_are_accepted() -> None:
    [challenge] = parse_www_authenticate("Bearer realm=https://auth.example/token?x=1,service=example")
    assert challenge.realm == "https://auth.example/token?x=1"
    assert challenge.service == "example"


@pytest.mark.parametrize(
    ("header", "complaint"),
    [
        ("", "empty"),
        (" , ,", "empty"),
        ('Bearer realm="unterminated', "unterminated"),
        ('Bearer realm="a",realm="b"', "given twice"),
        ("Bearer realm=", "no value"),
        ('Bearer realm="a" service="b"', "expected ','"),
        ('Bearer realm="a"x', "expected ','"),
        ('Bearer="x"', "expected a space"),
        ("Bearer =x", "expected parameters or a token68"),
        ('"quoted" realm=x', "expected a token"),
    ],
)
def test_malformed_headers_raise_invalid_challenge(header: str, complaint: str) -> None:
    with pytest.raises(InvalidChallenge, match=complaint):
        parse_www_authenticate(header)


_token = st.text(
    alphabet="!#$%&'*+-.^_`|~abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1
)
_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(["\t", "é"]), max_size=30
)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(
    st.lists(
        st.tuples(_token, st.dictionaries(_token.map(str.lower), _value, min_size=1, max_size=4)),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([",", ", ", " ,  "]),
)
def test_rendered_challenges_parse_back(challenges: list[tuple[str, dict[str, str]]], separator: str) -> None:
    header = separator.join(
        f"{scheme} " + separator.join(f"{name}={_quote(value)}" for name, value in params.items())
        for scheme, params in challenges
    )
    parsed = parse_www_authenticate(header)
    assert [(c.scheme, dict(c.params)) for c in parsed] == [(s.lower(), p) for s, p in challenges]


@given(st.text(max_size=120))
def test_parser_only_ever_raises_invalid_challenge(header: str) -> None:
    challenges = unless_refused(InvalidChallenge, parse_www_authenticate, header)
    if challenges is None:
        return
    assert challenges
    assert all(challenge.scheme == challenge.scheme.lower() for challenge in challenges)


# --- credentials --------------------------------------------------------------------------------


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_docker_config_auth_field_and_docker_hub_aliases() -> None:
    config = DockerConfigCredentials.from_json(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": _auth("hub-user", "hub:pass")},
                    "ghcr.io": {"username": "gh", "password": "token"},
                    "https://quay.io": {"auth": _auth("q", "p")},
                }
            }
        )
    )
    assert await config.credentials_for("docker.io", "library/nginx") == Credentials("hub-user", "hub:pass")
    assert await config.credentials_for("ghcr.io", "org/app") == Credentials("gh", "token")
    assert await config.credentials_for("quay.io", "org/app") == Credentials("q", "p")
    assert await config.credentials_for("example.com", "app") is None


@pytest.mark.parametrize(
    "key", ["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v2/"]
)
async def test_every_docker_hub_spelling_means_docker_io(key: str) -> None:
    config = DockerConfigCredentials.from_json({"auths": {key: {"auth": _auth("u", "p")}}})
    assert await config.credentials_for("docker.io", "library/nginx") == Credentials("u", "p")


async def test_repository_scoped_keys_win_over_host_keys() -> None:
    config = DockerConfigCredentials.from_json(
        {
            "auths": {
                "ghcr.io": {"auth": _auth("host", "p")},
                "ghcr.io/team": {"auth": _auth("team", "p")},
                "ghcr.io/team/special": {"auth": _auth("special", "p")},
            }
        }
    )

    async def user(repository: str) -> str | None:
        found = await config.credentials_for("ghcr.io", repository)
        return found.username if found else None

    assert await user("team/app") == "team"
    assert await user("team/special") == "special"
    assert await user("team/special-other") == "team"
    assert await user("teamwork/app") == "host"


async def test_legacy_dockercfg_without_auths_wrapper() -> None:
    config = DockerConfigCredentials.from_json({"registry.example": {"auth": _auth("u", "p")}})
    assert await config.credentials_for("registry.example", "app") == Credentials("u", "p")


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"auths": []}', "'auths' must be an object"),
        ('{"auths": {"r.io": "x"}}', "must be an object"),
        ('{"auths": {"r.io": {"auth": "%%%secret%%%"}}}', "not base64"),
        (
            '{"auths": {"r.io": {"auth": "' + base64.b64encode(b"nocolon-secret").decode() + '"}}}',
            "user:password",
        ),
        ('{"auths": {"r.io": {"email": "a@b"}}}', "neither"),
    ],
)
def test_malformed_docker_config_errors_never_show_secrets(document: str, complaint: str) -> None:
    with pytest.raises(InvalidDockerConfig, match=complaint) as raised:
        DockerConfigCredentials.from_json(document)
    assert "secret" not in str(raised.value)


async def test_identity_tokens_are_refused_when_needed_not_when_parsing() -> None:
    config = DockerConfigCredentials.from_json(
        {"auths": {"acr.example": {"identitytoken": "refresh"}, "ok.example": {"auth": _auth("u", "p")}}}
    )
    assert await config.credentials_for("ok.example", "app") == Credentials("u", "p")
    with pytest.raises(AuthError, match="identity"):
        await config.credentials_for("acr.example", "app")


async def test_chained_credentials_take_the_first_answer() -> None:
    chain = ChainedCredentials(
        StaticCredentials({"a.io": Credentials("first", "1")}),
        StaticCredentials({"a.io": Credentials("second", "2"), "index.docker.io": Credentials("hub", "3")}),
    )
    assert await chain.credentials_for("a.io", "x") == Credentials("first", "1")
    assert await chain.credentials_for("docker.io", "library/x") == Credentials("hub", "3")
    assert await chain.credentials_for("b.io", "x") is None


def test_credentials_never_show_the_password() -> None:
    credentials = Credentials("user", "hunter2")
    assert "hunter2" not in repr(credentials)
    assert "hunter2" not in credentials.fingerprint
    assert credentials.fingerprint != Credentials("user", "other").fingerprint


# --- tokens -------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key(scope: str = "repository:a:pull", credentials: str = "") -> TokenKey:
    return TokenKey("r.io", "https://r.io/token", "r.io", (scope,), credentials)


def test_token_cache_honours_expires_in_with_a_safety_margin() -> None:
    clock = _Clock()
    cache = BearerTokenCache(clock)
    cache.put(_key(), "t", expires_in=300)
    clock.now += 260
    assert cache.get(_key()) == "t"
    clock.now += 15  # within 30 s of expiry: a request could arrive with a dead token
    assert cache.get(_key()) is None


def test_token_cache_separates_scopes_and_credentials() -> None:
    cache = BearerTokenCache(_Clock())
    cache.put(_key(credentials="tenant-a"), "token-a", expires_in=300)
    assert cache.get(_key(credentials="tenant-b")) is None
    assert cache.get(_key(scope="repository:b:pull", credentials="tenant-a")) is None
    assert cache.get(_key(credentials="tenant-a")) == "token-a"


def test_token_response_forms() -> None:
    assert parse_token_response(b'{"token": "t", "expires_in": 300}') == ("t", 300.0)
    assert parse_token_response(b'{"access_token": "a"}') == ("a", 60.0)
    # Shorter than the spec's minimum of 60 s is treated as 60 s.
    assert parse_token_response(b'{"token": "t", "expires_in": 5}') == ("t", 60.0)
    for body in (b"<html>", b"[]", b'{"expires_in": 300}', b'{"token": ""}'):
        with pytest.raises(AuthError):
            parse_token_response(body)
