"""The screening service's log: one JSON object per line on stderr."""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO


LOG = logging.getLogger("palm.serve")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                 "level": record.levelname.lower(), "event": record.getMessage(),
                 **getattr(record, "fields", {})}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_json_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send palm.serve's and uvicorn's records of `level` and above to `stream` (stderr) as
    JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for logger in (LOG, logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")):
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    LOG.log(level, event, extra={"fields": fields})
