"""When credits refill: the start of the current UTC day or month (pure; the
spending is ``services.credits``)."""

from __future__ import annotations

import datetime

__all__ = ["period_start"]


def period_start(interval: str, now: float) -> int:
    """UNIX seconds of the start of the UTC day or month holding ``now``."""
    t = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if interval == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    elif interval == "month":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"a refill interval is day or month, not {interval!r}")
    return int(start.timestamp())
