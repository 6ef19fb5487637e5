"""Logging for ``nhs111 serve`` and ``nhs111 worker``: one JSON object per line, or one text line for developers.

:func:`configure_logging` sends every logger's records (the adaptor's and the HTTP server's, proton's and pika's alike)
through one handler on stderr, at ``PEM111_LOG_LEVEL`` (default ``INFO``), formatted as ``PEM111_LOG_FORMAT``
says:

``json`` (default)
    One JSON object per line, for log collectors::

        {"time": "2025-03-01T09:30:12.345Z", "level": "INFO", "logger": "adaptor.service",
         "event": "message accepted", "record_id": "...", "message_id": "...", "tracking_id": "...",
         "interaction": "urn:nhs-itk:interaction:...", "ods_code": "RYE", "sender_ods": "5L3"}

    ``time`` is UTC with milliseconds, ``event`` a short fixed phrase (third-party loggers: their message text)
    and the remaining keys are the structured fields the call passed with ``extra=``, in the order given;
    ``exception`` holds a traceback when one was logged.
``text``
    ``2025-03-01 09:30:12,345 INFO adaptor.service message accepted record_id=... message_id=...``

    Control characters in the message and the field values are escaped (:func:`escape_control`), so that a
    MessageID holding a newline cannot forge a line; a traceback's lines follow, indented.

Code logs events, not sentences: ``log.info("message accepted", extra={"message_id": ..., ...})``. The field
names used across the adaptor (keep to them, so that one query finds a message everywhere):

=================  =============================================================================================
``message_id``     the request's wsa:MessageID (the ``messageId`` property at the target)
``tracking_id``    the DistributionEnvelope ``trackingid``
``interaction``    the ITK interaction id
``ods_code``       the ODS code(s) the message is addressed to, comma-separated (the ``odsCode`` property)
``sender_ods``     the sender's ODS code (auditIdentity)
``record_id``      the store's id of the message
``duration_ms``    how long the request, delivery or conversion took
``error_code``     the ITK ErrorCode answered; ``rule`` the wire-contract rule; ``error_id`` the ErrorID
``target``         the delivery target (never credentials); ``attempt`` the delivery attempt number
=================  =============================================================================================

Patient data never appears above DEBUG: no CDA or Bundle content, no ErrorDiagnosticText (it can quote a
document, e.g. schema validation messages), no exception text that could quote one. Those go to DEBUG lines only,
under an id that the INFO/ERROR line also carries. Query strings are cut out of the HTTP servers' lines
(:class:`QueryStringRedactor`), and spyne, which logs whole request documents, is silenced.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from adaptor.config import Settings

#: The attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

#: The HTTP servers' own loggers: their lines may quote a request target.
HTTP_SERVER_LOGGERS = ("tornado", "werkzeug")

_QUERY_STRING = re.compile(r"\?[^\s\"']*")

#: What :func:`escape_control` escapes: C0 and C1 controls and DEL (line breaks, tabs, terminal escape sequences),
#: the Unicode line and paragraph separators, and the bidirectional overrides and isolates (which reorder how a
#: line reads on screen).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_control(text: str) -> str:
    """``text`` with every control character written as a Python-style escape (``\\n``, ``\\x1b``, ``\\u2028``).

    For anything that prints a line per record (the text log format, the CLI's tables), so that text from a
    request (a MessageID, a trackingid) can neither break a line, forge one nor drive the terminal. Other text,
    backslashes included, is left as it is: the point is one record per line, not a reversible encoding.
    """
    return _CONTROL.sub(_escaped, text)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a log call passed with ``extra=``, in the order given."""
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | frozenset | set):
        return [_json_value(item) for item in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time``, ``level``, ``logger``, ``event``, then the fields.

    Non-ASCII characters are escaped, so every line is plain ASCII whatever the container's locale says.
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            ),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            if value is not None:  # a field that is not known for this event is left out, not null
                document.setdefault(key, _json_value(value))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger event key=value ...``: the fields appended to the classic line, for developers.

    Every record is one line starting with its time: control characters in the event and the field values are
    escaped, and a traceback (or stack) follows on lines of its own, each indented, with control characters
    other than its line breaks escaped.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = escape_control(super().formatMessage(record))
        fields = " ".join(
            f"{key}={_text_value(value)}" for key, value in fields_of(record).items() if value is not None
        )
        return f"{line} {fields}" if fields else line

    def format(self, record: logging.LogRecord) -> str:
        # As logging.Formatter.format, without caching the (indented) traceback on the record for other handlers.
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        lines = [self.formatMessage(record)]
        if record.exc_info:
            lines.append(_indented(self.formatException(record.exc_info)))
        if record.stack_info:
            lines.append(_indented(self.formatStack(record.stack_info)))
        return "\n".join(lines)


def _indented(block: str) -> str:
    return "\n".join("    " + escape_control(line) for line in block.split("\n"))


def _text_value(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    # Quoted when it would otherwise read as several fields (JSON's quoting escapes all but DEL of the controls).
    quoted = not text or any(c.isspace() or c in "\"=" for c in text)
    return escape_control(json.dumps(text) if quoted else text)


class QueryStringRedactor(logging.Filter):
    """Cut the query string out of any request target an HTTP server's logger writes.

    The servers here log no access lines (Tornado's access log belongs to its web framework, which is not used;
    its own lines name a client address and a framing error), and werkzeug's request lines come only from its
    development server, which is never used here. This is the guarantee should any of them start quoting whole
    targets: console searches travel in query strings and can be NHS numbers or names. The console logs its own
    requests by route template (``adaptor.console.access``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in HTTP_SERVER_LOGGERS:
            message = record.getMessage()
            redacted = _QUERY_STRING.sub("?<query omitted>", message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


class TornadoTlsDuplicates(logging.Filter):
    """Drop Tornado's own line for a failed TLS handshake: :mod:`adaptor.http.frontdoor` logs each one, with the
    reason, at the level it deserves (a port probe is not a warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "tornado.general" and str(record.msg).startswith("SSL Error on"))


def silence_spyne_logging() -> None:
    """Stop every ``spyne.*`` logger from emitting anything.

    spyne logs complete request documents (patient data) at ERROR when it meets a problem, and its INFO lines
    duplicate ours. All its loggers are children of ``spyne`` and none sets its own level, so a level above
    CRITICAL on the parent silences them all.
    """
    logging.getLogger("spyne").setLevel(logging.CRITICAL + 1)


def configure_logging(settings: Settings) -> None:
    """One handler on stderr for every logger, at ``settings.log_level``, in ``settings.log_format``.

    Replaces whatever handlers the root logger had. spyne is silenced (see :func:`silence_spyne_logging`).
    pika logs every failed connection attempt at ERROR with a traceback: during a broker outage that is one
    traceback per retry, and the outbox already logs each failed delivery once, so pika is held to CRITICAL
    unless the adaptor itself runs at DEBUG. Python warnings are logged too (``py.warnings``), so that
    nothing reaches stderr outside the format.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    # On the handler, not the loggers: a logger's filters do not see its children's records.
    handler.addFilter(QueryStringRedactor())
    handler.addFilter(TornadoTlsDuplicates())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)
    silence_spyne_logging()
    logging.getLogger("pika").setLevel(logging.NOTSET if settings.log_level == "DEBUG" else logging.CRITICAL)
