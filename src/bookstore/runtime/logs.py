"""Logging: one line per event, each carrying the region id."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s region=%(region)s %(name)s: %(message)s"


class _RegionFilter(logging.Filter):
    def __init__(self, region: str) -> None:
        super().__init__()
        self.region = region

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "region"):
            record.region = self.region
        return True


def configure(region: str, level: int = logging.INFO) -> None:
    """Send every log line to stderr, prefixed with time, level and region."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_RegionFilter(region))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One line per request would drown the events that matter.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
