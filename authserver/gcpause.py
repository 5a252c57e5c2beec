"""The garbage collector's pauses (``authserver serve``): frozen start-up, and
every pass timed for /metrics.

A pass of the cyclic GC stops the event loop. A full one (generation 2) walks
every tracked object; after start-up (modules, protobuf descriptors for the
Envoy APIs, SQLAlchemy, the key cache) that is ~140k objects and took 40-120 ms,
past the 50 ms Envoy's ratelimit filter waits for an answer, so the calls of that
moment failed open (issue 13's latency finding). ``gc.freeze()`` once started
moves them out of the GC's sight: they live as long as the process anyway.

``authserver_gc_pause_seconds`` (per generation) shows the passes still made.
The callback only adds to plain lists: a GC pass can start inside any
allocation, also while a prometheus_client lock is held, so taking one here
could deadlock.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["BUCKETS", "GcPauses", "freeze_startup"]

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def freeze_startup() -> None:
    """Once started: what exists now is left out of every later GC pass."""
    gc.collect()  # start-up's own garbage goes first, rather than staying frozen
    gc.freeze()


class GcPauses(Collector):
    """Times each GC pass (``gc.callbacks``) into a histogram read at scrape time."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self._started = 0.0
        # per generation: counts per bucket (the last one: over the largest), and the sum
        self.counts = [[0] * (len(BUCKETS) + 1) for _ in range(3)]
        self.sums = [0.0, 0.0, 0.0]

    def install(self) -> GcPauses:
        gc.callbacks.append(self._on_gc)
        return self

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self.clock()
            return
        took = self.clock() - self._started
        gen = min(2, int(info.get("generation", 2)))
        self.sums[gen] += took
        self.counts[gen][next((i for i, b in enumerate(BUCKETS) if took <= b), len(BUCKETS))] += 1

    def collect(self) -> Iterator[Metric]:
        h = HistogramMetricFamily("authserver_gc_pause_seconds",
                                  "Passes of the garbage collector (each stops the event loop)",
                                  labels=["generation"])
        for gen in range(3):
            counts, total = list(self.counts[gen]), self.sums[gen]
            cumulative, buckets = 0, []
            for b, n in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                cumulative += n
                buckets.append((b, cumulative))
            h.add_metric([str(gen)], buckets, total)
        yield h
