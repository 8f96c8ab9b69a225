"""Logging: one line per event carrying the region id, as text for people or JSON for collectors."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Literal

import orjson

FORMAT = "%(asctime)s %(levelname)s region=%(region)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
# The logger of the one line per request (off unless `[observability] access_log`).
ACCESS = "bookstore.access"
# `key=value` pairs of the text lines (`event=retry from=eu-west-1 ... reason=answered 503`), turned into
# JSON fields: a value runs to the next ` key=`, so the last one may hold spaces.
_PAIR = re.compile(r"(?:^|(?<= ))(\w+)=(.*?)(?= \w+=|$)")
# Attributes every LogRecord has: anything else was passed in `extra=` and is a field of the line.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _RegionFilter(logging.Filter):
    def __init__(self, region: str) -> None:
        super().__init__()
        self.region = region

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "region"):
            record.region = self.region
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp, level, region, logger, event, message and the event's fields.

    The fields are the record's `extra=` values and, for a message that starts `event=`, its `key=value`
    pairs (the text lines already spell their events that way), so those lines have their fields in JSON.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "timestamp": _iso(record.created),
            "level": record.levelname,
            "region": getattr(record, "region", None),
            "logger": record.name,
        }
        fields: dict[str, Any] = dict(_PAIR.findall(message)) if message.startswith("event=") else {}
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "region":
                fields[key] = value
        line["event"] = fields.pop("event", None) or record.name
        line["message"] = message
        if fields:
            line["fields"] = fields
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure(region: str, level: int = logging.INFO, log_format: LogFormat = "text") -> None:
    """Send every log line to stderr, prefixed with time, level and region (or as JSON)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT))
    handler.addFilter(_RegionFilter(region))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One line per request would drown the events that matter.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
