"""Log lines that name their request: a filter, a text and a JSON formatter, the access line.

`logging_config(settings)` is the `logging.config.dictConfig` of `python -m app` (uvicorn gets
the same dict, so its own lines go through it too). `APP_LOG_FORMAT=json` writes one JSON
object per line: time, level, logger, message, and, for a line written while a request is
served, its request_id, key_id and trace_id; the access line adds method, route, status,
duration_ms and, for a classification, adapter, version, texts, tokenize_ms, queue_ms and
forward_ms. Nothing here writes a key (only its id), a text or a path of the store.

Every line is one line, whatever a client sent: in text format the message and the fields
have their control characters escaped (`\\n`, `\\x1b`, `\\u2028`), a field value other than
plain characters is written quoted with JSON's escapes, and an exception's traceback is
indented, so a line that starts at column 0 is always a record (an adapter name holding
"\\n... DELETE ... 200" cannot forge an access line). Field values are cut at
`MAX_FIELD_CHARS` and messages at `MAX_MESSAGE_CHARS` in both formats.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from app.observability.context import MAX_ADAPTERS, RequestContext, capped, current

ACCESS_LOGGER = "app.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
MAX_MESSAGE_CHARS = 8192
# What ends or bends a line: C0 and C1 controls, DEL and Unicode's line and paragraph separators.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
PLAIN = re.compile(r"[A-Za-z0-9._:/@<>{}+\-]+")  # a field value written as is (else quoted)
INDENT = "    "


class RequestFilter(logging.Filter):
    """Stamps each record with the request being served (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        stamp(record)
        return True


def stamp(record: logging.LogRecord) -> None:
    context = current.get()
    if context is None:
        record.request_id = record.key_id = record.trace_id = None
    else:
        record.request_id = context.request_id
        record.key_id = context.key_id
        record.trace_id = context.trace_id


def _stamped(record: logging.LogRecord) -> logging.LogRecord:
    if not hasattr(record, "request_id"):  # a handler without the filter
        stamp(record)
    return record


class TextFormatter(logging.Formatter):
    """The classic line, with ` [request id]` after the logger name and the access fields."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        _stamped(record)
        rid = record.request_id
        record.request_tag = f" [{rid}]" if rid else ""
        record.message = escaped(capped(record.getMessage(), MAX_MESSAGE_CHARS))
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += "".join(f" {k}={_text(v)}" for k, v in fields.items() if v is not None)
        # Not record.exc_text: another handler's formatter may have filled it unindented.
        if record.exc_info:
            line += "\n" + _indented(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + _indented(self.formatStack(record.stack_info))
        return line


def escaped(text: str) -> str:
    """`text` without a character that ends or bends a line (each written as its escape)."""
    return CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]  # '\\n', '\\x1b', '\\u2028'


def _indented(text: str) -> str:
    return "\n".join(INDENT + escaped(line) for line in text.split("\n"))


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_text(v) for v in value[:MAX_ADAPTERS])
    text = capped(str(value))
    return text if PLAIN.fullmatch(text) else json.dumps(text)


def _bounded(value: Any) -> Any:
    """A JSON field's value with its strings cut (a list: its first MAX_ADAPTERS items)."""
    if isinstance(value, str):
        return capped(value)
    if isinstance(value, list):
        return [_bounded(v) for v in value[:MAX_ADAPTERS]]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line (ASCII, so a line never holds a raw newline)."""

    def format(self, record: logging.LogRecord) -> str:
        _stamped(record)
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": capped(record.getMessage(), MAX_MESSAGE_CHARS),
        }
        for name in ("request_id", "key_id", "trace_id"):
            value = getattr(record, name)
            if value is not None:
                out[name] = value
        fields = getattr(record, "fields", None)
        if fields:
            out.update((k, _bounded(v)) for k, v in fields.items() if v is not None)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """The dictConfig: one stderr handler on the root logger; uvicorn's loggers propagate."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    uvicorn = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": RequestFilter}},
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request"],
            }
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {name: dict(uvicorn) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def access_fields(context: RequestContext, method: str, route: str, seconds: float) -> dict:
    """The access line's fields: what was asked, by which key id, what it cost."""
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": context.status,
        "duration_ms": round(seconds * 1000, 3),
    }
    adapters = context.adapters
    if adapters is not None:
        versions = context.versions
        single = len(adapters) == 1
        fields["adapter"] = adapters[0] if single else adapters
        if versions is not None:
            fields["version"] = versions[0] if single else versions
        fields["texts"] = context.texts
        timing = context.timing
        fields["tokenize_ms"] = round(getattr(timing, "tokenize_ms", 0.0), 3)
        fields["queue_ms"] = round(timing.queue_ms, 3)
        fields["forward_ms"] = round(timing.inference_ms, 3)
    return fields
