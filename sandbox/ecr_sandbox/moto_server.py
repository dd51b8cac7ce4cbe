"""moto server wrapped in a middleware that logs every AWS call and can inject faults.

Run as ``python -m ecr_sandbox.moto_server --port P --calls-log FILE``. Faults are managed over
HTTP at ``/_harness/faults`` (GET lists, POST adds one ``AwsFault`` as JSON, DELETE clears); see
``aws.AwsControl``.

Each call log record names the caller's access key ID (from the SigV4 ``Credential=`` scope; the secret key
never reaches a server), and an ``AssumeRole`` record also the role asked for and the access key ID moto
issued for it, so a test can tell which identity made any later call.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ecr_sandbox.aws import FAULTS_PATH, AwsFault

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


_ISSUED_ACCESS_KEY = re.compile(rb"<AccessKeyId>([A-Z0-9]{1,128})</AccessKeyId>")


def access_key_id(environ: Environ) -> str | None:
    """The caller's access key ID: the first element of the SigV4 credential scope
    (``Credential=AKID/date/region/service/aws4_request``), or None for an unsigned request."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" not in authorization:
        return None
    scope = authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/")
    return scope[0] if len(scope) == 5 and scope[0] else None


def assumed_role(environ: Environ) -> str | None:
    """The ``RoleArn`` an STS ``AssumeRole`` request (query protocol, form body) asks for."""
    roles = parse_qs(environ.get("QUERY_STRING", "")).get("RoleArn") or parse_qs(_form_body(environ)).get(
        "RoleArn"
    )
    return roles[0] if roles else None


def request_identity(environ: Environ) -> tuple[str, str]:
    """(service, operation) of an AWS request: service from the SigV4 credential scope, operation from
    ``X-Amz-Target`` (JSON protocols) or the ``Action`` parameter (query protocol)."""
    service = "unknown"
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in authorization:
        scope = authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(scope) == 5:
            service = scope[3]
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return service, target.rsplit(".", 1)[-1]
    action = parse_qs(environ.get("QUERY_STRING", "")).get("Action") or parse_qs(_form_body(environ)).get(
        "Action"
    )
    if action:
        return service, action[0]
    return service, f"{environ.get('REQUEST_METHOD', '')} {environ.get('PATH_INFO', '')}"


def _form_body(environ: Environ) -> str:
    """The urlencoded body, leaving ``wsgi.input`` readable again for moto."""
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return ""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body: bytes = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body.decode("utf-8", "replace")


def error_response(environ: Environ, fault: AwsFault, status: int) -> tuple[list[tuple[str, str]], bytes]:
    """An AWS error in the wire format of the request's protocol, so botocore parses ``fault.code``."""
    request_id = str(uuid.uuid4())
    content_type = environ.get("CONTENT_TYPE", "")
    if environ.get("HTTP_X_AMZ_TARGET") or content_type.startswith("application/x-amz-json"):
        headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-ErrorType", fault.code),
            ("x-amzn-RequestId", request_id),
        ]
        return headers, json.dumps({"__type": fault.code, "message": fault.message}).encode()
    kind = "Sender" if status < 500 else "Receiver"
    body = (
        f"<ErrorResponse><Error><Type>{kind}</Type><Code>{fault.code}</Code>"
        f"<Message>{fault.message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body.encode()


class HarnessMiddleware:
    def __init__(self, app: WsgiApp, calls_log: Path) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._faults: list[AwsFault] = []
        self._calls_log = calls_log.open("a", encoding="utf-8", buffering=1)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == FAULTS_PATH:
            return self._control(environ, start_response)
        if path.startswith("/moto-api"):
            return self._app(environ, start_response)
        service, operation = request_identity(environ)
        fault = self._take_fault(service, operation)
        if fault is not None:
            time.sleep(fault.delay)
            if fault.status is not None:
                headers, body = error_response(environ, fault, fault.status)
                start_response(f"{fault.status} {_REASONS.get(fault.status, 'Error')}", headers)
                self._record(service, operation, fault.status, injected=True, caller=access_key_id(environ))
                return [body]
        statuses: list[int] = []

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(int(status.split(" ", 1)[0]))
            return start_response(status, headers, exc_info)

        role = assumed_role(environ) if (service, operation) == ("sts", "AssumeRole") else None
        result = self._app(environ, recording_start_response)
        issued = None
        if role is not None:
            # The answer holds the new credentials: read it whole (it is small) to note the key ID only.
            body = b"".join(result)
            close = getattr(result, "close", None)
            if close is not None:
                close()
            result = [body]
            found = _ISSUED_ACCESS_KEY.search(body)
            issued = found.group(1).decode() if found else None
        self._record(
            service,
            operation,
            statuses[-1] if statuses else 500,
            injected=False,
            caller=access_key_id(environ),
            role_arn=role,
            issued_access_key_id=issued,
        )
        return result

    def _take_fault(self, service: str, operation: str) -> AwsFault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(service, operation):
                    if fault.count is not None:
                        if fault.count <= 1:
                            del self._faults[index]
                        else:
                            self._faults[index] = AwsFault(**{**fault.to_json(), "count": fault.count - 1})
                    return fault
        return None

    def _record(
        self,
        service: str,
        operation: str,
        status: int,
        *,
        injected: bool,
        caller: str | None,
        role_arn: str | None = None,
        issued_access_key_id: str | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "time": time.time(),
            "service": service,
            "operation": operation,
            "status": status,
            "injected": injected,
            "access_key_id": caller,
        }
        if role_arn is not None:
            record |= {"role_arn": role_arn, "issued_access_key_id": issued_access_key_id}
        line = json.dumps(record)
        with self._lock:
            self._calls_log.write(line + "\n")

    def _control(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        status = 200
        with self._lock:
            if method == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                try:
                    self._faults.append(AwsFault.from_json(json.loads(environ["wsgi.input"].read(length))))
                except (ValueError, TypeError) as error:
                    status, body = 400, json.dumps({"error": str(error)})
                else:
                    body = "{}"
            elif method == "DELETE":
                self._faults.clear()
                body = "{}"
            elif method == "GET":
                body = json.dumps([fault.to_json() for fault in self._faults])
            else:
                status, body = 405, json.dumps({"error": f"method {method} not allowed"})
        start_response(f"{status} {_REASONS[status]}", [("Content-Type", "application/json")])
        return [body.encode()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--calls-log", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))

    # Imported here: moto is the optional "sandbox" extra and takes a second to import.
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = HarnessMiddleware(DomainDispatcherApplication(create_backend_app), args.calls_log)
    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"moto server with harness middleware on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
