"""Low-level names that are easy to misuse. Import them from here on purpose.

- ``unverified_kid``: reads a key's kid WITHOUT checking anything; only to pick
  which verifier (tenant) to try.
- ``mint_with_keypair`` and ``KeypairPool``: sign with a keypair made earlier,
  which lives in memory until used (see :mod:`keys._pool` for the trade-off).
- ``ALGORITHMS`` and ``register``: the mutable algorithm registry; changing it
  changes what every verifier in the process accepts. Read the names with
  :func:`keys.supported_algorithms` instead.
"""

from ._algorithms import ALGORITHMS, register
from ._mint import mint_with_keypair
from ._pool import KeypairPool
from .verify import unverified_kid

__all__ = ["ALGORITHMS", "KeypairPool", "mint_with_keypair", "register", "unverified_kid"]
