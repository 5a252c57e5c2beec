"""Durations as people write them: ``90`` (seconds), ``90s``, ``15m``, ``1h``,
``30d``, ``2w``, or a sum such as ``1h30m``. The one parser for the CLI's
seconds options and the ``AUTHSERVER_*_SECONDS`` settings."""

from __future__ import annotations

import re

__all__ = ["DURATION_HELP", "parse_duration"]

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# one help text wherever a duration is taken
DURATION_HELP = "seconds, or a duration: 90s, 15m, 1h, 30d, 2w, 1h30m"
_PART = re.compile(r"(\d{1,9})([smhdw])")
_WHOLE = re.compile(r"\A(?:\d{1,9}[smhdw])+\Z")


def parse_duration(text: str) -> int:
    """Whole seconds; ValueError naming the input if it is not a duration."""
    value = text.strip().lower()
    if value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    if not _WHOLE.match(value):
        raise ValueError(f"{text!r} is not a duration ({DURATION_HELP})")
    return sum(int(n) * UNITS[unit] for n, unit in _PART.findall(value))
