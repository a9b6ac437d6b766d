"""Log lines that name their request: a filter, a text and a JSON formatter, the access line.

`logging_config(settings)` is the `logging.config.dictConfig` of `python -m app` (uvicorn gets
the same dict, so its own lines go through it too). `APP_LOG_FORMAT=json` writes one JSON
object per line: time, level, logger, message, and, for a line written while a request is
served, its request_id, key_id and trace_id; the access line adds method, route, status,
duration_ms and, for a classification, adapter, version, texts, tokenize_ms, queue_ms and
forward_ms. Nothing here writes a key (only its id), a text or a path of the store.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from app.observability.context import RequestContext, current

ACCESS_LOGGER = "app.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"


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
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += "".join(f" {k}={_text(v)}" for k, v in fields.items() if v is not None)
        return line


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (ASCII, so a line never holds a raw newline)."""

    def format(self, record: logging.LogRecord) -> str:
        _stamped(record)
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "key_id", "trace_id"):
            value = getattr(record, name)
            if value is not None:
                out[name] = value
        fields = getattr(record, "fields", None)
        if fields:
            out.update((k, v) for k, v in fields.items() if v is not None)
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
