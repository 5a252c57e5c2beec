"""Envoy's access-log service (``envoy.service.accesslog.v3``): the calls
each gateway answered, streamed by its ``http_grpc`` access logger, counted
per verified key (``services.usage``).

A stream is admitted like an xDS stream (its node id, and certificate with
TLS) and may only report on its own tenant's keys: an entry whose key id the
tenant does not know (published, or removed within the push window) is
ignored. Only the key id from the verified JWT payload (jwt_authn's dynamic
metadata) and the response code are read; requests without a verified key
are not counted. Envoy sends no request headers unless told to, so the key
string never reaches us.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

from ..keycache import KeyCache
from ..services.usage import UsageRecorder
from .nodes import NodeAccess
from .push import PAYLOAD_METADATA_KEY

__all__ = ["AccessLogMetrics", "AccessLogServer"]

log = logging.getLogger("authserver.usage")

JWT_NAMESPACE = "envoy.filters.http.jwt_authn"


class AccessLogMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.entries = Counter("authserver_accesslog_entries", "Access-log entries from gateways", ["result"],
                               registry=registry)


def _key_id(entry: Any) -> str | None:
    fields = entry.common_properties.metadata.filter_metadata
    if JWT_NAMESPACE not in fields:
        return None
    payload = fields[JWT_NAMESPACE].fields.get(PAYLOAD_METADATA_KEY)
    if payload is None:
        return None
    jti = payload.struct_value.fields.get("jti")
    return jti.string_value if jti is not None and jti.string_value else None


class AccessLogServer(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, cache: KeyCache, access: NodeAccess, recorder: UsageRecorder, metrics: AccessLogMetrics) -> None:
        self.cache = cache
        self.access = access
        self.recorder = recorder
        self.metrics = metrics

    async def StreamAccessLogs(  # noqa: N802  (the gRPC method name)
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext,
    ) -> Any:
        from envoy.service.accesslog.v3 import als_pb2

        tenant_id: str | None = None
        async for message in request_iterator:
            if tenant_id is None:  # the identifier comes with the first message
                tenant_id = await self.access.admit(message.identifier.node.id, context)
            self._count(tenant_id, message.http_logs.log_entry)
        return als_pb2.StreamAccessLogsResponse()

    def _count(self, tenant_id: str, entries: Any) -> None:
        tk = self.cache.get(tenant_id)
        counted = ignored = 0
        for entry in entries:
            kid = _key_id(entry)
            if kid is None or tk is None or (kid not in tk.published and kid not in tk.removed):
                ignored += 1
                continue
            start = entry.common_properties.start_time
            self.recorder.record(tenant_id, kid, entry.response.response_code.value,
                                 start.seconds + start.nanos / 1e9)
            counted += 1
        if counted:
            self.metrics.entries.labels("counted").inc(counted)
        if ignored:
            self.metrics.entries.labels("ignored").inc(ignored)
