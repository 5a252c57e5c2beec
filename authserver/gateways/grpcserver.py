"""The gRPC server Envoy talks to (``authserver serve`` starts it when
``AUTHSERVER_XDS_PORT`` is set): the xDS API (``xds``), the rate-limit
service (``ratelimit``) and the access-log service (``accesslog``) on one port; plaintext, or TLS requiring a client
certificate signed by ``AUTHSERVER_XDS_TLS_CLIENT_CA``. With ``AUTHSERVER_RATELIMIT_PORT``
the rate-limit service also listens there, on the lean transport (``leangrpc``), with the same TLS."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from ..settings import Settings
from .accesslog import AccessLogServer
from .leangrpc import UnaryServer, server_tls
from .ratelimit import METHOD, RateLimitServer
from .xds import XdsServer

__all__ = ["GatewayServer"]

log = logging.getLogger("authserver.xds")

_OPTIONS = [
    # Envoy pings every 10 s on the xDS connection (the generated config's
    # connection_keepalive); gRPC's default would call that abuse and hang up
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # a second process on the same port fails to start instead of sharing it unnoticed
    ("grpc.so_reuseport", 0),
]


class GatewayServer:
    def __init__(self, settings: Settings, xds: XdsServer, ratelimit: RateLimitServer | None = None,
                 accesslog: AccessLogServer | None = None) -> None:
        self.settings = settings
        self.xds = xds
        self.ratelimit = ratelimit
        self.accesslog = accesslog
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.lean: UnaryServer | None = None  # the rate-limit service's own port

    async def start(self) -> None:
        s = self.settings
        assert s.xds_port is not None  # only started when set
        server = grpc.aio.server(options=_OPTIONS)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.xds, server)
        if self.ratelimit is not None:
            server.add_generic_rpc_handlers((self.ratelimit.rpc_handler(),))
        if self.accesslog is not None:
            als_pb2_grpc.add_AccessLogServiceServicer_to_server(self.accesslog, server)
        address = f"[{s.xds_host}]:{s.xds_port}" if ":" in s.xds_host else f"{s.xds_host}:{s.xds_port}"
        try:
            self.port = self._bind(server, address)
        except RuntimeError:
            raise RuntimeError(f"cannot listen for gateways on {address} (AUTHSERVER_XDS_PORT): "
                               "the port is in use or not allowed") from None
        await server.start()
        self.server = server
        log.info("xds: serving ADS, rate limits and access logs on %s:%d (%s)", s.xds_host, self.port,
                 "TLS, client certificates" if s.xds_tls else "plaintext")
        if s.ratelimit_port is not None and self.ratelimit is not None:
            await self._start_lean(self.ratelimit, s.ratelimit_port)

    async def _start_lean(self, ratelimit: RateLimitServer, port: int) -> None:
        s = self.settings
        tls = None
        if s.xds_tls:
            assert s.xds_tls_cert and s.xds_tls_key and s.xds_tls_client_ca  # checked by Settings
            tls = server_tls(s.xds_tls_cert, s.xds_tls_key, s.xds_tls_client_ca)
        lean = UnaryServer({METHOD: ratelimit.call}, tls=tls)
        try:
            await lean.start(s.xds_host, port)
        except OSError as exc:
            raise RuntimeError(f"cannot listen for rate-limit calls on {s.xds_host}:{port} "
                               f"(AUTHSERVER_RATELIMIT_PORT): {exc.strerror}") from None
        self.lean = lean
        log.info("xds: serving rate limits on %s:%d too (lean HTTP/2)", s.xds_host, lean.port)

    def _bind(self, server: grpc.aio.Server, address: str) -> int:
        s = self.settings
        if s.xds_tls:
            assert s.xds_tls_cert and s.xds_tls_key and s.xds_tls_client_ca  # checked by Settings
            credentials = grpc.ssl_server_credentials(
                [(Path(s.xds_tls_key).read_bytes(), Path(s.xds_tls_cert).read_bytes())],
                root_certificates=Path(s.xds_tls_client_ca).read_bytes(), require_client_auth=True,
            )
            return int(server.add_secure_port(address, credentials))
        return int(server.add_insecure_port(address))

    async def stop(self) -> None:
        if self.lean is not None:
            await self.lean.stop()
            self.lean = None
        if self.server is not None:
            await self.server.stop(grace=0.5)
            self.server = None
