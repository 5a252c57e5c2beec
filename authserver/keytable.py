"""One tenant's published keys by kid, in columns (issue 14: memory).

A server holds one record per live key, so a record is no Python object of
its own (an object, its dict entry, its kid string and its int fields cost
~300 B, as much as an EdDSA key's JWK and its gzip together): each field is a
column (an ``array`` or a ``bytearray``) indexed by the key's slot, and the
kid is found through an open-addressing hash table of slots. ~52 B per key:
the kid's 32 bytes, two times in 4 bytes each, a profile number in 2 and ~8
of hash table. A key's kind, flags, prefix and shard are one profile (a tenant
has a few: per kind and shard), kept once in a list; a time or a profile
number that does not fit (a time past 2106 or before 1970, a 65,536th profile)
widens its column for good (``_store``).

A kid that is a JWK thumbprint (43 base64url characters: every minted key's)
is kept as its 32 bytes; any other kid (tests, hand-made keys) as the SHA-256
of its text, with the text itself beside it (``_odd``). The fields few keys
have (another subject, scopes, limits, metadata) are kept per key only when
set (``_extra``); admin keys, few and holding their own JWK bytes, are kept
whole (``_admin``). ``get`` builds a ``PublishedKey`` on each call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .keycache import PublishedKey

_KID_BYTES = 32
_NO_TIME, _WIDE_NO_TIME = 2**32 - 1, -(2**63)  # removed_at: none (in 32 bits, widened)
_KINDS = ("", "api", "pending")  # index 0: a free slot
_CREDITS, _ROLLING = 4, 8  # flag bits above the kind
_EMPTY = -1  # a free hash table entry
_FREE = 0  # the profile of a free slot
_WIDER = {"H": "I", "I": "q"}
_FITS = {"H": 0xFFFF, "I": _NO_TIME - 1}  # the largest value a narrow column holds


def _kid_digest(kid: str) -> tuple[bytes, bool]:
    """(32 bytes naming ``kid``, whether they are its thumbprint decoded)."""
    if len(kid) == 43:
        try:
            raw = base64.urlsafe_b64decode(kid + "=")
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == _KID_BYTES and base64.urlsafe_b64encode(raw)[:43] == kid.encode("ascii", "replace"):
            return raw, True
    return hashlib.sha256(kid.encode("utf-8", "surrogatepass")).digest(), False


class KeyTable:
    """kid -> ``PublishedKey`` for one tenant, as a mapping (``get``, ``in``,
    ``[]``, ``values``, ``len``): see the module docstring."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self._kids = bytearray()  # _KID_BYTES per slot
        self._odd: dict[int, str] = {}  # slot -> kid that is not a thumbprint
        self._profile = array("H")  # index into _profiles; _FREE: a free slot
        # (kind index | _CREDITS | _ROLLING, prefix, shard); the free slot's first
        self._profiles: list[tuple[int, str, int | None]] = [(0, "", None)]
        self._profile_index: dict[tuple[int, str, int | None], int] = {}
        self._published_at = array("I")  # seconds; widened to "q" if one does not fit
        self._removed_at = array("I")  # seconds, widened likewise
        self._no_time = _NO_TIME  # what _removed_at holds for none: _WIDE_NO_TIME once widened
        self._extra: dict[int, tuple[str | None, tuple[str, ...], tuple[dict[str, int], ...],
                                     dict[str, Any] | None]] = {}  # slot -> (subject, scopes, limits, metadata)
        self._free: list[int] = []
        self._table = array("i", [_EMPTY]) * 8  # slots, by hash; a power of two, at most 3/4 full
        self._count = 0
        self._admin: dict[str, PublishedKey] = {}

    # --- the hash table ---------------------------------------------------------

    def _probe(self, digest: bytes) -> tuple[int, int]:
        """(table position, slot) of ``digest``, or (the free position it would take, -1)."""
        mask = len(self._table) - 1
        pos = int.from_bytes(digest[:8], "little") & mask
        kids, table = self._kids, self._table
        while True:
            slot = table[pos]
            if slot == _EMPTY:
                return pos, -1
            if kids[slot * _KID_BYTES:(slot + 1) * _KID_BYTES] == digest:
                return pos, slot
            pos = (pos + 1) & mask

    def _slot(self, kid: str) -> int:
        return self._probe(_kid_digest(kid)[0])[1]

    def _grow(self) -> None:
        table = self._table = array("i", [_EMPTY]) * (len(self._table) * 2)
        mask = len(table) - 1
        for slot in range(len(self._profile)):
            if self._profile[slot] != _FREE:
                pos = int.from_bytes(self._kids[slot * _KID_BYTES:slot * _KID_BYTES + 8], "little") & mask
                while table[pos] != _EMPTY:
                    pos = (pos + 1) & mask
                table[pos] = slot

    def _unlink(self, pos: int) -> None:
        """Empty table position ``pos`` and shift back the entries after it
        (linear probing without tombstones)."""
        table, mask = self._table, len(self._table) - 1
        table[pos] = _EMPTY
        nxt = (pos + 1) & mask
        while (slot := table[nxt]) != _EMPTY:
            home = int.from_bytes(self._kids[slot * _KID_BYTES:slot * _KID_BYTES + 8], "little") & mask
            # move it into the hole unless its home lies (cyclically) in (pos, nxt]
            if (nxt - home) & mask >= (nxt - pos) & mask:
                table[pos], table[nxt] = slot, _EMPTY
                pos = nxt
            nxt = (nxt + 1) & mask

    # --- records ----------------------------------------------------------------

    def _profile_of(self, key: PublishedKey) -> int:
        profile = (_KINDS.index(key.kind) | (_CREDITS if key.has_credits else 0)
                   | (_ROLLING if key.rolling else 0), key.prefix, key.shard)
        index = self._profile_index.get(profile)
        if index is None:
            index = self._profile_index[profile] = len(self._profiles)
            self._profiles.append(profile)
        return index

    def _store(self, column: str, slot: int, value: int | None) -> None:
        """``self.<column>[slot] = value`` (None: no removal time), widening the
        column first if it does not fit: once, for good, as rare as such values are."""
        values: array[int] = getattr(self, column)
        if value is None:
            value = self._no_time
        elif values.typecode in _FITS and not 0 <= value <= _FITS[values.typecode]:
            if column == "_removed_at":
                values = array("q", [_WIDE_NO_TIME if v == _NO_TIME else v for v in values])
                self._no_time = _WIDE_NO_TIME
            else:
                values = array(_WIDER[values.typecode], values)
            setattr(self, column, values)
        values[slot] = value

    def _kid_at(self, slot: int) -> str:
        odd = self._odd.get(slot)
        if odd is not None:
            return odd
        raw = self._kids[slot * _KID_BYTES:(slot + 1) * _KID_BYTES]
        return base64.urlsafe_b64encode(raw)[:43].decode("ascii")

    def _key_at(self, slot: int, kid: str | None = None) -> PublishedKey:
        from .keycache import PublishedKey

        kid = self._kid_at(slot) if kid is None else kid
        flags, prefix, shard = self._profiles[self._profile[slot]]
        subject, scopes, limits, metadata = self._extra.get(slot, (None, (), (), None))
        removed_at = self._removed_at[slot]
        return PublishedKey(
            kid, self.tenant_id, _KINDS[flags & 3], kid if subject is None else subject, scopes, limits,
            None if removed_at == self._no_time else removed_at, shard, metadata, None, prefix,
            self._published_at[slot], bool(flags & _CREDITS), bool(flags & _ROLLING))

    def put(self, key: PublishedKey) -> int:
        """Add or replace ``key`` (an admin key is kept whole). Returns its
        slot (for ``due``), -1 for an admin key."""
        if key.kind == "admin":
            self.pop(key.kid)
            self._admin[key.kid] = key
            return -1
        self._admin.pop(key.kid, None)
        digest, thumbprint = _kid_digest(key.kid)
        pos, slot = self._probe(digest)
        if slot < 0:
            slot = self._new_slot(pos, digest, key.kid if not thumbprint else None)
        self._fill(slot, key)
        return slot

    def add(self, key: PublishedKey) -> int:
        """Add ``key``, not an admin key, if its kid is not here (one probe:
        a bulk load's ``put``). Returns its slot, or -1 (nothing changed) if
        the kid is here."""
        assert key.kind != "admin"
        if key.kid in self._admin:
            return -1
        digest, thumbprint = _kid_digest(key.kid)
        pos, slot = self._probe(digest)
        if slot >= 0:
            return -1
        slot = self._new_slot(pos, digest, key.kid if not thumbprint else None)
        self._fill(slot, key)
        return slot

    def _new_slot(self, pos: int, digest: bytes, odd_kid: str | None) -> int:
        """A slot for a kid not here, whose probe ended at ``pos``."""
        if (self._count + 1) * 4 > len(self._table) * 3:
            self._grow()
            pos = self._probe(digest)[0]
        if self._free:
            slot = self._free.pop()
            self._kids[slot * _KID_BYTES:(slot + 1) * _KID_BYTES] = digest
        else:
            slot = len(self._profile)
            self._kids += digest
            self._profile.append(_FREE)
            self._published_at.append(0)
            self._removed_at.append(self._no_time)
        self._table[pos] = slot
        self._count += 1
        if odd_kid is not None:
            self._odd[slot] = odd_kid
        return slot

    def _fill(self, slot: int, key: PublishedKey) -> None:
        self._store("_profile", slot, self._profile_of(key))
        self._store("_published_at", slot, int(key.published_at))
        self._store("_removed_at", slot, None if key.removed_at is None else int(key.removed_at))
        subject = None if key.subject == key.kid else key.subject
        if subject is None and not key.scopes and not key.rate_limits and key.metadata is None:
            self._extra.pop(slot, None)
        else:
            self._extra[slot] = (subject, key.scopes, key.rate_limits, key.metadata)

    def pop(self, kid: str) -> PublishedKey | None:
        admin = self._admin.pop(kid, None)
        if admin is not None:
            return admin
        pos, slot = self._probe(_kid_digest(kid)[0])
        if slot < 0:
            return None
        key = self._key_at(slot, kid)
        self._unlink(pos)
        self._profile[slot] = _FREE
        self._odd.pop(slot, None)
        self._extra.pop(slot, None)
        self._free.append(slot)
        self._count -= 1
        return key

    # --- the mapping ------------------------------------------------------------

    def get(self, kid: str) -> PublishedKey | None:
        admin = self._admin.get(kid)
        if admin is not None:
            return admin
        slot = self._slot(kid)
        return None if slot < 0 else self._key_at(slot, kid)

    def __getitem__(self, kid: str) -> PublishedKey:
        key = self.get(kid)
        if key is None:
            raise KeyError(kid)
        return key

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, str) and (kid in self._admin or self._slot(kid) >= 0)

    def removed_at(self, kid: str) -> int | None:
        """The key's scheduled removal, without building it (``prune``)."""
        admin = self._admin.get(kid)
        if admin is not None:
            return admin.removed_at
        slot = self._slot(kid)
        return None if slot < 0 or self._removed_at[slot] == self._no_time else self._removed_at[slot]

    def due(self, slot: int, at: int) -> str | None:
        """The kid of the key in ``slot`` if its scheduled removal is ``at``
        (a slot freed, or reused by a key leaving at another time: None)."""
        if slot >= len(self._profile) or self._profile[slot] == _FREE or self._removed_at[slot] != at:
            return None
        return self._kid_at(slot)

    def kind(self, kid: str) -> str | None:
        admin = self._admin.get(kid)
        if admin is not None:
            return admin.kind
        slot = self._slot(kid)
        return None if slot < 0 else _KINDS[self._profiles[self._profile[slot]][0] & 3]

    def __len__(self) -> int:
        return self._count + len(self._admin)

    def __iter__(self) -> Iterator[str]:
        yield from list(self._admin)
        yield from [self._kid_at(slot) for slot in range(len(self._profile)) if self._profile[slot] != _FREE]

    def values(self) -> Iterator[PublishedKey]:
        yield from list(self._admin.values())
        yield from [self._key_at(slot) for slot in range(len(self._profile)) if self._profile[slot] != _FREE]

    def count(self, kind: str) -> int:
        if kind == "admin":
            return len(self._admin)
        want = _KINDS.index(kind) if kind in _KINDS[1:] else -1
        return sum(self._profile.count(i) for i, (flags, _, _) in enumerate(self._profiles) if flags & 3 == want)
