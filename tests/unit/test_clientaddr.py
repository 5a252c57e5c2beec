"""The client-address parser: trusted proxies only, walked from the right, never raising."""

from __future__ import annotations

import pytest

from authserver.clientaddr import forwarded_for, parse_address, parse_networks, resolve_client
from authserver.settings import Settings

LB = parse_networks("10.0.0.0/8, fd00::/8")


def test_networks_parse_once_and_reject_garbage():
    assert parse_networks("") == ()
    assert [str(n) for n in parse_networks("10.1.2.3, 192.168.0.0/16 ,::1")] == [
        "10.1.2.3/32", "192.168.0.0/16", "::1/128"]
    with pytest.raises(ValueError, match="AUTHSERVER_TRUSTED_PROXIES"):
        Settings(trusted_proxies="10.0.0.0/8,nonsense")
    s = Settings(trusted_proxies="10.0.0.0/8")
    assert s.trusted_proxy_networks is s.trusted_proxy_networks


@pytest.mark.parametrize(("text", "want"), [
    ("1.2.3.4", "1.2.3.4"), (" 1.2.3.4:8080 ", "1.2.3.4"), ('"[2001:db8::1]:4711"', "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"), ("2001:DB8::1", "2001:db8::1"), ("::ffff:10.0.0.1", "10.0.0.1"),
    ("fe80::1%" + "a" * 500, "fe80::1"),
    ("unknown", None), ("_hidden", None), ("", None), ("[::1", None), ("[::1]x", None), ("1.2.3.4:x", None),
    ("1.2.3.4:9999999", None), ("999.1.1.1", None), ("\x00", None), ("a" * 10000, None),
])
def test_addresses_as_proxies_write_them(text, want):
    got = parse_address(text)
    assert (str(got) if got else None) == want


def test_untrusted_peer_headers_are_ignored():
    assert resolve_client("203.0.113.9", ["1.1.1.1"], ["for=2.2.2.2"], LB) == "203.0.113.9"
    assert resolve_client("10.0.0.5", ["1.1.1.1"], [], ()) == "10.0.0.5"  # no proxy trusted at all
    assert resolve_client("testclient", ["1.1.1.1"], [], LB) == "testclient"
    assert resolve_client(None, ["1.1.1.1"], [], LB) is None


def test_walk_from_the_right_skipping_trusted_hops():
    # the client wrote 6.6.6.6 itself; the proxy appended what it saw
    assert resolve_client("10.0.0.5", ["6.6.6.6, 198.51.100.7"], [], LB) == "198.51.100.7"
    assert resolve_client("10.0.0.5", ["6.6.6.6, 198.51.100.7, 10.9.9.9"], [], LB) == "198.51.100.7"
    assert resolve_client("10.0.0.5", ["6.6.6.6", "198.51.100.7"], [], LB) == "198.51.100.7"  # two lines
    assert resolve_client("10.0.0.5", ["10.1.1.1, 10.2.2.2"], [], LB) == "10.1.1.1"  # all proxies
    # garbage stops the walk at the last proxy that reported it
    assert resolve_client("10.0.0.5", ["198.51.100.7, garbage"], [], LB) == "10.0.0.5"
    assert resolve_client("10.0.0.5", ["198.51.100.7, garbage, 10.2.2.2"], [], LB) == "10.2.2.2"
    assert resolve_client("10.0.0.5", [""], [], LB) == "10.0.0.5"
    assert resolve_client("10.0.0.5", ["1.1.1.1," * 20000], [], LB) == "10.0.0.5"  # too long: ignored
    # X-Forwarded-For wins over Forwarded when both are sent
    assert resolve_client("10.0.0.5", ["198.51.100.7"], ["for=192.0.2.1"], LB) == "198.51.100.7"


@pytest.mark.parametrize(("forwarded", "want"), [
    ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
    ('for="_gazonk", for=192.0.2.60', "192.0.2.60"),
    ('For="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
    ("for=192.0.2.43, for=198.51.100.17;by=10.0.0.1", "198.51.100.17"),
    ('for=192.0.2.43, for="[fd00::1]"', "192.0.2.43"),  # fd00::1 is a trusted proxy
    ('host="a,b";for=192.0.2.9', "192.0.2.9"),  # a comma inside quotes
    ("for=unknown", "10.0.0.5"), ("garbage", "10.0.0.5"), ('for="unclosed, for=192.0.2.1', "10.0.0.5"),
    ("for=192.0.2.1 junk", "10.0.0.5"), (";;,,", "10.0.0.5"), ("for=", "10.0.0.5"), ("\x00=\x00", "10.0.0.5"),
])
def test_forwarded_rfc7239(forwarded, want):
    assert resolve_client("10.0.0.5", [], [forwarded], LB) == want


def test_forwarded_elements_keep_their_positions():
    assert forwarded_for(["for=1.1.1.1;proto=https, by=x, for=2.2.2.2"]) == ["1.1.1.1", "", "2.2.2.2"]
