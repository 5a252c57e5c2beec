"""Where a request's time goes, stage by stage, as a ``Server-Timing`` header.

Off by default (``AUTHSERVER_SERVER_TIMING``): the header tells a caller how
long the database took, which only the operator (and the benchmark) should
see. Each stage is the time since the previous mark, the first one since the
request arrived (set by the outermost ASGI wrapper, ``httpmetrics``).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["STATE_KEY", "Stages", "stages_of"]

STATE_KEY = "stages"


class Stages:
    __slots__ = ("_last", "marks")

    def __init__(self, started: float) -> None:
        self._last = started
        self.marks: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        """The stage ``name`` ended now."""
        now = time.perf_counter()
        self.marks.append((name, now - self._last))
        self._last = now

    def header(self) -> str:
        return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in self.marks)


def stages_of(state: Any) -> Stages | None:
    """The request's stages (a connection's ``state``), or None when timing is off."""
    stages = state.get(STATE_KEY) if state is not None else None
    return stages if isinstance(stages, Stages) else None
