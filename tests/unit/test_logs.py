from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import kopf
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ecr_operator.logs import REDACTED, configure_logging, redact

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET /v2/ Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("headers={'Authorization': 'Basic QWxhZGRpbjpvcGVu', 'Host': 'r'}", "QWxhZGRpbjpvcGVu"),
        ('{"authorization": "AWS4-HMAC-SHA256 Credential=x, Signature=f00d"}', "Signature=f00d"),
        ("login with password=hunter2 for user", "hunter2"),
        ('{"password": "correct horse battery", "username": "AWS"}', "correct horse"),
        ("aws_secret_access_key='wJalrXUtnFEMI/K7MDENG+bPxRfiCY'", "wJalrXUtnFEMI"),
        ("url=https://x.amazonaws.com/?X-Amz-Security-Token=FQoGZXIvYXdz&X-Amz-Date=1", "FQoGZXIvYXdz"),
        ("https://robot:s3cr3t@registry.example.com/v2/", "s3cr3t"),
        ("got eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl from issuer", "c2lnbmF0dXJl"),
        ("authorizationToken QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu", "QVdTOjEyMzQ1Njc4"),
        ('{"auths": {"r": {"auth": "dXNlcjpwYXNz"}}}', "dXNlcjpwYXNz"),
        ("credentials: AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("access key ASIAIOSFODNN7EXAMPLE in use", "ASIAIOSFODNN7EXAMPLE"),
        ("refresh_token=abc123&scope=repository", "abc123"),
    ],
)
def test_credentials_are_redacted(text: str, secret: str) -> None:
    redacted = redact(text)

    assert secret not in redacted
    assert REDACTED in redacted
    assert redact(redacted) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "token refresh scheduled in 5m",
        "secretName: ecr-pull-secret",
        "ecr_operator_pull_secret_token_refreshes_total=3",
        "assuming arn:aws:iam::123456789012:role/ecr-pusher",
        "pushed 123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app@sha256:" + "a" * 64,
        "user AWS logged in to https://registry.example.com/v2/",
    ],
)
def test_ordinary_messages_are_left_alone(text: str) -> None:
    assert redact(text) == text


SECRET_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=_-"


@given(secret=st.text(alphabet=SECRET_CHARACTERS, min_size=8))
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("password={}", f"password={REDACTED}"),
        ("'token': '{}'", f"'token': '{REDACTED}'"),
        ('"secret": "{}"', f'"secret": "{REDACTED}"'),
        ("Authorization: Bearer {}", f"Authorization: {REDACTED}"),
        ("api_key: {}", f"api_key: {REDACTED}"),
    ],
)
def test_no_secret_survives_its_usual_setting(template: str, expected: str, secret: str) -> None:
    assert redact(template.format(secret)) == expected


# A "/" cannot appear unescaped in a URL's userinfo; it would start the path.
@given(password=st.text(alphabet=SECRET_CHARACTERS.replace("/", "") + "%", min_size=8))
def test_no_password_survives_in_a_url(password: str) -> None:
    url = "pulling https://robot:{}@registry.example.com/v2/app/manifests/1"

    assert redact(url.format(password)) == url.format(REDACTED)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_message_extras_and_no_secrets(captured_logs: io.StringIO) -> None:
    configure_logging("json", stream=captured_logs)

    logging.getLogger("ecr_operator.test").info(
        "logging in with password=%s",
        "hunter2",
        extra={"registry": "r.example", "registry_password": "s3cr3t"},
    )

    [line] = json_lines(captured_logs)
    assert line["level"] == "INFO"
    assert line["logger"] == "ecr_operator.test"
    assert line["message"] == f"logging in with password={REDACTED}"
    assert line["registry"] == "r.example"
    assert line["registry_password"] == REDACTED
    assert "hunter2" not in captured_logs.getvalue()
    assert "s3cr3t" not in captured_logs.getvalue()


def test_exception_text_is_redacted(captured_logs: io.StringIO) -> None:
    configure_logging("json", stream=captured_logs)

    try:
        raise RuntimeError("registry said 401 to Authorization: Basic dXNlcjpodW50ZXIy")
    except RuntimeError:
        logging.getLogger("ecr_operator.test").exception("push failed")

    [line] = json_lines(captured_logs)
    assert "RuntimeError" in str(line["exception"])
    assert "dXNlcjpodW50ZXIy" not in captured_logs.getvalue()


def test_objects_json_cannot_encode_are_stringified_and_redacted(captured_logs: io.StringIO) -> None:
    class Login:
        def __str__(self) -> str:
            return "Login(user=AWS, password=hunter2)"

    configure_logging("json", stream=captured_logs)

    logging.getLogger("ecr_operator.test").info("login", extra={"login": Login()})

    [line] = json_lines(captured_logs)
    assert str(line["login"]).startswith(f"Login(user=AWS, password={REDACTED}")
    assert "hunter2" not in captured_logs.getvalue()


def test_kopf_object_records_name_their_object(captured_logs: io.StringIO) -> None:
    configure_logging("json", stream=captured_logs)
    reference = {"kind": "EcrRepository", "namespace": "team-a", "name": "app", "uid": "u-1"}

    logging.getLogger("kopf.objects").info(
        "Handler succeeded.", extra={"k8s_ref": reference, "settings": kopf.OperatorSettings()}
    )

    [line] = json_lines(captured_logs)
    assert line["object"] == {"kind": "EcrRepository", "namespace": "team-a", "name": "app"}
    assert "settings" not in line


def test_text_format_is_one_readable_line_without_secrets(captured_logs: io.StringIO) -> None:
    configure_logging("text", stream=captured_logs)
    reference = {"kind": "ImageMirror", "namespace": "team-a", "name": "nginx"}

    logging.getLogger("kopf.objects").warning(
        "copy failed: token=%s", "abcdef123456", extra={"k8s_ref": reference, "tag": "1.27"}
    )

    output = captured_logs.getvalue()
    assert output.count("\n") == 1
    assert "WARNING kopf.objects [team-a/nginx] copy failed: token=[REDACTED] tag=1.27" in output
    assert "abcdef123456" not in output


def test_configuring_twice_does_not_duplicate_lines(captured_logs: io.StringIO) -> None:
    configure_logging("json", stream=io.StringIO())
    configure_logging("json", stream=captured_logs)

    logging.getLogger("ecr_operator.test").info("once")

    assert len(json_lines(captured_logs)) == 1


def test_level_filters_records(captured_logs: io.StringIO) -> None:
    configure_logging("json", level="WARNING", stream=captured_logs)

    logging.getLogger("ecr_operator.test").info("hidden")
    logging.getLogger("ecr_operator.test").warning("shown")

    assert [line["message"] for line in json_lines(captured_logs)] == ["shown"]


# --- header dumps, URL-encoded and unusual-whitespace forms (issue 8, F14) ------------------------------

SECRET = "dXNlcjpodW50ZXIy"


@pytest.mark.parametrize(
    "text",
    [
        # Header dumps: dict/list/tuple/bytes/multidict reprs.
        "headers={'Authorization': ['Basic " + SECRET + "']}",
        "{b'Authorization': [b'Basic " + SECRET + "']}",
        "[('Host', 'r'), ('Authorization', 'Bearer " + SECRET + "')]",
        "<CIMultiDictProxy('Host': 'r', 'Authorization': 'Bearer " + SECRET + "')>",
        "{'Proxy-Authorization': ('Basic " + SECRET + "',)}",
        '{"headers": {"authorization": ["Basic ' + SECRET + '"]}}',
        '{\\"password\\": \\"' + SECRET + '\\"}',
        "{'password': \"it's " + SECRET + '"}',
        "('password', '" + SECRET + "')",
        # URL-encoded, once and twice.
        "Authorization%3A%20Basic%20" + SECRET + "&next=1",
        "Authorization%253A%2520Basic%2520" + SECRET,
        "q=password%3D" + SECRET + "%26user%3DAWS",
        "%22password%22%3A%22" + SECRET + "%22",
        "%7B%22token%22%3A%20%22" + SECRET + "%22%7D",
        "redirect=https%3A%2F%2Frobot%3A" + SECRET + "%40r.example%2Fv2",
        "Bearer%20" + SECRET,
        "password=%41" + SECRET,
        "auth%22%3A%22QVdTO" + SECRET + "%3D%3D%22",
        # Unusual whitespace between key, separator and value.
        "Authorization:\u00a0Basic\u00a0" + SECRET,
        "Authorization\u3000:\u3000Bearer " + SECRET,
        "password\u00a0=\u2003" + SECRET,
        "token\u200b:\u200b" + SECRET,
        "secret\ufeff=\u2028" + SECRET,
        "api_key\x0b:\x0b" + SECRET,
        # A credential after its scheme with no header name.
        "upstream sent Basic " + SECRET + " back",
        "Bearer\u00a0" + SECRET,
    ],
)
def test_header_dumps_encoded_and_oddly_spaced_credentials_are_redacted(text: str) -> None:
    redacted = redact(text)

    assert SECRET not in redacted, redacted
    assert REDACTED in redacted
    assert redact(redacted) == redacted


def test_a_header_dump_keeps_its_shape() -> None:
    assert redact("key%3DAKIAIOSFODNN7EXAMPLE&x=1") == f"key%3D{REDACTED}&x=1"
    assert redact("{'Authorization': ['Basic " + SECRET + "'], 'Host': 'r'}") == (
        f"{{'Authorization': ['{REDACTED}'], 'Host': 'r'}}"
    )
    assert (
        redact("Authorization%3A%20Basic%20" + SECRET + "&next=1") == f"Authorization%3A%20{REDACTED}&next=1"
    )
    assert redact("q=password%3D" + SECRET + "%26user%3DAWS") == f"q=password%3D{REDACTED}%26user%3DAWS"


@pytest.mark.parametrize(
    "text", ["falling back to Basic authentication", "Bearer realm=x", "use a Bearer token from the realm"]
)
def test_scheme_names_in_prose_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_structured_authorization_headers_are_redacted() -> None:
    from ecr_operator.logs import redact_value

    assert redact_value("headers", {"Authorization": ["Basic " + SECRET], "Host": "r"}) == {
        "Authorization": REDACTED,
        "Host": "r",
    }


WHITESPACE = st.sampled_from(
    [
        "",
        " ",
        "\t",
        "\u00a0",
        "\u2002",
        "\u2003",
        "\u2009",
        "\u202f",
        "\u3000",
        "\u200b",
        "\ufeff",
        "%20",
        "%09",
    ]
)
ASSIGNMENTS = st.sampled_from([":", "=", "%3A", "%3a", "%3D", "%253A"])
KEYS = st.sampled_from(
    [
        "password",
        "Password",
        "token",
        "registry_token",
        "secret",
        "aws_secret_access_key",
        "X-Amz-Security-Token",
    ]
)
QUOTES = st.sampled_from(["", "'", '"', '\\"', "%22", "%27"])


@given(
    key=KEYS,
    quote=QUOTES,
    before=WHITESPACE,
    assign=ASSIGNMENTS,
    after=WHITESPACE,
    secret=st.text(alphabet=SECRET_CHARACTERS.replace("+", ""), min_size=8),
)
def test_no_secret_survives_any_separator_or_encoding(
    key: str, quote: str, before: str, assign: str, after: str, secret: str
) -> None:
    text = f"x {quote}{key}{quote}{before}{assign}{after}{quote}{secret}{quote} y"
    assume(secret not in text.replace(secret, " "))  # a "secret" that is also part of the key name

    redacted = redact(text)

    assert secret not in redacted
    assert redact(redacted) == redacted


@given(
    wrap=st.sampled_from(["{k}: {v}", "{{{k}: {v}}}", "{{{k}: [{v}]}}", "[({k}, {v})]", "{k}={v}"]),
    quote=st.sampled_from(["'", '"', "%22"]),
    name=st.sampled_from(["Authorization", "authorization", "Proxy-Authorization"]),
    scheme=st.sampled_from(["Basic", "Bearer", "AWS4-HMAC-SHA256 Credential=AKID/x, Signature="]),
    space=WHITESPACE.filter(bool),
    secret=st.text(alphabet=SECRET_CHARACTERS, min_size=8),
)
def test_no_authorization_header_survives_any_dump_format(
    wrap: str, quote: str, name: str, scheme: str, space: str, secret: str
) -> None:
    text = wrap.format(k=f"{quote}{name}{quote}", v=f"{quote}{scheme}{space}{secret}{quote}")
    assume(secret not in text.replace(secret, " "))  # a "secret" that is also part of the header name

    redacted = redact(text)

    assert secret not in redacted
    assert redact(redacted) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "a." * 100_000,  # took 293 s for 40 kB on the backtracking patterns redaction used before
        "eyJaaaa." * 25_000,
        "authorization: '[" * 12_000,
        "password=%3D%22" * 13_000,
        "https://a:b" * 18_000,
        "https%3A%2F%2Fa%3A" * 11_000,
        "Basic " * 33_000,
        "token" * 40_000,
        "'" * 200_000,
        "\u00a0" * 200_000,
    ],
)
def test_redaction_is_linear_time_on_hostile_text(text: str) -> None:
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 5.0  # linear: well under a second on this machine
