"""Process logging: one line per record, JSON in a container or text for humans, never a credential.

Redaction is defence in depth. Code should not log secrets in the first place, but an exception text from
an HTTP library or an AWS error can carry an ``Authorization`` header, a token or a password, so every
record passes ``RedactingFilter`` on its way out and the formatters redact whatever they stringify.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal, TextIO

REDACTED = "[REDACTED]"

# Keys (of extras, dicts, JSON, headers, query strings) whose values are secret whatever they look like.
_SENSITIVE_KEY_NAME = (
    r"[\w.-]*(?:password|passwd|secret|token|credentials?|api[_-]?key|auth|"
    r"secret[_-]?access[_-]?key|session[_-]?token|security[_-]?token)"
)
_SENSITIVE_KEY = re.compile(rf"^{_SENSITIVE_KEY_NAME}$", re.IGNORECASE)


def _redact_match(match: re.Match[str]) -> str:
    quote = match.groupdict().get("quote") or ""
    return f"{match.group('lead')}{quote}{REDACTED}{quote}"


_NOT_YET_REDACTED = r"(?!\[REDACTED\])"
# Each pattern keeps ``lead`` (and a ``quote`` around the value, if any) and replaces the secret after it.
_SENSITIVE_PATTERNS: tuple[re.Pattern[str], ...] = (
    # "Authorization: Bearer x", {'Authorization': 'Basic x'}, authorization=AWS4-HMAC-SHA256 ...
    re.compile(
        rf"(?P<lead>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?){_NOT_YET_REDACTED}[^\s\"'][^\"'\r\n]*",
        re.IGNORECASE,
    ),
    # password=x, "token": "x y", 'aws_secret_access_key': 'x', X-Amz-Security-Token=x
    re.compile(
        rf"(?P<lead>\b{_SENSITIVE_KEY_NAME}\b[\"']?\s*[:=]\s*)"
        rf"(?:(?P<quote>[\"'])(?:(?!(?P=quote)).)*(?P=quote)|{_NOT_YET_REDACTED}[^\s\"',;&}}\]]+)",
        re.IGNORECASE,
    ),
    # https://user:password@host
    re.compile(r"(?P<lead>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(?=@)", re.IGNORECASE),
    # JSON Web Tokens (registry bearer tokens, service-account tokens).
    re.compile(r"(?P<lead>)\beyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]*"),
    # An ECR authorization token is base64("AWS:<password>"), which always starts with "QVdTO".
    re.compile(r"(?P<lead>)\bQVdTO[A-Za-z0-9+/]{8,}={0,2}"),
    # AWS access key IDs: not secret alone, but half of a credential pair.
    re.compile(r"(?P<lead>)\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
)


def redact(text: str) -> str:
    """``text`` with everything that looks like a credential replaced by ``[REDACTED]``."""
    for pattern in _SENSITIVE_PATTERNS:
        text = pattern.sub(_redact_match, text)
    return text


def redact_value(key: str, value: object) -> object:
    """Redact one structured value: secret-named keys entirely, strings by pattern, containers deeply."""
    if _SENSITIVE_KEY.match(key) and value is not None:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {item_key: redact_value(str(item_key), item) for item_key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value("", item) for item in value]
    return value


_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# kopf's object loggers attach these; "settings" is the whole OperatorSettings, not log material.
_KOPF_ATTRIBUTES = frozenset({"settings", "k8s_skip", "k8s_ref"})


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRIBUTES and key not in _KOPF_ATTRIBUTES and not key.startswith("_")
    }


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no handler downstream can print a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message), None
        for key, value in _extras(record).items():
            setattr(record, key, redact_value(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _object_reference(record: logging.LogRecord) -> dict[str, str] | None:
    reference = getattr(record, "k8s_ref", None)
    if not isinstance(reference, Mapping):
        return None
    return {key: str(reference[key]) for key in ("kind", "namespace", "name") if reference.get(key)}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the kopf object, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        reference = _object_reference(record)
        if reference:
            payload["object"] = reference
        for key, value in _extras(record).items():
            payload.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = record.stack_info
        # Values json cannot encode are stringified, and a str() may reveal what the filter could not see.
        return json.dumps(payload, default=lambda value: redact(str(value)), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [namespace/name] message key=value ...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        reference = _object_reference(record) or {}
        where = "/".join(part for part in (reference.get("namespace"), reference.get("name")) if part)
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        line = " ".join(
            part
            for part in (
                _timestamp(record),
                f"{record.levelname:<7}",
                record.name,
                f"[{where}]" if where else "",
                record.getMessage(),
                extras,
            )
            if part
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        return redact(line)


class _OperatorStreamHandler(logging.StreamHandler[TextIO]):
    """Marks the handler ``configure_logging`` installed, so calling it again replaces instead of adding."""


# Libraries chatty at INFO/DEBUG about transport details (botocore at DEBUG prints whole requests).
_QUIET_LOGGERS = ("asyncio", "botocore", "boto3", "urllib3", "aiohttp.access", "kubernetes")


def configure_logging(
    log_format: Literal["json", "text"],
    level: str = "INFO",
    stream: TextIO | None = None,
) -> None:
    """Send every log record through redaction to ``stream`` (stderr) in the chosen format."""
    handler = _OperatorStreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [
        existing for existing in root.handlers if not isinstance(existing, _OperatorStreamHandler)
    ]
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
