"""Keep download-link signatures out of the logs.

A download link (``/v1/downloads/…?expires=…&signature=…``, or a presigned S3 URL) is a bearer
credential until it expires: whoever reads it from a log can fetch the artifact. uvicorn's
access log writes every request's full path with its query string, so the signature query
values are replaced with ``REDACTED`` before any handler formats the record. ``expires`` and
other values stay: they help debugging and grant nothing.

A parameter's name is compared as a server reads it, after percent-decoding and in any case:
``%73ignature=…`` is ``signature`` to the route, so it is one here too (the log line shows
the query as sent, encoded). The download routes also refuse such spellings
(services/api/artifacts.py, ``check_link``), so an encoded name never downloads anything.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

#: Query parameters whose values are credentials: ours, and S3 presigning's (SigV4, SigV2).
SECRET_QUERY_PARAMS = (
    "signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "AWSAccessKeyId",
)
_SECRET_NAMES = frozenset(name.lower() for name in SECRET_QUERY_PARAMS)
#: One ``name=value`` of a query string (after ``?``, ``&`` or ``;``), as sent.
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#?\s\"']*)=(?P<value>[^&;#\s\"']*)")
#: Decoding rounds: a name encoded twice (``%2573ignature``) reads as ``signature`` to a server
#: behind one more decoding hop; more rounds than that are not worth the time.
_DECODE_ROUNDS = 3
REDACTED = "REDACTED"

#: Loggers that write request URLs: uvicorn's access log, and its error log (which can quote
#: a request line).
URL_LOGGERS = ("uvicorn.access", "uvicorn.error")


def _read_as(name: str) -> str:
    """A query parameter's name as a server may read it: percent-decoded (``+`` as a space),
    case-folded, surrounding spaces ignored."""
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower()


def _redacted(match: re.Match[str]) -> str:
    if _read_as(match["name"]) not in _SECRET_NAMES:
        return match.group(0)
    return f"{match['lead']}{match['name']}={REDACTED}"


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``REDACTED``,
    however its name is spelled (case, percent-encoding)."""
    if "=" not in text:
        return text
    return _QUERY_PARAM.sub(_redacted, text)


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
