"""Where webhook deliveries may connect: public addresses only, by default.

A tenant admin chooses the endpoint URL, and the delivery log shows the status
code each attempt got: without a check, a webhook is a probe of the server's
own network (cloud metadata at 169.254.169.254, admin ports on 10/8, ...). The
check is made on the address actually connected to, after DNS resolution, in
the HTTP client's network backend: checking the name at registration alone
would let a name that later resolves elsewhere (DNS rebinding) through.
TLS still verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore
import httpx

from ..settings import Settings

__all__ = ["EgressRefused", "address_allowed", "guarded_transport"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(httpcore.ConnectError):
    """The endpoint's host resolves to an address deliveries may not reach
    (httpx reports it as a ConnectError carrying this message)."""


def address_allowed(address: _Address, settings: Settings) -> bool:
    """Whether a delivery may connect to this address under the settings."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    if address.is_loopback:
        return settings.webhook_allow_http_loopback
    if address.is_unspecified or address.is_multicast:
        return False  # 0.0.0.0 reaches this host; multicast is never an endpoint
    if not address.is_global:  # private, link-local, shared (100.64/10), reserved, documentation
        return settings.webhook_allow_private_networks
    return True


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses it if any address is not allowed, and
    connects to a checked address (never resolving the name a second time)."""

    def __init__(self, settings: Settings, inner: httpcore.AsyncNetworkBackend) -> None:
        self.settings = settings
        self.inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        # every address must pass: a name that resolves to a public and a private
        # address would otherwise reach the private one on a retry
        refused = [a for a in addresses if not address_allowed(a, self.settings)]
        if refused or not addresses:
            shown = refused[0] if refused else "no address"
            raise EgressRefused(f"{host} resolves to an address webhooks may not reach ({shown}); "
                                "see AUTHSERVER_WEBHOOK_ALLOW_PRIVATE_NETWORKS")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # try the next address, as a resolver-driven client would
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("webhooks connect over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, settings: Settings) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its pool is rebuilt around ours; a
        # test connects to a refused address through it, so a change of httpx's
        # internals that bypassed the guard would fail loudly
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_GuardedBackend(settings, httpcore.AnyIOBackend()))


def guarded_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    """The transport webhook deliveries go through."""
    return _GuardedTransport(settings)
