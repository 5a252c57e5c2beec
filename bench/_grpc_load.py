"""gRPC load on authserver's gateway services, from a process of its own (so
the server's CPU time is the server's): ``python -m bench._grpc_load``.

    rls: ShouldRateLimit calls, one descriptor (tenant, key_id) each, cycling
         over the given key ids, ``--concurrency`` calls in flight.
    als: StreamAccessLogs streams of synthetic entries (a verified key's jti in
         jwt_authn's metadata and a status, as Envoy's http_grpc logger sends
         them), ``--batch`` entries per message, ``--concurrency`` streams.

Prints one JSON line: calls or entries sent, errors, seconds, and the wall
clock at the start and end of the load (the harness takes the server's CPU
time over exactly that span, not over this process's start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from typing import Any

import grpc


async def _rls(target: str, tenant: str, kids: list[str], seconds: float, concurrency: int,
               rate: float | None = None) -> dict[str, Any]:
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    Entry = ratelimit_pb2.RateLimitDescriptor.Entry
    requests = [rls_pb2.RateLimitRequest(domain="authserver", hits_addend=1, descriptors=[
        ratelimit_pb2.RateLimitDescriptor(entries=[Entry(key="tenant", value=tenant), Entry(key="key_id", value=k)])
    ]) for k in kids]
    counts = {"calls": 0, "ok": 0, "over_limit": 0, "errors": 0}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        await stub.ShouldRateLimit(requests[0], timeout=10)  # connected before the clock starts
        cycle = itertools.cycle(requests)
        wall = time.time()
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                try:
                    r = await stub.ShouldRateLimit(next(cycle), timeout=10)
                except grpc.aio.AioRpcError:
                    counts["errors"] += 1
                    continue
                counts["calls"] += 1
                counts["ok" if r.overall_code == rls_pb2.RateLimitResponse.OK else "over_limit"] += 1

        async def paced() -> None:
            """Open loop: one call every 1/rate s whatever the answers (as a
            gateway's traffic arrives), each timed."""
            latencies: list[float] = []

            async def one(request: Any) -> None:
                t0 = time.perf_counter()
                try:
                    r = await stub.ShouldRateLimit(request, timeout=10)
                except grpc.aio.AioRpcError:
                    counts["errors"] += 1
                    return
                latencies.append(time.perf_counter() - t0)
                counts["calls"] += 1
                counts["ok" if r.overall_code == rls_pb2.RateLimitResponse.OK else "over_limit"] += 1

            assert rate
            calls = []
            for i in range(int(rate * seconds)):
                wait = start + i / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                calls.append(asyncio.ensure_future(one(next(cycle))))
            await asyncio.gather(*calls)
            latencies.sort()
            n = len(latencies)
            counts.update({"p50_ms": round(1e3 * latencies[n // 2], 3) if n else None,
                           "p99_ms": round(1e3 * latencies[int(n * 0.99)], 3) if n else None,
                           "over_50ms": sum(t > 0.05 for t in latencies)})

        if rate:
            await paced()
        else:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {**counts, "seconds": time.perf_counter() - start, "start": wall, "end": time.time()}


def _als_message(node_id: str, kids: list[str], batch: int, first: bool) -> Any:
    from envoy.service.accesslog.v3 import als_pb2
    from google.protobuf import struct_pb2

    from authserver.gateways.accesslog import JWT_NAMESPACE
    from authserver.gateways.push import PAYLOAD_METADATA_KEY

    now = time.time()
    msg = als_pb2.StreamAccessLogsMessage()
    if first:
        msg.identifier.node.id = node_id
        msg.identifier.log_name = node_id
    for i in range(batch):
        entry = msg.http_logs.log_entry.add()
        payload = struct_pb2.Struct()
        payload.update({PAYLOAD_METADATA_KEY: {"jti": kids[i % len(kids)], "sub": "bench"}})
        entry.common_properties.metadata.filter_metadata[JWT_NAMESPACE].CopyFrom(payload)
        entry.common_properties.start_time.FromNanoseconds(int(now * 1e9))
        entry.response.response_code.value = (200, 200, 200, 429, 503)[i % 5]
    return msg


async def _als(target: str, node_id: str, kids: list[str], seconds: float, concurrency: int,
               batch: int) -> dict[str, Any]:
    from envoy.service.accesslog.v3 import als_pb2_grpc

    counts = {"entries": 0, "messages": 0, "errors": 0}
    first, rest = _als_message(node_id, kids, batch, True), _als_message(node_id, kids, batch, False)
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        stub = als_pb2_grpc.AccessLogServiceStub(channel)
        wall = time.time()
        start = time.perf_counter()
        deadline = start + seconds

        async def stream() -> None:
            call = stub.StreamAccessLogs()
            try:
                await call.write(first)
                sent = 1
                while time.perf_counter() < deadline:
                    await call.write(rest)  # waits for the server (flow control): its pace, not ours
                    sent += 1
                await call.done_writing()
                await call
            except grpc.aio.AioRpcError:
                counts["errors"] += 1
                return
            counts["messages"] += sent
            counts["entries"] += sent * batch

        await asyncio.gather(*(stream() for _ in range(concurrency)))
        return {**counts, "seconds": time.perf_counter() - start, "start": wall, "end": time.time()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench._grpc_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("rls", "als"))
    p.add_argument("--target", required=True, help="HOST:PORT of authserver's gRPC port")
    p.add_argument("--tenant", default="default")
    p.add_argument("--node-id", default="authserver-gateway-default")
    p.add_argument("--kids", required=True, help="comma-separated key ids")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--batch", type=int, default=100, help="als: entries per message")
    p.add_argument("--rate", type=float, help="rls: calls per second, open loop (instead of --concurrency)")
    a = p.parse_args(argv)
    kids = a.kids.split(",")
    if a.mode == "rls":
        out = asyncio.run(_rls(a.target, a.tenant, kids, a.seconds, a.concurrency, a.rate))
    else:
        out = asyncio.run(_als(a.target, a.node_id, kids, a.seconds, a.concurrency, a.batch))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
