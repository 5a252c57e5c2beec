"""NumericDate rules shared by the minter and the verifier.

RFC 7519 allows any JSON number; we take one spelling: an integer number of
seconds from 0 to the end of year 9999. A float, a bool or ``1e400`` (which
Python reads as infinity, a key that would never expire) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_NUMERIC_DATE", "NUMERIC_DATE_CLAIMS", "check_numeric_dates", "is_numeric_date"]

NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z


def is_numeric_date(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_NUMERIC_DATE


def check_numeric_dates(claims: Mapping[str, Any], error: type[Exception]) -> None:
    for name in NUMERIC_DATE_CLAIMS:
        if name in claims and not is_numeric_date(claims[name]):
            raise error(f"{name} is not an integer NumericDate (0 .. {MAX_NUMERIC_DATE})")
