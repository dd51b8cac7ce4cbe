"""Process logging: one line per record, JSON in a container or text for humans, never a credential.

Redaction is defence in depth. Code should not log secrets in the first place, but an exception text from
an HTTP library or an AWS error can carry an ``Authorization`` header, a token or a password, so every
record passes ``RedactingFilter`` on its way out and the formatters redact whatever they stringify.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

REDACTED = "[REDACTED]"

# Every pattern runs on RE2, so redaction takes time linear in the text whatever it holds: Python's
# backtracking ``re`` took 293 s on ``"a." * 20000`` with the former patterns (an upstream error text is
# enough to hold the event loop). RE2 has no lookaround or backreferences; ``_replace`` does that part.

# Whitespace Python's str.isspace() knows, plus zero-width spaces and the BOM (RE2's \s is ASCII only).
_SPACE_CHARS = r"\t\n\x0B\f\r \x{1C}-\x{1F}\x{85}\p{Z}\x{180E}\x{200B}-\x{200D}\x{2060}\x{FEFF}"
# Between a key and its value: any whitespace, URL-encoded (%20, %09, %0A, %0D) once or twice, or not.
_GAP = rf"(?:[{_SPACE_CHARS}]|%(?:25)?(?:20|09|0[aAdD]))*"
# A quote around a key or value: plain, backslash-escaped (JSON in a string) or URL-encoded.
_QUOTE = r"""(?:\\*["'`]|%2[27]|%252[27])"""
# ":" or "=", plain, URL-encoded or twice URL-encoded.
_ASSIGN = rf"{_GAP}(?:[:=]|%3[aAdD]|%253[aAdD]){_GAP}"
# Between a quoted key and its value: an assignment, or a comma as in [('Authorization', 'Basic x')].
_KEY_VALUE_GAP = rf"(?:{_QUOTE}?{_ASSIGN}|{_QUOTE}{_GAP},{_GAP})"
# Header dumps wrap quoted values in lists or tuples, bytes reprs prefix a b: {'Authorization': [b'x']}.
_OPENERS = rf"(?P<open>(?:[\[(]{_GAP})*b?)"
# A quoted value runs to its own closing quote (escaped or URL-encoded quotes close it too).
_PERCENT_BODY = r"(?:[^%&\r\n\"']|%(?:[013-9a-fA-F][0-9a-fA-F]|2[013-689a-fA-F]))*"
_QUOTED_VALUE = (
    r'(?:(?P<dq>\\*")(?:[^"\r\n\\]|\\[^"\r\n])*'
    r"|(?P<sq>\\*')(?:[^'\r\n\\]|\\[^'\r\n])*"
    rf"|(?P<pq>%2[27]|%252[27]){_PERCENT_BODY})"
)
_NOT_VALUE = rf"{_SPACE_CHARS}\"'`,;&}}\])<>\\%"
# In an unquoted value, an escape other than an encoded quote or "&" (which end the value) is part of it;
# it cannot start with an encoded space (that belongs to the gap) or "%25" (a twice-encoded gap).
# A word starts at a word boundary, or right after a URL escape ("%22Authorization", "%3DAKIA...").
_WORD_START = r"(?:\b|%[0-9a-fA-F]{2})"
_VALUE_ESCAPE = r"%(?:[013-9a-fA-F][0-9a-fA-F]|2[013-57-9a-fA-F])"
_FIRST_VALUE_ESCAPE = r"%(?:[13-9a-fA-F][0-9a-fA-F]|0[0-8bcefBCEF]|2[13489a-fA-F])"

# Keys (of extras, dicts, JSON, headers, query strings) whose values are secret whatever they look like.
_SENSITIVE_KEY_NAME = (
    r"[\w.-]*(?:password|passwd|secret|token|credentials?|api[_-]?key|auth|"
    r"secret[_-]?access[_-]?key|session[_-]?token|security[_-]?token)"
)
_SENSITIVE_KEY = re2.compile(rf"(?i)(?:{_SENSITIVE_KEY_NAME}|(?:proxy-)?authorization)")

# Each pattern has ``lead`` (kept), optionally ``open`` and a quote (kept), and the secret after them.
_SENSITIVE_PATTERNS: tuple[Any, ...] = tuple(
    re2.compile(pattern)
    for pattern in (
        # "Authorization: Bearer x", {'Authorization': ['Basic x']}, Authorization%3A%20Basic%20x: the whole
        # value, to the end of its quotes or line (AWS4-HMAC-SHA256 Credential=..., Signature=...).
        rf"(?i)(?P<lead>{_WORD_START}(?:proxy-)?authorization{_KEY_VALUE_GAP})"
        rf"(?:{_OPENERS}{_QUOTED_VALUE}"
        rf"|(?:[^\[{_SPACE_CHARS}\"'`\\&%]|{_FIRST_VALUE_ESCAPE})(?:[^\"'`\r\n\\&%]|{_VALUE_ESCAPE})*)",
        # password=x, "token": "x y", 'aws_secret_access_key': 'x', X-Amz-Security-Token=x, password%3Dx
        rf"(?i)(?P<lead>\b{_SENSITIVE_KEY_NAME}\b{_KEY_VALUE_GAP})"
        rf"(?:{_OPENERS}{_QUOTED_VALUE}"
        rf"|(?:[^\[{_NOT_VALUE}]|{_FIRST_VALUE_ESCAPE})(?:[^{_NOT_VALUE}]|{_VALUE_ESCAPE})*)",
        # A credential after its scheme, wherever it is: "Basic dXNlcjpwYXNz", "Bearer%20eyJ..."
        rf"(?i)(?P<lead>{_WORD_START}(?:basic|bearer)(?:[{_SPACE_CHARS}]|%(?:25)?20|\+)+)"
        r"(?P<scheme>[A-Za-z0-9._~+/-]{8,}=*)",
        # https://user:password@host (and its URL-encoded form inside another URL)
        r"(?i)(?P<lead>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(?P<tail>@)",
        r"(?i)(?P<lead>\b[a-z][a-z0-9+.-]*%3A%2F%2F[^/\s:@%]+%3A)[^@\s/&]+?(?P<tail>%40)",
        # JSON Web Tokens (registry bearer tokens, service-account tokens).
        rf"(?P<lead>{_WORD_START})eyJ[\w-]{{4,}}\.eyJ[\w-]{{4,}}\.[\w-]*",
        # An ECR authorization token is base64("AWS:<password>"), which always starts with "QVdTO".
        rf"(?P<lead>{_WORD_START})QVdTO[A-Za-z0-9+/]{{8,}}(?:=|%3[dD]){{0,2}}",
        # AWS access key IDs: not secret alone, but half of a credential pair.
        rf"(?P<lead>{_WORD_START})(?:AKIA|ASIA)[A-Z0-9]{{16}}\b",
    )
)


def _replace(match: Any) -> str:
    groups = match.groupdict()
    scheme = groups.get("scheme")
    if scheme is not None and scheme.isalpha():  # prose ("Basic authentication"), not a credential
        return str(match.group(0))
    quote = groups.get("dq") or groups.get("sq") or groups.get("pq") or ""
    return f"{groups['lead']}{groups.get('open') or ''}{quote}{REDACTED}{groups.get('tail') or ''}"


def redact(text: str) -> str:
    """``text`` with everything that looks like a credential replaced by ``[REDACTED]``."""
    for pattern in _SENSITIVE_PATTERNS:
        text = pattern.sub(_replace, text)
    return text


def redact_value(key: str, value: object) -> object:
    """Redact one structured value: secret-named keys entirely, strings by pattern, containers deeply."""
    if value is not None and _SENSITIVE_KEY.fullmatch(key):
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


class _ObjectLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds the object to every record, as kopf's per-object loggers do, keeping the caller's extras."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def object_logger(
    logger: logging.Logger, kind: str, namespace: str, name: str
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records name the object, for work done outside kopf's handlers."""
    return _ObjectLogger(logger, {"k8s_ref": {"kind": kind, "namespace": namespace, "name": name}})
