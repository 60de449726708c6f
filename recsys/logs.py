"""Structured logs: one JSON object per line, the record's ``extra`` fields included.

Machines read server logs (aggregators, ``jq``); a line like
``{"ts": "...", "level": "INFO", "logger": "serving.live", "msg": "swapped model+index pair",
"index_version": "...", "seconds": 1.2}`` is searchable by field.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {  # Any: a JSON log line
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(structured: bool) -> None:
    """Libraries (kafka, feast, faiss, absl) log chatty INFO lines; ours stay at INFO."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if structured
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    for package in ("recsys", "towers", "index", "features", "serving"):
        logging.getLogger(package).setLevel(logging.INFO)


class Throttled:
    """A warning that a flood would repeat, written at most once per ``every`` seconds with
    how many times it happened since the last line (the first at once), never a traceback:
    a client sending garbage cannot flood the log."""

    def __init__(self, logger: logging.Logger, message: str, every: float):
        self._logger = logger
        self._message = message
        self._every = every
        self._lock = threading.Lock()
        self._count = 0
        self._last = -float("inf")

    def note(self, detail: str) -> bool:
        """Counts one occurrence; returns whether a line was written for it."""
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if now - self._last < self._every:
                return False
            count, self._count, self._last = self._count, 0, now
        self._logger.warning(self._message, extra={"count": count, "last": detail})
        return True
