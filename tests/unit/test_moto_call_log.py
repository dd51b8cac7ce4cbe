"""The moto harness's call log: who made each AWS call (access key ID only), which key AssumeRole issued."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from ecr_sandbox.aws import AwsCall, callers_by_role, read_calls_log
from ecr_sandbox.moto_server import HarnessMiddleware, access_key_id, assumed_role

pytestmark = pytest.mark.unit

SIGNED = (
    "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE123/20260101/us-east-1/ecr/aws4_request,"
    " SignedHeaders=host;x-amz-date, Signature=abc123"
)
ASSUME_ROLE_BODY = (
    b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fecr-pull-a&RoleSessionName=x"
)
ASSUME_ROLE_ANSWER = (
    b"<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAISSUED0001</AccessKeyId>"
    b"<SecretAccessKey>very-secret</SecretAccessKey><SessionToken>tok</SessionToken></Credentials>"
    b"</AssumeRoleResult></AssumeRoleResponse>"
)


def form_request(body: bytes, authorization: str) -> dict[str, Any]:
    return {
        "PATH_INFO": "/",
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": authorization,
        "wsgi.input": io.BytesIO(body),
    }


def test_the_caller_is_the_access_key_id_of_the_signature() -> None:
    assert access_key_id({"HTTP_AUTHORIZATION": SIGNED}) == "ASIAEXAMPLE123"
    assert access_key_id({}) is None
    assert access_key_id({"HTTP_AUTHORIZATION": "Credential=only/two"}) is None


def test_the_role_asked_for_is_read_and_the_body_stays_readable() -> None:
    environ = form_request(ASSUME_ROLE_BODY, SIGNED.replace("/ecr/", "/sts/"))

    assert assumed_role(environ) == "arn:aws:iam::123456789012:role/ecr-pull-a"
    assert environ["wsgi.input"].read() == ASSUME_ROLE_BODY


def test_assume_role_is_logged_with_the_issued_key_id_and_never_the_secret(tmp_path: Path) -> None:
    def moto(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET"):
            start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1")])
            return [b"{}"]
        assert environ["wsgi.input"].read() == ASSUME_ROLE_BODY  # moto still sees the whole request
        start_response("200 OK", [("Content-Type", "text/xml")])
        return [ASSUME_ROLE_ANSWER[:40], ASSUME_ROLE_ANSWER[40:]]

    log = tmp_path / "calls.jsonl"
    middleware = HarnessMiddleware(moto, log)
    caller = SIGNED.replace("ASIAEXAMPLE123", "testing").replace("/ecr/", "/sts/")

    answer = b"".join(middleware(form_request(ASSUME_ROLE_BODY, caller), lambda *args: None))
    token_call = {"HTTP_AUTHORIZATION": SIGNED.replace("ASIAEXAMPLE123", "ASIAISSUED0001")}
    token_call |= {
        "PATH_INFO": "/",
        "HTTP_X_AMZ_TARGET": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
    }
    b"".join(middleware(token_call, lambda *args: None))

    assert answer == ASSUME_ROLE_ANSWER
    assert "very-secret" not in log.read_text()
    assume, token = read_calls_log(log)
    assert (assume.operation, assume.access_key_id, assume.role_arn, assume.issued_access_key_id) == (
        "AssumeRole",
        "testing",
        "arn:aws:iam::123456789012:role/ecr-pull-a",
        "ASIAISSUED0001",
    )
    assert (token.service, token.operation, token.access_key_id) == (
        "ecr",
        "GetAuthorizationToken",
        "ASIAISSUED0001",
    )
    assert callers_by_role([assume, token]) == {"ASIAISSUED0001": "arn:aws:iam::123456789012:role/ecr-pull-a"}


def test_older_log_lines_without_callers_still_read() -> None:
    line = {"time": 1.0, "service": "ecr", "operation": "DescribeRepositories", "status": 200}

    call = AwsCall.from_json(json.loads(json.dumps(line)))

    assert call.access_key_id is None
    assert callers_by_role([call]) == {}
