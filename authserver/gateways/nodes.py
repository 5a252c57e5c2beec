"""Who may use the gateway services: configured Envoy node ids, each for its
own tenant (``AUTHSERVER_XDS_NODES``); with TLS, the node id must also be
named in the client certificate (CN or a SAN). The rate-limit service has no
node id in its requests: with TLS it takes the tenants of the node ids its
caller's certificate names (``peer_tenants``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

__all__ = ["NodeAccess"]

log = logging.getLogger("authserver.xds")


class NodeAccess:
    def __init__(self, nodes: Mapping[str, str], *, require_peer_identity: bool, refused: Any) -> None:
        """``refused``: a counter labelled by reason (unknown_node, certificate)."""
        self.nodes = dict(nodes)
        self.require_peer_identity = require_peer_identity
        self.refused = refused

    async def admit(self, node_id: str, context: grpc.aio.ServicerContext) -> str:
        """The node's tenant; aborts the call with PERMISSION_DENIED otherwise."""
        tenant_id = self.nodes.get(node_id)
        if tenant_id is None:
            self.refused.labels("unknown_node").inc()
            log.warning("refused a gateway stream from %s: node id %r is not in AUTHSERVER_XDS_NODES",
                        context.peer(), node_id[:100])
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this node id may not subscribe")
        if self.require_peer_identity:
            if node_id not in _peer_names(context):
                self.refused.labels("certificate").inc()
                log.warning("refused node %r from %s: not named in its client certificate", node_id[:100],
                            context.peer())
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the node id is not the certificate's")
        assert tenant_id is not None  # abort raised otherwise
        return tenant_id

    def peer_tenants(self, context: grpc.aio.ServicerContext) -> set[str]:
        """The tenants of the listed node ids the caller's certificate names."""
        return self.tenants_named(_peer_names(context))

    def tenants_named(self, names: Iterable[str]) -> set[str]:
        """The tenants of the listed node ids among a certificate's names."""
        return {self.nodes[n] for n in names if n in self.nodes}


def _peer_names(context: grpc.aio.ServicerContext) -> set[str]:
    """The CN and SANs of the client certificate (none over plaintext)."""
    auth = context.auth_context()
    return {n.decode(errors="replace") for key in ("x509_common_name", "x509_subject_alternative_name")
            for n in auth.get(key, [])}
