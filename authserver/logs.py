"""Structured (JSON) logs. Nothing here ever receives a token: handlers log
key ids, tenants and codes, and request bodies and headers are never logged."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from .settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k in ("tenant", "kid", "action", "actor"):
            v = getattr(record, k, None)
            if v is not None:
                entry[k] = v
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _Handler(logging.StreamHandler[TextIO]):
    """Ours, so a second create_app in one process does not add another."""


def configure_logging(settings: Settings) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root = logging.getLogger("authserver")
    root.setLevel(settings.log_level.upper())
    if any(isinstance(h, _Handler) for h in root.handlers):
        return
    handler = _Handler(sys.stderr)
    text = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if settings.log_json else text)
    root.addHandler(handler)
    root.propagate = False
    logging.Formatter.converter = time.gmtime
