"""Structured (JSON) logs. Nothing here ever receives a token: handlers log
key ids, tenants and codes, and request bodies and headers are never logged."""

from __future__ import annotations

import json
import logging
import sys
import time

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


def configure_logging(settings: Settings) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root = logging.getLogger("authserver")
    if getattr(root, "_authserver_configured", False):
        root.setLevel(settings.log_level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_json else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    root.propagate = False
    root._authserver_configured = True  # type: ignore[attr-defined]
    logging.Formatter.converter = time.gmtime
