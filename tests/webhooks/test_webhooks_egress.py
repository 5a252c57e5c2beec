"""Webhook deliveries reach public addresses only, unless the settings say
otherwise: checked at registration for IP literals and on the address actually
connected to (after DNS) for names, with a real local receiver."""

from __future__ import annotations

import ipaddress
import random

import httpx
import pytest
from test_webhooks_outbox import core_with_clock, drain

from authserver.errors import InvalidInput
from authserver.schemas import key_spec
from authserver.services import Actor
from authserver.services.webhook_egress import EgressRefused, address_allowed, guarded_transport
from authserver.services.webhook_sender import WebhookSender
from authserver.services.webhooks import check_url
from authserver.settings import Settings

ACTOR = Actor("test")


@pytest.mark.parametrize(("address", "default", "private", "loopback"), [
    ("8.8.8.8", True, True, True),
    ("2606:4700:4700::1111", True, True, True),
    ("10.1.2.3", False, True, False),
    ("192.168.0.7", False, True, False),
    ("172.16.5.5", False, True, False),
    ("169.254.169.254", False, True, False),  # cloud metadata
    ("100.64.0.1", False, True, False),  # carrier-grade NAT
    ("fd00::1", False, True, False),
    ("fe80::1", False, True, False),
    ("127.0.0.1", False, False, True),
    ("::1", False, False, True),
    ("::ffff:10.0.0.1", False, True, False),  # IPv4-mapped: judged as the IPv4 address
    ("::ffff:127.0.0.1", False, False, True),
    ("0.0.0.0", False, False, False),
    ("224.0.0.1", False, False, False),
])
def test_which_addresses_deliveries_may_reach(address, default, private, loopback):
    ip = ipaddress.ip_address(address)
    assert address_allowed(ip, Settings()) is default
    assert address_allowed(ip, Settings(webhook_allow_private_networks=True)) is private
    assert address_allowed(ip, Settings(webhook_allow_http_loopback=True)) is loopback


@pytest.mark.parametrize("url", ["https://10.0.0.1/hook", "https://169.254.169.254/latest/meta-data",
                                 "https://[::ffff:192.168.1.1]/hook", "https://[fe80::1]:8443/x", "https://0.0.0.0/"])
def test_registration_refuses_private_ip_literals(url):
    with pytest.raises(InvalidInput, match="private or reserved"):
        check_url(url, Settings())
    if not url.endswith("0.0.0.0/"):  # 0.0.0.0 is this host: never an endpoint
        assert check_url(url, Settings(webhook_allow_private_networks=True)) == url


def test_registration_keeps_names_for_the_connect_check():
    # a name cannot be judged before it is resolved, and may resolve elsewhere later
    assert check_url("https://hooks.example.com/x", Settings()) == "https://hooks.example.com/x"


async def test_the_transport_refuses_before_connecting(receiver):
    rx = receiver()
    port = int(rx.url.split(":")[2].split("/")[0])
    async with httpx.AsyncClient(transport=guarded_transport(Settings())) as http:
        for url in (f"http://localhost:{port}/hook", f"http://127.0.0.1:{port}/hook", "http://10.255.255.1:9/x"):
            with pytest.raises(httpx.ConnectError) as caught:
                await http.post(url, content=b"{}")
            assert isinstance(caught.value.__cause__, EgressRefused), url
    assert rx.requests == [], "a refused address was connected to"
    # the same transport, allowed to reach loopback, delivers: the guard is what refused
    async with httpx.AsyncClient(transport=guarded_transport(Settings(webhook_allow_http_loopback=True))) as http:
        response = await http.post(f"http://localhost:{port}/hook", content=b"{}")
    assert response.status_code == 204 and len(rx.requests) == 1


async def test_a_name_resolving_to_loopback_is_logged_as_refused(hook_settings, clock):
    # registered as https to a name (allowed then); the sender, without loopback
    # allowed, resolves it at connect time and records why it did not send
    settings = hook_settings()
    async with core_with_clock(settings, clock) as (core, _):
        await core.webhooks.create("default", "https://localhost:9/hook", None, None, ACTOR)
        await core.lifecycle.mint("default", key_spec({}), ACTOR)
        strict = settings.replace(webhook_allow_http_loopback=False)
        sender = WebhookSender(strict, core.sessions, core.webhooks.box, owner="t", clock=clock, rng=random.Random(0))
        try:
            assert await drain(sender) == 1
        finally:
            await sender.close()
        [(delivery, _)] = await core.webhooks.deliveries("default", limit=10)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "localhost resolves to an address webhooks may not reach" in (delivery.last_error or "")

