"""Keep download-link signatures out of the logs.

A download link (``/v1/downloads/…?expires=…&signature=…``, or a presigned S3 URL) is a bearer
credential until it expires: whoever reads it from a log can fetch the artifact. uvicorn's
access log writes every request's full path with its query string, so the signature query
values are replaced with ``REDACTED`` before any handler formats the record. ``expires`` and
other values stay: they help debugging and grant nothing.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: Query parameters whose values are credentials: ours, and S3 presigning's (SigV4, SigV2).
SECRET_QUERY_PARAMS = (
    "signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "AWSAccessKeyId",
)
# Case-insensitive: "Signature" (SigV2) is "signature" with another case, and a client may
# change the case of a name without changing what the link grants.
_SECRET_VALUE = re.compile(
    r"(?P<name>[?&;](?:" + "|".join(map(re.escape, SECRET_QUERY_PARAMS)) + r")=)"
    r"(?P<value>[^&;#\s\"']*)",
    re.IGNORECASE,
)
REDACTED = "REDACTED"

#: Loggers that write request URLs: uvicorn's access log, and its error log (which can quote
#: a request line).
URL_LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``REDACTED``."""
    if "=" not in text:
        return text
    return _SECRET_VALUE.sub(lambda m: m.group("name") + REDACTED, text)


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSignatures(logging.Filter):
    """Rewrites a record's message and string arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


_FILTER = RedactSignatures()


def install(loggers: tuple[str, ...] = URL_LOGGERS) -> None:
    """Add the filter to ``loggers`` (once each; the app factory calls it).

    A filter on the logger (not on a handler) applies whatever handlers uvicorn's or the
    deployment's logging configuration attaches later, and logging reconfiguration keeps it.
    """
    for name in loggers:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
