"""The client's address, through the proxies the operator trusts (and no others).

The TCP peer is the client unless it is inside ``AUTHSERVER_TRUSTED_PROXIES``.
Only then are ``X-Forwarded-For`` (or, without it, RFC 7239 ``Forwarded``
``for=``) read, from the right, since each proxy appends what it saw and
anything further left may have been written by the client itself: addresses
inside trusted proxies are skipped, the first one outside them is the client.
An entry that is no address (``unknown``, an obfuscated ``_name``, garbage)
stops the walk; the last proxy that reported it is then the best we know.
Nothing here raises on what a client sends.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence

__all__ = ["Network", "forwarded_for", "parse_networks", "resolve_client", "x_forwarded_for"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# a header this long is not from a proxy chain we serve; ignore past it
_MAX_HEADER = 8192
_MAX_HOPS = 64
# one RFC 7239 pair: token "=" ( token / quoted-string )
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,"\s]*)\s*')


@functools.cache
def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128); ValueError on a bad one."""
    networks = []
    for part in text.split(","):
        part = part.strip()
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{part!r} is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)") from None
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, quoted, ``[v6]``, with a port or not."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1:] and not _is_port(text[end + 1:])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 has at least two colons
        text, port = text.split(":")
        if not _is_port(":" + port):
            return None
    # a zone id (fe80::1%eth0) is the sender's own interface name: meaningless
    # here, unbounded in length, so it is dropped
    text = text.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _is_port(text: str) -> bool:
    return len(text) > 1 and text[0] == ":" and text[1:].isdigit() and len(text) <= 6


def x_forwarded_for(values: Iterable[str]) -> list[str]:
    """The hops of every X-Forwarded-For line, left to right."""
    return [hop.strip() for value in values for hop in value.split(",")]


def forwarded_for(values: Iterable[str]) -> list[str]:
    """The ``for=`` of each RFC 7239 element, left to right; an element
    without a parsable ``for=`` is kept as an empty entry (it stops the walk)."""
    hops = []
    for value in values:
        for element in _elements(value):
            found = ""
            pos = 0
            while pos < len(element):
                m = _PAIR.match(element, pos)
                if m is None:
                    found = ""
                    break
                if m.group(1).lower() == "for":
                    found = m.group(2)
                pos = m.end()
                if pos < len(element):
                    if element[pos] != ";":
                        found = ""
                        break
                    pos += 1
            hops.append(found)
    return hops


def _elements(value: str) -> list[str]:
    """Split on commas outside quoted strings (an unclosed quote runs to the end)."""
    out, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(value[start:i])
            start = i + 1
    out.append(value[start:])
    return out


def resolve_client(peer: str | None, xff: Sequence[str], forwarded: Sequence[str],
                   trusted: Sequence[Network]) -> str | None:
    """The client address for a request from ``peer`` with these header lines."""
    peer_addr = parse_address(peer) if peer else None
    if peer_addr is None:
        return peer  # not an IP (a unix socket, a test client): no proxy to trust
    if not trusted or not _inside(peer_addr, trusted):
        return str(peer_addr)
    lines = xff if xff else forwarded
    if sum(len(v) for v in lines) > _MAX_HEADER:
        return str(peer_addr)
    hops = x_forwarded_for(lines) if xff else forwarded_for(lines)
    client = peer_addr
    for hop in reversed(hops[-_MAX_HOPS:]):
        addr = parse_address(hop)
        if addr is None:
            break
        client = addr
        if not _inside(addr, trusted):
            break
    return str(client)


def _inside(addr: IPAddress, networks: Sequence[Network]) -> bool:
    return any(addr.version == n.version and addr in n for n in networks)
