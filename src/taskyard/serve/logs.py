"""Structured logs: one JSON object per line on stderr (``extra={"fields": {...}}``)."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str = "info") -> logging.Logger:
    """Our lines at ``level``; uvicorn's own (bad HTTP, over the connection limit) as JSON
    lines too, warnings and up only (its info lines repeat what we log)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name, lvl in (("taskyard.serve", level.upper()), ("uvicorn", "WARNING")):
        other = logging.getLogger(name)
        other.handlers.clear()
        other.addHandler(handler)
        other.setLevel(max(logging.getLevelName(lvl), logging.getLevelName(level.upper())))
        other.propagate = False
    return logging.getLogger("taskyard.serve")
