"""authserver.gcpause: start-up's objects leave the GC's passes; every pass is counted in /metrics."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import CollectorRegistry, generate_latest

from authserver.gcpause import GcPauses

# in a process of its own: a freeze is for the whole process
PROBE = """
import gc
from authserver.gcpause import freeze_startup
held = [[i] for i in range(200_000)]  # what start-up keeps (a cache, descriptors); lists are tracked
before = len(gc.get_objects())
freeze_startup()
print(before, len(gc.get_objects()), gc.get_freeze_count())
"""


def test_freeze_leaves_startup_objects_out_of_later_passes() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    before, tracked, frozen = map(int, out.stdout.split())
    assert before > 200_000
    assert frozen >= 200_000
    assert tracked < before // 10  # what a full pass still walks


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("authserver_gc_pause_seconds"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_each_pass_is_counted_per_generation() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses()
    registry.register(pauses.install())
    try:
        before = _samples(registry)
        import gc

        gc.collect()  # a full pass
        gc.collect(0)
        after = _samples(registry)
    finally:
        pauses.uninstall()
    full = 'authserver_gc_pause_seconds_count{generation="2"}'
    young = 'authserver_gc_pause_seconds_count{generation="0"}'
    assert after[full] >= before[full] + 1
    assert after[young] >= before[young] + 1
    assert after['authserver_gc_pause_seconds_bucket{generation="2",le="+Inf"}'] == after[full]
    total = 'authserver_gc_pause_seconds_sum{generation="2"}'
    assert after[total] > before[total]
    assert pauses._on_gc not in gc.callbacks
