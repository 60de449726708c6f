"""Structured logs: one JSON object per line, the record's ``extra`` fields included.

Machines read server logs (aggregators, ``jq``); a line like
``{"ts": "...", "level": "INFO", "logger": "serving.live", "msg": "swapped model+index pair",
"index_version": "...", "seconds": 1.2}`` is searchable by field.
"""

from __future__ import annotations

import json
import logging
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
