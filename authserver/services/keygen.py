"""Key generation off the event loop, with an optional pool of keypairs.

RSA-2048 generation is ~35 ms of CPU (p99 ~105 ms); OpenSSL releases the
GIL, so a small thread pool keeps the loop responsive and uses both cores.

With ``mint_pool_size`` > 0, a bounded pool of pre-generated keypairs per
algorithm in ``mint_pool_algorithms`` is kept full in the background, so a
mint only signs (~0.25 ms). Pooled private keys live only in this process's
memory, are evicted after ``mint_pool_max_age_seconds`` and are never written
anywhere (see keys.pool for the trade-off).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import keys
import keys.hazmat

log = logging.getLogger("authserver.keygen")

# key types whose generation is cheaper than a thread hop (P-256 ~0.012 ms,
# Ed25519 ~0.03 ms, vs ~1 ms to hand work to a thread and back on a busy loop):
# generated inline; RSA (~35 ms) always goes to a thread
_INLINE_KTY = frozenset({"EC", "OKP"})


def _lowest_cpu_priority() -> None:
    """Refills run at nice 19: on Linux a thread has its own priority, so
    requests (and on-demand generation) get the CPU first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not allowed: plain priority
        pass


class KeyGenerator:
    def __init__(self, threads: int, clock: Callable[[], float], *, pool_size: int = 0,
                 pool_algorithms: tuple[str, ...] = (), pool_max_age: float = 3600.0) -> None:
        self.executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="keygen")
        # one background thread refills pools, so a core stays free for serving:
        # refilling on every core made pooled mints wait for CPU (p50 12 ms vs 3 ms)
        self.refill_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keygen-refill",
                                                  initializer=_lowest_cpu_priority)
        self._clock = clock
        self.pools: dict[str, keys.hazmat.KeypairPool] = {
            alg: keys.hazmat.KeypairPool(alg, pool_size, pool_max_age, clock) for alg in pool_algorithms
        } if pool_size > 0 else {}
        self._wake = asyncio.Event()
        self.pool_hits = 0
        self.pool_misses = 0

    async def mint(self, claims: Mapping[str, Any], *, algorithm: str, prefix: str) -> keys.MintedKey:
        pool = self.pools.get(algorithm)
        if pool is not None:
            self._wake.set()
            # signing alone is ~0.25 ms for RS256: cheaper inline than a thread hop
            minted = pool.mint(claims, prefix=prefix, clock=self._clock)
            if minted is not None:
                self.pool_hits += 1
                return minted
            self.pool_misses += 1
        call = functools.partial(keys.mint, claims, algorithm=algorithm, prefix=prefix, clock=self._clock)
        if keys.get_algorithm(algorithm).kty in _INLINE_KTY:
            return call()
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def pool_sizes(self) -> dict[str, int]:
        """Keypairs ready per pooled algorithm (the metrics gauge)."""
        return {alg: len(pool) for alg, pool in self.pools.items()}

    async def sentinel(self, algorithm: str = "EdDSA") -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, keys.sentinel_jwk, algorithm)

    async def keep_pools_full(self) -> None:
        """Background task: refill pools and evict old keypairs."""
        if not self.pools:
            return
        loop = asyncio.get_running_loop()
        while True:
            for pool in self.pools.values():
                pool.evict()
                while pool.needed():
                    await loop.run_in_executor(self.refill_executor, pool.fill_one)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.refill_executor.shutdown(wait=False, cancel_futures=True)
