"""Keep large short-lived buffers out of the long-lived heap (``authserver serve``).

glibc raises its mmap threshold each time a large mapped block is freed (up
to 32 MiB). After the first big JWKS answer, later multi-megabyte buffers (a
rendered document, the copies the HTTP stack makes while sending one) then
come from the heap, between the keys the cache keeps, and their pages stay
in the process once freed. A fixed threshold keeps every block over it
mapped, so it goes back to the OS when freed. Measured with 10k-60k RS256
keys: RSS per key 2.15 KB -> 1.62 KB. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_large_blocks_mapped"]

_M_MMAP_THRESHOLD = -3  # malloc.h
_THRESHOLD = 128 * 1024  # glibc's default before it starts adjusting


def keep_large_blocks_mapped(threshold: int = _THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (which also stops its adjustment). True if set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
