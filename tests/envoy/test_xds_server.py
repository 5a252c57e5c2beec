"""The xDS server in this process, against the real Envoy and a real gRPC
client: a NACK is reported and not resent in a loop; strangers cannot
subscribe; TLS with client certificates from a CA made here.

The server runs on its own event loop thread, with a key cache filled by
hand (no database): what is under test is the control plane.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy_stack import Gateway
from prometheus_client import CollectorRegistry

import keys
from authserver.db.models import ApiKey, Tenant
from authserver.gateways import XdsTls, envoy_config, push
from authserver.gateways.grpcserver import GatewayServer
from authserver.gateways.xds import ECDS_TYPE, XdsMetrics, XdsServer
from authserver.keycache import KeyCache, TenantInfo
from authserver.settings import Settings
from authserver_devtools import EnvoyProcess, free_port, wait_until

pytestmark = pytest.mark.envoy

TENANT = "acme"
NODE = "gw-acme"


def _tenant_row() -> Tenant:
    sentinel = keys.mint({"iss": "x", "aud": "y"}, algorithm="ES256").public_jwk
    return Tenant(id=TENANT, issuer="http://127.0.0.1:1/t/acme", audience="api://acme",
                  admin_audience="http://127.0.0.1:1/t/acme/admin", key_prefix="sk_live_", algorithm="ES256",
                  sentinel_jwk=sentinel, created_at=0, shard_count=1, changed_at=0)


def _key_row(now: int) -> tuple[ApiKey, str]:
    m = keys.mint({"iss": "http://127.0.0.1:1/t/acme", "aud": "api://acme", "iat": now}, algorithm="ES256",
                  prefix="sk_live_")
    row = ApiKey(id=m.kid, tenant_id=TENANT, kind="api", name="k", subject=m.kid, scopes=[], prefix="sk_live_",
                 last4=m.key[-4:], algorithm="ES256", public_jwk=m.public_jwk, meta={}, rate_limits=None,
                 created_at=now, expires_at=None, revoked_at=None, grace_ends_at=None, changed_at=now * 1000,
                 shard=None, published_at=now)
    return row, m.key


class ControlPlane:
    """GatewayServer + XdsServer on a loop thread; ``call`` runs a function there."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = KeyCache(time.time, push_window=settings.push_window_seconds)
        self.registry = CollectorRegistry()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.xds = XdsServer(self.cache, settings.xds_node_tenants, XdsMetrics(self.registry),
                             require_peer_identity=settings.xds_tls)
        from authserver.gateways.ratelimit import RateLimitMetrics, RateLimitServer
        from authserver.ratelimit import MemoryLimiter

        # the rate-limit service on the same port, behind the same admission
        self.rls = RateLimitServer(self.cache, MemoryLimiter(time.time), RateLimitMetrics(self.registry, False),
                                   access=self.xds.access)
        self.server = GatewayServer(settings, self.xds, self.rls)

    def __enter__(self) -> ControlPlane:
        self.thread.start()
        self.call(lambda: self.cache.set_tenant(_tenant_row()))
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.ticker = asyncio.run_coroutine_threadsafe(self.xds.run(), self.loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ticker.cancel()
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def call(self, fn: Callable[[], Any]) -> Any:
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except Exception as exc:  # handed to the test thread
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(10)

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def _start_envoy(tmp: Path, binary: str, cp: ControlPlane, node: str = NODE, tls: XdsTls | None = None) -> Gateway:
    import httpx

    listen, admin = free_port(), free_port()
    cfg = envoy_config(TenantInfo.from_row(_tenant_row()), cp.settings, upstream=f"127.0.0.1:{free_port()}",
                       listen=f"127.0.0.1:{listen}", admin=f"127.0.0.1:{admin}", cache_duration=300,
                       xds=[f"127.0.0.1:{cp.server.port}"], xds_tls=tls, node_id=node)
    proc = EnvoyProcess(cfg, binary=binary, workdir=tmp, log_level="info").start()
    gw = Gateway(proc, listen, admin, httpx.Client(trust_env=False, timeout=5))
    wait_until(lambda: gw.http.get(f"http://127.0.0.1:{admin}/ready").status_code == 200, 30,
               what="envoy admin", alive=proc.alive)
    return gw


def _ecds(gw: Gateway, resource: str, stat: str) -> int:
    return gw.stats(f"extension_config_discovery.http_filter.{resource}.").get(stat, 0)


@pytest.fixture
def plain() -> Iterator[ControlPlane]:
    settings = Settings(xds_port=free_port(), xds_nodes=f"{NODE}={TENANT},gw-other=other", log_json=False)
    with ControlPlane(settings) as cp:
        yield cp


def test_a_nack_is_reported_with_envoys_error_and_not_resent(plain, tmp_path, envoy_binary, monkeypatch, caplog):
    good = push.removed_config

    def bad(removed):  # an RE2 pattern Envoy refuses to compile
        allow = good(())["matcher"]["on_no_match"]
        return {"@type": push.RBAC_TYPE, "matcher": {"matcher_list": {"matchers": [{
            "predicate": {"single_predicate": {"input": {"name": "kid", "typed_config": {
                "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                "header_name": push.KID_HEADER}}, "value_match": {"safe_regex": {"google_re2": {}, "regex": "("}}}},
            "on_match": allow}]}}}

    caplog.set_level(logging.ERROR, logger="authserver.xds")
    gw = _start_envoy(tmp_path, envoy_binary, plain)
    at = int(time.time())
    bucket = push.removed_name(TENANT, push.bucket_of(at, plain.cache.push_window, push.REMOVED_BUCKETS))

    def revoke_one() -> None:
        row, _ = _key_row(at - 5)
        plain.cache.apply(row)  # published, then removed in the same loop turn: only the removal is pushed
        row.revoked_at = at
        plain.cache.apply(row)

    try:
        wait_until(lambda: _ecds(gw, bucket, "update_success") == 1, 10, what="first push")
        monkeypatch.setattr(push, "removed_config", bad)
        plain.call(revoke_one)
        wait_until(lambda: plain.sample("authserver_xds_nacks_total", node=NODE) == 1, 10, what="the NACK")
        assert any("rejected" in r.getMessage() and "missing )" in r.getMessage() for r in caplog.records), \
            [r.getMessage() for r in caplog.records]
        assert _ecds(gw, bucket, "update_success") == 1  # Envoy kept its previous config
        # no loop: the rejected content is not sent again
        pushes = plain.sample("authserver_xds_pushes_total", tenant=TENANT)
        time.sleep(1.5)
        assert plain.sample("authserver_xds_pushes_total", tenant=TENANT) == pushes
        assert plain.sample("authserver_xds_nacks_total", node=NODE) == 1
        # the next change carries a good config again, and it is taken
        monkeypatch.setattr(push, "removed_config", good)
        plain.call(revoke_one)
        wait_until(lambda: _ecds(gw, bucket, "update_success") >= 2, 5, what="a good config taken")
        assert plain.sample("authserver_xds_nacks_total", node=NODE) == 1
    finally:
        gw.proc.stop()


class _Client:
    """A bare ADS client: what a stranger could try."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.requests: queue.Queue[Any] = queue.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.responses = stub.StreamAggregatedResources(iter(self.requests.get, None))

    def ask(self, node: str, names: list[str]) -> None:
        req = discovery_pb2.DiscoveryRequest(type_url=ECDS_TYPE, resource_names=names)
        req.node.id = node
        self.requests.put(req)

    def first(self, timeout: float) -> Any:
        timer = threading.Timer(timeout, self.responses.cancel)
        timer.start()
        try:
            return next(self.responses)
        finally:
            timer.cancel()
            self.requests.put(None)


def test_strangers_cannot_subscribe_and_nodes_see_only_their_tenant(plain):
    with grpc.insecure_channel(f"127.0.0.1:{plain.server.port}") as channel:
        c = _Client(channel)
        c.ask("stranger", push.resource_names(TENANT))
        with pytest.raises(grpc.RpcError) as err:
            c.first(5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert plain.sample("authserver_xds_refused_total", reason="unknown_node") == 1

    with grpc.insecure_channel(f"127.0.0.1:{plain.server.port}") as channel:  # a known node, another tenant
        c = _Client(channel)
        c.ask("gw-other", push.resource_names(TENANT))
        with pytest.raises(grpc.RpcError) as err:
            c.first(1.5)  # nothing is ever sent: acme's key ids are not gw-other's
        assert err.value.code() == grpc.StatusCode.CANCELLED
    assert plain.sample("authserver_xds_refused_total", reason="other_tenant") >= 1

    with grpc.insecure_channel(f"127.0.0.1:{plain.server.port}") as channel:  # the right node
        c = _Client(channel)
        c.ask(NODE, [push.removed_name(TENANT, 0)])
        response = c.first(5)
        assert response.type_url == ECDS_TYPE and len(response.resources) == 1


# --- TLS ----------------------------------------------------------------------

def _cert(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, ca: bool = False,
          san: x509.GeneralName | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(tmp: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    c, k = tmp / f"{name}.crt", tmp / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # test-only TLS keys in the test's temp dir (not API key material)
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(c), str(k)


def _rls_call(channel: grpc.Channel, tenant: str) -> Any:
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    req = rls_pb2.RateLimitRequest(domain="authserver")
    d = req.descriptors.add()
    for k, v in (("tenant", tenant), ("key_id", "some-kid")):
        e = d.entries.add()
        e.key, e.value = k, v
    return rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(req, timeout=5)


@pytest.mark.parametrize("lean", [False, True], ids=["grpcio", "lean"])
def test_tls_the_rate_limit_service_answers_only_certified_gateways_of_the_tenant(tmp_path, lean):
    """The rate-limit service carries no node id: with TLS the client certificate
    must name a listed node of the descriptor's tenant (as an xDS stream must);
    on the gRPC port and on its own lean one alike."""
    ca_cert, ca_key = _cert("test CA", None, ca=True)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "ca.crt").write_bytes(ca_pem)
    issuer = (ca_cert.subject, ca_key)
    server = _write(tmp_path, "server", *_cert("authserver", issuer,
                                               san=x509.IPAddress(ipaddress.ip_address("127.0.0.1"))))
    ours = _write(tmp_path, "envoy", *_cert(NODE, issuer, san=x509.DNSName(NODE)))
    other = _write(tmp_path, "other", *_cert("gw-other", issuer))
    settings = Settings(xds_port=free_port(), xds_nodes=f"{NODE}={TENANT},gw-other=other",
                        xds_tls_cert=server[0], xds_tls_key=server[1], xds_tls_client_ca=str(tmp_path / "ca.crt"),
                        log_json=False, ratelimit_port=free_port() if lean else None)
    with ControlPlane(settings) as cp:
        target = f"127.0.0.1:{cp.server.lean.port if lean else cp.server.port}"

        def channel(identity: tuple[str, str] | None) -> grpc.Channel:
            creds = grpc.ssl_channel_credentials(
                ca_pem, *((Path(identity[1]).read_bytes(), Path(identity[0]).read_bytes()) if identity else ()))
            return grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "127.0.0.1")])

        with channel(ours) as ch:
            assert _rls_call(ch, TENANT).overall_code == 1  # OK (an unknown key is not limited here)
            with pytest.raises(grpc.RpcError) as err:
                _rls_call(ch, "other")  # another tenant's descriptor
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with channel(other) as ch, pytest.raises(grpc.RpcError) as err:
            _rls_call(ch, TENANT)  # a certificate of the CA, for another tenant's node
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with channel(None) as ch, pytest.raises(grpc.RpcError) as err:
            _rls_call(ch, TENANT)  # no client certificate: no handshake
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as ch, pytest.raises(grpc.RpcError):
            _rls_call(ch, TENANT)  # plaintext to the TLS port
        assert cp.sample("authserver_ratelimit_decisions_total", result="refused_peer") == 2


def test_tls_with_client_certificates(tmp_path, envoy_binary):
    ca_cert, ca_key = _cert("test CA", None, ca=True)
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    issuer = (ca_cert.subject, ca_key)
    server = _write(tmp_path, "server", *_cert("authserver", issuer,
                                               san=x509.IPAddress(ipaddress.ip_address("127.0.0.1"))))
    envoy_id = _write(tmp_path, "envoy", *_cert(NODE, issuer, san=x509.DNSName(NODE)))
    other_id = _write(tmp_path, "other", *_cert("someone-else", issuer))
    settings = Settings(xds_port=free_port(), xds_nodes=f"{NODE}={TENANT}", xds_tls_cert=server[0],
                        xds_tls_key=server[1], xds_tls_client_ca=str(ca_file), log_json=False)
    with ControlPlane(settings) as cp:
        (tmp_path / "envoy").mkdir()
        gw = _start_envoy(tmp_path / "envoy", envoy_binary, cp,
                          tls=XdsTls(str(ca_file), envoy_id[0], envoy_id[1], "127.0.0.1"))
        try:
            wait_until(lambda: _ecds(gw, push.removed_name(TENANT, 0), "update_success") >= 1, 10,
                       what="a push over TLS")
        finally:
            gw.proc.stop()
        ca_pem = ca_file.read_bytes()
        target = f"127.0.0.1:{cp.server.port}"
        # a certificate from the CA that names another node: refused
        creds = grpc.ssl_channel_credentials(ca_pem, Path(other_id[1]).read_bytes(), Path(other_id[0]).read_bytes())
        with grpc.secure_channel(target, creds) as channel:
            c = _Client(channel)
            c.ask(NODE, [push.removed_name(TENANT, 0)])
            with pytest.raises(grpc.RpcError) as err:
                c.first(5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # no client certificate: the handshake fails
        with grpc.secure_channel(target, grpc.ssl_channel_credentials(ca_pem)) as channel:
            c = _Client(channel)
            c.ask(NODE, [push.removed_name(TENANT, 0)])
            with pytest.raises(grpc.RpcError) as err:
                c.first(5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # plaintext: refused too
        with grpc.insecure_channel(target) as channel:
            c = _Client(channel)
            c.ask(NODE, [push.removed_name(TENANT, 0)])
            with pytest.raises(grpc.RpcError):
                c.first(5)
