"""The rate-limit service's own port (AUTHSERVER_RATELIMIT_PORT, the lean
HTTP/2 transport) over TLS with client certificates, from the real Envoy:
the cluster `authserver gateway envoy` writes (ALPN h2, its client
certificate) reaches it and a call past the limit is refused."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy_stack import as_json, rls_answers_every_call
from test_xds_server import _cert, _write

from authserver_devtools import free_port

pytestmark = [pytest.mark.envoy]

NODE = "authserver-gateway-default"


async def _plan(stack, core) -> None:
    from authserver.services import Actor, KeySpec

    actor = Actor("ratelimit-tls-tests")
    _, admin = await core.tenants.create_tenant("default", algorithm="ES256", actor=actor)
    stack.admin["default"] = admin.key
    row, minted = await core.lifecycle.mint("default", KeySpec(name="limited", rate_limits=[
        {"limit": 2, "window_seconds": 60}]), actor)
    stack.keys["limited"] = {"id": row.id, "key": minted.key}


def test_envoy_reaches_the_lean_port_over_tls_with_its_client_certificate(make_stack, tmp_path):
    ca_cert, ca_key = _cert("test CA", None, ca=True)
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    issuer = (ca_cert.subject, ca_key)
    server = _write(tmp_path, "server", *_cert("authserver", issuer,
                                               san=x509.IPAddress(ipaddress.ip_address("127.0.0.1"))))
    envoy_crt, envoy_key = _write(tmp_path, "envoy", *_cert(NODE, issuer, san=x509.DNSName(NODE)))
    xds, lean = free_port(), free_port()
    stack = make_stack(_plan, env={
        "AUTHSERVER_XDS_PORT": str(xds), "AUTHSERVER_RATELIMIT_PORT": str(lean),
        "AUTHSERVER_XDS_NODES": f"{NODE}=default", "AUTHSERVER_XDS_TLS_CERT": server[0],
        "AUTHSERVER_XDS_TLS_KEY": server[1], "AUTHSERVER_XDS_TLS_CLIENT_CA": str(ca_file),
    })
    config, listen, admin = stack.envoy_config_from_cli(
        "default", "--xds", f"127.0.0.1:{xds}", "--xds-ca", str(ca_file), "--xds-cert", envoy_crt,
        "--xds-key", envoy_key, "--ratelimit", f"127.0.0.1:{lean}")
    gw = stack.start_envoy(rls_answers_every_call(config), listen, admin, "ratelimit-tls")
    key = stack.keys["limited"]["key"]
    r = gw.get(key=key)
    assert r.status_code == 200 and r.headers["ratelimit-limit"] == "2", r.text  # counted: the service answered
    assert gw.status(key) == 200
    r = gw.get(key=key)
    assert r.status_code == 429 and as_json(r)["code"] == "rate_limited"
    stats = gw.stats("ratelimit")
    assert stats["ok"] == 2 and stats["over_limit"] == 1 and stats.get("error", 0) == 0, stats
