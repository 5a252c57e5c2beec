"""The key spec is declared once (authserver.schemas): every way in gets its limits."""

from __future__ import annotations

import pytest

from authserver.errors import InvalidInput
from authserver.schemas import KeySpec, key_spec


@pytest.mark.parametrize("value", [
    {"name": "x" * 201}, {"name": ""}, {"subject": "a\nb"}, {"scopes": ["a b"]}, {"scopes": ["s"] * 65},
    {"expires_in": 0}, {"expires_in": 10 * 365 * 86400 + 1}, {"algorithm": "HS256"},
    {"rate_limits": [{"limit": 0, "window_seconds": 1}]}, {"metadata": {"k": "x" * 5000}},
    {"metadata": {"k": "\x00"}}, {"unknown": 1},
], ids=lambda v: next(iter(v)))
def test_key_spec_refuses_what_the_api_refuses(value):
    with pytest.raises(InvalidInput):
        key_spec(value)


def test_a_hand_built_spec_is_checked_too():
    with pytest.raises(InvalidInput):
        key_spec(KeySpec(name="x" * 201))
    spec = key_spec(KeySpec(name="ok", scopes=["read"], expires_in=60, algorithm="ES256",
                            rate_limits=[{"limit": 5, "window_seconds": 60}]))  # type: ignore[list-item]
    assert spec.rate_limit_dicts() == [{"limit": 5, "window_seconds": 60}]


def test_strict_means_no_coercion():
    with pytest.raises(InvalidInput):
        key_spec({"expires_in": "60"})
    assert key_spec({"expires_in": "60"}, strict=False).expires_in == 60
