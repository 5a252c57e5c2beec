"""A key's recent usage as a small server-rendered chart: requests per UTC day
by status class, from the usage service's series (``services.usage``).

The geometry is computed here and drawn by the template as inline SVG with
presentation attributes and classes only: the portal's CSP allows no script
or inline style, and the chart needs neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..services.usage import UsageQueries

__all__ = ["DAYS", "Bar", "Chart", "daily_usage"]

DAYS = 14
DAY = 86400
# drawn bottom to top; 3xx only when there are any (gateways seldom redirect)
CLASSES = ("2xx", "3xx", "4xx", "5xx")
WIDTH, HEIGHT = 560, 160  # the viewBox; the SVG scales to its box
TOP, BOTTOM, LEFT = 16, 22, 4  # room for the scale and the day labels
SLOT = (WIDTH - LEFT) / DAYS


@dataclass
class Segment:
    klass: str
    count: int
    y: float
    height: float


@dataclass
class Bar:
    start: int  # the UTC day, UNIX seconds
    counts: dict[str, int]
    x: float
    width: float
    segments: list[Segment] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Chart:
    bars: list[Bar]
    classes: list[str]  # the classes shown (legend, table columns)
    totals: dict[str, int]
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    baseline: float = HEIGHT - BOTTOM

    @property
    def total(self) -> int:
        return sum(self.totals.values())


def _chart(points: list[dict[str, Any]], first_day: int) -> Chart:
    by_day = {int(p["start"]): p for p in points}
    classes = [c for c in CLASSES if c != "3xx" or any(p["3xx"] for p in points)]
    days = [first_day + i * DAY for i in range(DAYS)]
    counts = [{c: int(by_day.get(d, {}).get(c, 0)) for c in classes} for d in days]
    peak = max((sum(c.values()) for c in counts), default=0)
    plot = HEIGHT - TOP - BOTTOM
    bars = []
    for i, (day, row) in enumerate(zip(days, counts, strict=True)):
        bar = Bar(day, row, x=round(LEFT + i * SLOT + SLOT * 0.15, 2), width=round(SLOT * 0.7, 2))
        y = float(HEIGHT - BOTTOM)
        for c in classes:
            if row[c] and peak:
                # at least a pixel high, so a single error next to thousands of calls shows
                h = max(1.0, plot * row[c] / peak)
                y -= h
                bar.segments.append(Segment(c, row[c], round(y, 2), round(h, 2)))
        bars.append(bar)
    totals = {c: sum(r[c] for r in counts) for c in classes}
    return Chart(bars, classes, totals, peak)


async def daily_usage(queries: UsageQueries, tenant_id: str, kid: str, now: float) -> Chart:
    """The last DAYS UTC days, today included, with empty days as zeros."""
    first_day = int(now) // DAY * DAY - (DAYS - 1) * DAY
    points = await queries.series(tenant_id, kid, first_day, int(now) + 1, "day")
    return _chart(points, first_day)
