"""Prometheus metrics, one registry per app (so tests can run several apps)."""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import __version__
from .db.models import ApiKey
from .keycache import KeyCache


class _CacheCollector(Collector):
    """Gauges read from the key cache at scrape time."""

    def __init__(self, cache: KeyCache, redis_connected: Callable[[], bool] | None = None) -> None:
        """``redis_connected``: probe for the Redis gauge (None: no Redis, no gauge)."""
        self.cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily("authserver_keys_active", "API keys published in the JWKS", labels=["tenant"])
        size = GaugeMetricFamily("authserver_jwks_bytes", "Size of the served JWKS document", labels=["tenant"])
        rebuild = GaugeMetricFamily(
            "authserver_jwks_rebuild_seconds", "Time of the last JWKS render", labels=["tenant"]
        )
        for tenant_id, tk in self.cache.tenants.items():
            served = [tk.jwks(shard) for shard in tk.shard_ids()]
            active.add_metric([tenant_id], tk.count("api"))
            size.add_metric([tenant_id], sum(d.size for d in served))
            rebuild.add_metric([tenant_id], tk.last_rebuild_seconds)
        yield active
        yield size
        yield rebuild


class _RedisCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        probe = self.metrics.redis_connected
        if probe is None:
            return
        g = GaugeMetricFamily("authserver_redis_connected", "1 while subscribed to change notices")
        g.add_metric([], 1.0 if probe() else 0.0)
        yield g


class _PoolCollector(Collector):
    """Keypairs ready in the mint pools (a mint finding none generates its own)."""

    def __init__(self, pools: Callable[[], dict[str, int]]) -> None:
        self.pools = pools

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("authserver_mint_pool_keypairs", "Pre-generated keypairs ready to mint",
                              labels=["alg"])
        for alg, n in self.pools().items():
            g.add_metric([alg], n)
        yield g


class Latencies:
    """A histogram's observations as counts per bucket and their sum, added
    into it by ``fold``: ``counts[bisect_left(bounds, seconds)] += 1`` and
    ``counts[-1] += seconds`` observe one (``bounds`` end with +Inf)."""

    __slots__ = ("child", "bounds", "counts")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts: list[float] = [0.0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        counts = self.counts
        counts[bisect_left(self.bounds, seconds)] += 1
        counts[-1] += seconds

    def fold(self) -> None:
        counts = self.counts  # emptied in place: the fast path holds on to this list
        if not any(counts[:-1]):
            return
        # prometheus_client's own per-bucket values (not cumulative; collect adds them up)
        for bucket, n in zip(self.child._buckets, counts, strict=False):
            if n:
                bucket.inc(n)
        self.child._sum.inc(counts[-1])
        counts[:] = [0.0] * len(counts)


class Metrics:
    def __init__(self, cache: KeyCache, redis_connected: Callable[[], bool] | None = None,
                 pools: Callable[[], dict[str, int]] | None = None) -> None:
        """``redis_connected``: probe for the Redis gauge (None: no Redis, no gauge);
        ``pools``: keypairs ready per algorithm (None: no pool, no gauge)."""
        self.registry = CollectorRegistry()
        r = self.registry
        if pools is not None:
            r.register(_PoolCollector(pools))
        self.mints = Counter("authserver_mints", "Keys minted", ["tenant", "alg", "kind"], registry=r)
        self.rolls = Counter("authserver_rolls", "Keys rolled", ["tenant"], registry=r)
        self.revocations = Counter("authserver_revocations", "Keys revoked", ["tenant"], registry=r)
        self.mint_seconds = Histogram(
            "authserver_mint_seconds", "Mint latency (key generation included)", ["alg"], registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.auth_failures = Counter("authserver_auth_failures", "Rejected credentials", ["reason"], registry=r)
        self.reconcile_failures = Counter(
            "authserver_reconcile_failures", "Failed rereads of changed keys (database down)", registry=r
        )
        self.invalidation_degraded = Counter(
            "authserver_invalidation_degraded", "Times cross-replica invalidation was lost (Redis down)", registry=r
        )
        self.redis_connected = redis_connected
        r.register(_RedisCollector(self))
        self.rate_limited = Counter("authserver_rate_limited", "Requests refused with 429", ["bucket"], registry=r)
        # delivered, retry (a failed attempt that will be retried), failed (attempts spent), cancelled
        self.webhook_attempts = Counter("authserver_webhook_attempts", "Webhook delivery attempts by outcome",
                                        ["result"], registry=r)
        r.register(_CacheCollector(cache))
        self._add_traffic_metrics(r)

    # --- traffic: HTTP by route, JWKS polling, introspection, build (issue 16) ---
    def _add_traffic_metrics(self, r: CollectorRegistry) -> None:
        # labels are bounded: route templates (not raw paths), known methods, status codes
        self.http_requests = Counter(
            "authserver_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.http_seconds = Histogram(
            "authserver_http_request_duration_seconds", "HTTP request latency, first byte in to last byte out",
            ["route", "method"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        # only existing tenants and shards become labels (a 404 is counted by route alone)
        self._jwks_children: dict[tuple[str, int | None, bool], Counter] = {}
        # the JWKS answers' counts, as plain ints added into their counters when the metrics
        # are read (render): a counter's inc takes a lock, ~0.7 us on every answer
        self._pending: dict[Counter, int] = {}
        # the same for the protocol's JWKS answers (authserver.serving.FastJWKS): a cell per
        # set of counters (one answer counts in each), and latencies per histogram bucket
        self._tallies: dict[tuple[Counter, ...], list[int]] = {}
        self._latencies: dict[Histogram, Latencies] = {}
        self.jwks_fetches = Counter(
            "authserver_jwks_fetches", "JWKS answers by tenant and shard; result=not_modified is a 304",
            ["tenant", "shard", "result"], registry=r,
        )
        self.introspections = Counter(
            "authserver_introspections", "Introspection answers by status", ["status"], registry=r
        )
        Info("authserver_build", "Version of the running server", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_seconds.labels(route, method).observe(seconds)

    def jwks_fetch(self, tenant_id: str, shard: int | None, not_modified: bool) -> None:
        self.count(self.jwks_fetch_child(tenant_id, shard, not_modified))

    def jwks_fetch_child(self, tenant_id: str, shard: int | None, not_modified: bool) -> Counter:
        # the children by key: labels() costs more than the inc, on every JWKS answer
        child = self._jwks_children.get((tenant_id, shard, not_modified))
        if child is None:
            child = self._jwks_children[tenant_id, shard, not_modified] = self.jwks_fetches.labels(
                tenant_id, "main" if shard is None else str(shard), "not_modified" if not_modified else "full")
        return child

    def count(self, child: Counter) -> None:
        """One more in ``child`` (a labelled counter), seen from the next render on;
        from the event loop's thread only (as every JWKS answer is)."""
        self._pending[child] = self._pending.get(child, 0) + 1

    def tally(self, *children: Counter) -> list[int]:
        """A cell whose ``[0] += 1`` counts one in each of ``children`` (labelled
        counters), seen from the next render on; the same cell for the same children.
        From the event loop's thread only."""
        cell = self._tallies.get(children)
        if cell is None:
            cell = self._tallies[children] = [0]
        return cell

    def latencies(self, child: Histogram) -> Latencies:
        """Observations of a labelled histogram, kept as plain numbers until the next
        render (an observe takes two locks). From the event loop's thread only."""
        found = self._latencies.get(child)
        if found is None:
            found = self._latencies[child] = Latencies(child)
        return found

    def redis_degraded(self) -> None:
        self.invalidation_degraded.inc()

    def on_change(self, action: str, tenant_id: str, row: ApiKey) -> None:
        if action in ("key.mint", "key.roll"):
            self.mints.labels(tenant_id, row.algorithm, row.kind).inc()
        if action == "key.roll":
            self.rolls.labels(tenant_id).inc()
        elif action == "key.revoke":
            self.revocations.labels(tenant_id).inc()

    def render(self) -> bytes:
        pending, self._pending = self._pending, {}
        for child, n in pending.items():
            child.inc(n)
        for children, cell in self._tallies.items():
            n, cell[0] = cell[0], 0
            if n:
                for child in children:
                    child.inc(n)
        for latencies in self._latencies.values():
            latencies.fold()
        return generate_latest(self.registry)
