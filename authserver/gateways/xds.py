"""Envoy's control plane for what authserver owns: ADS (state of the world)
serving the extension configs of ``push`` from the key cache.

Each Envoy holds one gRPC stream and subscribes to its tenant's resources
(``push.resource_names``: buckets of recent keys and of removals, the keys
in a roll's grace period). Any change to a
tenant's published keys (local, from another replica's notice, from the
reconcile loop or a cache rebuild) wakes the streams of that tenant; a stream
sends each resource whose content differs from what it last sent (one per
response, so that Envoy's verdict on one cannot hold back the other). A new
stream gets everything it subscribes to, so an Envoy that reconnects is
brought fully up to date from the cache (never from a log of notices).

Who may subscribe: only configured node ids, each to its own tenant; with
TLS, the node id must also be a name in the client certificate. A NACK is
counted and logged with Envoy's error detail; the rejected content is not
sent again (only a later change is), so a bad resource cannot loop.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

# the message types the pushed configs name by "@type" must be in the pool
from envoy.config.core.v3 import extension_pb2
from envoy.config.rbac.v3 import rbac_pb2 as _rbac_action  # noqa: F401
from envoy.extensions.common.matching.v3 import extension_matcher_pb2 as _matching  # noqa: F401
from envoy.extensions.filters.http.composite.v3 import composite_pb2 as _composite  # noqa: F401
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2 as _mutation  # noqa: F401
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as _jwt  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as _rbac  # noqa: F401
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.type.matcher.v3 import http_inputs_pb2 as _inputs  # noqa: F401
from google.protobuf import any_pb2, json_format
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..keycache import KeyCache, TenantKeys
from . import push
from .nodes import NodeAccess

__all__ = ["ECDS_TYPE", "XdsMetrics", "XdsServer", "build_resources"]

log = logging.getLogger("authserver.xds")

ECDS_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
# scheduled removals (end of grace, expiry) are noticed by this tick; entries
# that aged out of the push window are dropped every AGE_EVERY ticks
TICK_SECONDS = 0.25
AGE_EVERY = 20
MAX_INFLIGHT = 64


class XdsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.connected = Gauge("authserver_xds_connected_envoys", "Envoys holding an xDS stream to this replica",
                               registry=r)
        self.pushes = Counter("authserver_xds_pushes", "Discovery responses sent", ["tenant"], registry=r)
        self.push_bytes = Counter("authserver_xds_push_bytes", "Bytes of discovery responses sent", ["tenant"],
                                  registry=r)
        self.push_seconds = Histogram(
            "authserver_xds_push_seconds", "From a change in the key cache to Envoy's ACK of its push",
            registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.acked_version = Gauge("authserver_xds_acked_version", "Last version each Envoy ACKed", ["node"],
                                   registry=r)
        self.nacks = Counter("authserver_xds_nacks", "Pushes an Envoy rejected", ["node"], registry=r)
        self.refused = Counter("authserver_xds_refused", "Streams or subscriptions refused", ["reason"], registry=r)


@dataclass(frozen=True, slots=True)
class _Resource:
    digest: bytes
    packed: any_pb2.Any


def _pack(name: str, config: dict[str, Any], fill: Callable[[Any], None] | None = None) -> _Resource:
    ext = json_format.ParseDict({"name": name, "typed_config": config}, extension_pb2.TypedExtensionConfig())
    if fill is not None:
        fill(ext)
    packed = any_pb2.Any()
    packed.Pack(ext)
    return _Resource(hashlib.sha256(ext.SerializeToString(deterministic=True)).digest(), packed)


def _recent_resource(name: str, tk: TenantKeys, keys_: list[tuple[int | None, dict[str, Any]]]) -> _Resource:
    return _pack(name, push.recent_config(tk.info, keys_))


def _removed_resource(name: str, kids: list[str]) -> _Resource:
    """``push.removed_config`` built from one parsed entry copied to the others:
    parsing thousands of map entries (each with its Any) costs ~0.1 ms apiece."""
    def fill(ext: Any) -> None:
        rbac = _rbac.RBAC()
        ext.typed_config.Unpack(rbac)
        entries = rbac.matcher.matcher_tree.exact_match_map.map
        deny = entries[kids[0]]
        for kid in kids[1:]:
            entries[kid].CopyFrom(deny)
        ext.typed_config.Pack(rbac)

    return _pack(name, push.removed_config(kids[:1]), fill if len(kids) > 1 else None)


def build_resources(tk: TenantKeys, now: float,
                    memo: dict[str, tuple[Any, _Resource]] | None = None) -> dict[str, _Resource]:
    """A tenant's pushed resources, by name, from its cache entry: each recent
    key in the bucket of its publication time, each removal in that of its time.
    ``memo`` (name -> (content, resource)) spares rebuilding unchanged buckets."""
    memo = {} if memo is None else memo

    def cached(name: str, content: Any, build: Callable[[], _Resource]) -> _Resource:
        hit = memo.get(name)
        if hit is None or hit[0] != content:
            hit = memo[name] = (content, build())
        return hit[1]

    recent, removed = tk.push_state(now)
    tenant_id = tk.info.id
    recent_buckets: list[list[tuple[int | None, dict[str, Any]]]] = [[] for _ in range(push.RECENT_BUCKETS)]
    for key in recent:
        recent_buckets[push.bucket_of(key.published_at, tk.recent_window, push.RECENT_BUCKETS)].append(
            (key.shard, tk.jwk(key)))
    removed_buckets: list[list[str]] = [[] for _ in range(push.REMOVED_BUCKETS)]
    for kid, at in removed.items():
        removed_buckets[push.bucket_of(at, tk.push_window, push.REMOVED_BUCKETS)].append(kid)
    out = {}
    for b, keys_ in enumerate(recent_buckets):
        name = push.recent_name(tenant_id, b)
        content = (tk.info, tuple((shard, jwk["kid"]) for shard, jwk in keys_))
        out[name] = cached(name, content, functools.partial(_recent_resource, name, tk, keys_))
    for b, kids in enumerate(removed_buckets):
        name = push.removed_name(tenant_id, b)
        out[name] = cached(name, tuple(kids), functools.partial(_removed_resource, name, kids))
    expiring = tk.expiring_state(now)
    name = push.expiring_name(tenant_id)
    out[name] = cached(name, tuple(expiring), lambda: _pack(name, push.expiring_config(expiring)))
    return out


@dataclass(eq=False)
class _Stream:
    node_id: str
    tenant_id: str
    peer: str
    names: set[str] = field(default_factory=set)
    sent: dict[str, bytes] = field(default_factory=dict)  # name -> digest last sent (ACKed or not)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    nonce: int = 0
    inflight: dict[str, tuple[str, float]] = field(default_factory=dict)  # nonce -> (version, change time)
    nacked: set[str] = field(default_factory=set)  # versions already reported
    subscribed_at: float = 0.0  # monotonic; a first push is timed from here, not from an old change


class XdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, cache: KeyCache, nodes: Mapping[str, str], metrics: XdsMetrics, *,
                 clock: Callable[[], float] = time.time, require_peer_identity: bool = False) -> None:
        self.cache = cache
        self.metrics = metrics
        self.clock = clock
        self.access = NodeAccess(nodes, require_peer_identity=require_peer_identity, refused=metrics.refused)
        self._streams: dict[str, set[_Stream]] = {}  # tenant id -> streams
        self._resources: dict[str, tuple[int, dict[str, _Resource]]] = {}  # tenant -> (serial, resources)
        self._memo: dict[str, tuple[Any, _Resource]] = {}  # resource name -> (content, resource)
        self._serial: dict[str, int] = {}
        self._changed_at: dict[str, float] = {}  # tenant -> monotonic time of its latest change
        self._version = 0
        cache.listeners.append(self._on_change)

    # -- changes ---------------------------------------------------------------

    def _on_change(self, tenant_id: str) -> None:
        self._serial[tenant_id] = self._serial.get(tenant_id, 0) + 1
        self._changed_at[tenant_id] = time.monotonic()
        for stream in self._streams.get(tenant_id, ()):
            stream.wake.set()

    def resources(self, tenant_id: str) -> dict[str, _Resource]:
        """The tenant's resources, rebuilt only after a change."""
        serial = self._serial.get(tenant_id, 0)
        cached = self._resources.get(tenant_id)
        if cached is not None and cached[0] == serial:
            return cached[1]
        tk = self.cache.get(tenant_id)
        built = build_resources(tk, self.clock(), self._memo) if tk is not None else {}
        self._resources[tenant_id] = (serial, built)
        return built

    async def run(self) -> None:
        """Notice scheduled removals (and entries aging out of the window) for
        tenants that have subscribers; pushing follows from the change."""
        ticks = 0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            ticks += 1
            now = self.clock()
            for tenant_id, streams in list(self._streams.items()):
                tk = self.cache.get(tenant_id)
                if not streams or tk is None:
                    continue
                tk.prune(now)  # a removal notifies _on_change
                if ticks % AGE_EVERY == 0:
                    self._serial[tenant_id] = self._serial.get(tenant_id, 0) + 1  # rebuild; unchanged digests stay
                    for stream in streams:
                        stream.wake.set()

    # -- the ADS stream ----------------------------------------------------------

    async def StreamAggregatedResources(  # noqa: N802  (the gRPC method name)
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        first = await anext(request_iterator, None)
        if first is None:
            return
        stream = await self._admit(first, context)
        self._streams.setdefault(stream.tenant_id, set()).add(stream)
        self.metrics.connected.inc()
        log.info("xds: Envoy %s (%s) connected", stream.node_id, stream.peer)
        self._on_request(stream, first)
        reader = asyncio.create_task(self._read(stream, request_iterator), name=f"xds-read-{stream.node_id}")
        wait: asyncio.Task[Any] | None = None
        try:
            while True:
                wait = asyncio.create_task(stream.wake.wait())
                await asyncio.wait({wait, reader}, return_when=asyncio.FIRST_COMPLETED)
                wait.cancel()
                if reader.done():
                    break
                stream.wake.clear()
                for response in self._next_responses(stream):
                    yield response
        finally:
            reader.cancel()
            if wait is not None:
                wait.cancel()
            self._streams.get(stream.tenant_id, set()).discard(stream)
            self.metrics.connected.dec()
            log.info("xds: Envoy %s disconnected", stream.node_id)

    async def DeltaAggregatedResources(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "use state-of-the-world ADS (api_type: GRPC)")
        yield  # pragma: no cover  (makes this an async generator, as grpc expects)

    async def _admit(self, first: discovery_pb2.DiscoveryRequest, context: grpc.aio.ServicerContext) -> _Stream:
        tenant_id = await self.access.admit(first.node.id, context)
        return _Stream(first.node.id, tenant_id, context.peer())

    async def _read(self, stream: _Stream, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        async for request in requests:
            self._on_request(stream, request)

    def _on_request(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest) -> None:
        if request.type_url != ECDS_TYPE:
            return  # nothing else is ours to serve
        if request.response_nonce:
            pushed = stream.inflight.pop(request.response_nonce, None)
            if request.HasField("error_detail"):
                self._on_nack(stream, request, pushed)
            elif pushed is not None:
                version, changed_at = pushed
                self.metrics.acked_version.labels(stream.node_id).set(int(version))
                self.metrics.push_seconds.observe(time.monotonic() - changed_at)
        allowed = set(push.resource_names(stream.tenant_id))
        wanted = set(request.resource_names)
        if wanted - allowed:
            self.metrics.refused.labels("other_tenant").inc()
            log.warning("xds: node %r asked for resources of another tenant; not served", stream.node_id)
        wanted &= allowed
        if wanted != stream.names:
            for gone in stream.names - wanted:
                stream.sent.pop(gone, None)
            stream.names = wanted
            stream.subscribed_at = time.monotonic()
            stream.wake.set()

    def _on_nack(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest,
                 pushed: tuple[str, float] | None) -> None:
        version = pushed[0] if pushed else "?"
        if version in stream.nacked:
            return
        stream.nacked.add(version)
        self.metrics.nacks.labels(stream.node_id).inc()
        # not resent: what was rejected stays recorded as sent until it changes
        log.error("xds: Envoy %s rejected version %s (keeps its previous config): %s",
                  stream.node_id, version, request.error_detail.message[:2000])

    def _next_responses(self, stream: _Stream) -> list[discovery_pb2.DiscoveryResponse]:
        """One response per changed resource: Envoy accepts or rejects a
        response as a whole, so a resource it rejects cannot hold back another."""
        current = self.resources(stream.tenant_id)
        responses = []
        for name in sorted(stream.names):
            resource = current.get(name)
            if resource is None or stream.sent.get(name) == resource.digest:
                continue
            self._version += 1
            stream.nonce += 1
            version, nonce = str(self._version), str(stream.nonce)
            stream.sent[name] = resource.digest
            response = discovery_pb2.DiscoveryResponse(
                version_info=version, type_url=ECDS_TYPE, nonce=nonce, resources=[resource.packed],
            )
            changed_at = max(self._changed_at.get(stream.tenant_id, 0.0), stream.subscribed_at)
            stream.inflight[nonce] = (version, changed_at)
            while len(stream.inflight) > MAX_INFLIGHT:  # an Envoy that never answers must not grow this
                del stream.inflight[next(iter(stream.inflight))]
            self.metrics.pushes.labels(stream.tenant_id).inc()
            self.metrics.push_bytes.labels(stream.tenant_id).inc(response.ByteSize())
            responses.append(response)
        return responses
