"""authserver.memtune: a large buffer freed after the first one goes back to the OS."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from authserver.memtune import keep_large_blocks_mapped
if sys.argv[1] == "fixed":
    assert keep_large_blocks_mapped()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
b = b"x" * (16 << 20); del b  # the first big block is mapped either way; freeing it raises glibc's threshold
base = rss()
b = b"x" * (16 << 20)  # the second: from the heap unless the threshold is fixed
keep = [b"y" * 600 for _ in range(1000)]  # then something long-lived above it
del b
print(rss() - base)
"""


def _retained(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_large_buffer_leaves_the_process() -> None:
    assert _retained("adjusting") > 8 << 20  # glibc's default: the second 16 MiB stays
    assert _retained("fixed") < 2 << 20
