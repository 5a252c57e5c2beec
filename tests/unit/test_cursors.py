"""Pagination cursors: opaque, round-trip, and only what this server issued decodes."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest

from authserver.errors import InvalidInput
from authserver.services.queries import decode_audit_cursor, decode_cursor, encode_audit_cursor, encode_cursor


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("created,kid", [(0, "a"), (1_700_000_000, "Nx6nKoquIgDRYylcMhK_PDcuTtlyuOWrLwQG98SYgco"),
                                         (2**63 - 1, "-" * 64)])
def test_key_cursors_round_trip(created, kid):
    cursor = encode_cursor(SimpleNamespace(created_at=created, id=kid))  # type: ignore[arg-type]
    assert "=" not in cursor and ":" not in cursor
    assert decode_cursor(cursor) == (created, kid)


@pytest.mark.parametrize("event_id", [0, 1, 2**63 - 1])
def test_audit_cursors_round_trip(event_id):
    assert decode_audit_cursor(encode_audit_cursor(SimpleNamespace(id=event_id))) == event_id  # type: ignore[arg-type]


@pytest.mark.parametrize("cursor", [
    "", "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk6YWJj", "MToA", _b64(f"{2**63}:abc".encode()), _b64(b"-1:abc"),
    _b64(b"01:abc"), _b64(b"1:"), _b64(b"1:a b"), _b64(b"1:" + b"a" * 65), _b64(b"1:abc\n"), _b64(b"\xff:abc"),
    _b64("١:abc".encode()), "MTphYmM=", "MTphYmM!", "a" * 201, _b64(b"a1"),
])
def test_anything_else_is_a_422(cursor):
    with pytest.raises(InvalidInput):
        decode_cursor(cursor)


@pytest.mark.parametrize("cursor", ["", _b64(b"1"), _b64(b"a-1"), _b64(f"a{2**63}".encode()), _b64(b"a01"),
                                    _b64(b"1:abc"), "MToA"])
def test_audit_cursors_refuse_anything_else(cursor):
    with pytest.raises(InvalidInput):
        decode_audit_cursor(cursor)
