"""The rules only admin keys have. Their life is KeyLifecycle's (``kind="admin"``:
mint, roll, revoke with ``keep_last_admin``) and their listing KeyQueries'; what
is here is what a caller may grant: an admin key never mints or rolls an admin
key with a scope it does not carry itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from ..errors import Forbidden, InvalidInput
from ..schemas import ADMIN_SCOPES, AdminKeySpec, KeySpec, key_spec

__all__ = ["admin_key_spec", "check_grant"]


def check_grant(scopes: Iterable[str], granted: Iterable[str]) -> None:
    """403 unless every scope in ``scopes`` is in ``granted`` (the caller's own)."""
    extra = sorted(set(scopes) - set(granted))
    if extra:
        raise Forbidden(f"an admin key cannot grant scopes it does not have: {' '.join(extra)}")


def admin_key_spec(value: AdminKeySpec | dict[str, Any], granted: Iterable[str]) -> KeySpec:
    """The KeySpec of a new admin key. Scopes default to the caller's (``granted``,
    all of ADMIN_SCOPES for the CLI) and may not exceed them; they are kept in
    the canonical order, once each."""
    granted = frozenset(granted)
    try:
        spec = value if isinstance(value, AdminKeySpec) else msgspec.convert(value, AdminKeySpec, strict=True)
    except msgspec.ValidationError as exc:
        allowed = ", ".join(ADMIN_SCOPES)
        raise InvalidInput(f"the admin key spec is not valid: {exc} (admin scopes: {allowed})") from None
    wanted = granted if spec.scopes is None else frozenset(spec.scopes)
    check_grant(wanted & frozenset(ADMIN_SCOPES), granted)
    scopes = [s for s in ADMIN_SCOPES if s in wanted]
    return key_spec({"name": spec.name, "scopes": scopes, "expires_in": spec.expires_in})
