"""Logs of ``kubeline server``: readable lines on a terminal, one JSON object per line otherwise.

A person watching a terminal reads ``12:00:01.250 INFO  kubeline.engine: run 01J.. succeeded
run_id=01J..``; anything else (a pod, systemd, a pipe into a file) gets JSON. Log shippers
(Loki, Cloud Logging, ELK) parse these without rules; fields passed with
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
_PLAIN_SCALARS = (str, int, float, bool)
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


class TextFormatter(logging.Formatter):
    """One readable line: local time, level, logger, message, then the ``extra`` fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        at = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        line = f"{at} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extra = [f"{key}={value}" for key, value in record.__dict__.items()
                 if key not in _RESERVED and not key.startswith("_") and isinstance(value, _PLAIN_SCALARS)]
        if extra:
            line += "  " + " ".join(extra)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


FORMATS = ("auto", "text", "json")


def configure(*, level: str = "info", fmt: str = "auto") -> None:
    """Log lines on stderr for the root logger (uvicorn's loggers propagate to it): ``text`` or
    ``json``; ``auto`` is text when stderr is a terminal."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    text = fmt == "text" or (fmt == "auto" and sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
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
