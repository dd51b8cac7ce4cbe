from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import kopf
import pytest
from hypothesis import given
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
