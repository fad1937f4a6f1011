"""Structured logs for ``kubeline server``: one JSON object per line on stderr.

Log shippers (Loki, Cloud Logging, ELK) parse these without rules; fields passed with
``extra=`` (``run_id``, ``pipeline``...) become keys of the object when they are plain data
(strings, numbers, lists, mappings): kopf passes its whole ``OperatorSettings`` with every line,
which would otherwise be most of an operator's debug log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

_PLAIN = (str, int, float, bool, type(None), list, tuple, dict)
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_") and isinstance(value, _PLAIN):
                entry[key] = value
        return json.dumps(entry, default=str)


def configure(*, level: str = "info") -> None:
    """JSON lines on stderr for the root logger (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_kubeline", False):
            root.removeHandler(old)
    handler._kubeline = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
