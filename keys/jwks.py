"""The JWKS document, kept as pre-serialized JWKs in segments.

Each JWK is serialized once, when added. Keys are served sorted by kid, so the
bytes and the ETag depend only on the set of keys: a restarted process or
another replica serving the same set answers the same ETag (and the same gzip
bytes). With no keys, the sentinel is published, because gateways treat an
empty set as a failed fetch.

A change must not cost a pass over the whole document (43 MiB at 100k RS256
keys: joining it is ~10 ms, hashing ~25 ms, gzip ~1 s). So the sorted keys are
cut into segments, and each segment caches its bytes, their SHA-256, and its
own raw-deflate stream; a change redoes one segment. Segment ends are chosen
by content (a kid whose CRC-32 is 0 modulo ``SEGMENT_KEYS`` ends one, ~64 keys
on average), never by history, so every replica cuts the same set alike.

- ETag: SHA-256 over the segments' digests.
- Chunks: the answer is the list of the segments' bytes (and separators), as a
  server writes it (``writelines``); nothing is joined per change. Each key's
  bytes are held once, in its segment's joined bytes (a bytearray while the
  segment has changes not rendered yet), never as an object of their own (a
  key's bytes are cut out on demand: ``get``). Plus the compressed segments.
  Blocks of ~16 segments keep those lists and CRCs, so a render walks ~100
  blocks at 100k keys, not ~3,000 pieces.
- gzip: ONE gzip member (RFC 1952), whose deflate stream is the segments'
  independently compressed streams, each ended by a sync flush (so each starts
  on a byte boundary with no back-reference before it: the pigz scheme), then
  a final empty block and the trailer, whose CRC-32 is combined from the
  segments' CRCs. Any gzip decoder reads it as a single ordinary member
  (concatenated members, also valid per RFC 1952, are not read past the
  first by every client: readers that stop at the first end-of-stream).
"""

from __future__ import annotations

import base64
import bisect
import ctypes
import ctypes.util
import hashlib
import json
import struct
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ._jwk import public_only

__all__ = ["SEGMENT_KEYS", "JWKSDocument", "RenderedJWKS", "serialize_jwk"]

SEGMENT_KEYS = 64  # average keys per segment (a power of two): ~29 KB of RS256, ~10 KB of EdDSA
BLOCK_SEGMENTS = 16  # average segments per block (bookkeeping only: see _Block)
_GZIP_LEVEL = 6
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS unknown: as gzip.compress(mtime=0)
_FINAL_BLOCK = b"\x03\x00"  # an empty final block with fixed codes


def _deflate(data: bytes) -> bytes:
    """A raw deflate stream of ``data`` ending on a byte boundary, not final."""
    c = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -15, 9)
    return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)


def _load_crc32_combine() -> Callable[[int, int, int], int] | None:
    # zlib has crc32_combine but Python's zlib module does not expose it
    name = ctypes.util.find_library("z")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).crc32_combine
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_ulong, [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long]
    return lambda crc1, crc2, len2: int(fn(crc1, crc2, len2)) & 0xFFFFFFFF


_crc32_combine = _load_crc32_combine()


class _Frozen:
    """One segment's bytes and what is derived from them; never changes."""

    __slots__ = ("body", "size", "digest", "crc", "ends_block", "_deflated")

    def __init__(self, body: bytes, ends_block: bool = False) -> None:
        self.body = body
        self.size = len(body)
        self.ends_block = ends_block
        self.digest = hashlib.sha256(body).digest()
        self.crc = zlib.crc32(body)
        self._deflated: bytes | None = None

    @property
    def deflated(self) -> bytes:
        if self._deflated is None:
            self._deflated = _deflate(self.body)
        return self._deflated


_OPEN, _COMMA, _CLOSE = _Frozen(b'{"keys":['), _Frozen(b","), _Frozen(b"]}")


_KID = b'"kid":"'


def _kid_in(data: bytes | bytearray, start: int, end: int) -> str:
    """The kid of the key whose bytes are ``data[start:end]`` (``serialize_jwk``:
    a flat object whose strings escape every quote, so the first ``"kid":"`` is its kid)."""
    i = data.index(_KID, start, end) + len(_KID)
    k = data.index(b'"', i, end)
    raw = data[i:k]
    if b"\\" in raw:  # an escape in the kid: decode it as JSON does
        kid, _ = json.JSONDecoder().raw_decode(bytes(data[i - 1:end]).decode("ascii"))  # from its quote
        return str(kid)
    return raw.decode("ascii")


class _Segment:
    """Consecutive keys (sorted by kid) and their bytes, joined by commas: in a
    bytearray while open to changes, or in ``frozen`` once rendered (a change
    reopens it: one copy of ~29 KB). ``ends[j]``: where key j's bytes end (a
    comma follows each but the last), so a key's bytes are found without a pass
    over the segment. A key's bytes are held once, and never as an object of
    their own: a bulk load leaves no per-key objects behind to be freed (and
    fragment the heap) when the segments are joined. Nor is its kid: it is read
    back from its bytes (``kid``) when a lookup bisects the segment (~6 reads)."""

    __slots__ = ("ends", "buf", "frozen")

    def __init__(self) -> None:
        self.ends = array("I")
        self.buf: bytearray | None = bytearray()
        self.frozen: _Frozen | None = None

    def __len__(self) -> int:
        return len(self.ends)

    def _data(self) -> bytes | bytearray:
        if self.buf is not None:
            return self.buf
        assert self.frozen is not None
        return self.frozen.body

    def _open(self) -> bytearray:
        if self.buf is None:
            assert self.frozen is not None
            self.buf = bytearray(self.frozen.body)
        self.frozen = None
        return self.buf

    def _span(self, j: int) -> tuple[int, int]:
        return (self.ends[j - 1] + 1 if j else 0), self.ends[j]

    def _shift(self, j: int, by: int) -> None:
        """Move the ends of keys j.. by ``by`` bytes."""
        if by and j < len(self.ends):
            self.ends[j:] = array("I", [e + by for e in self.ends[j:]])

    def kid(self, j: int) -> str:
        return _kid_in(self._data(), *self._span(j))

    def find(self, kid: str, after_last: bool = False) -> tuple[int, bool]:
        """Where ``kid`` is, or would go: (index, found). ``after_last``: try
        the end first (keys added in kid order: one read, not a bisection)."""
        data, ends, n = self._data(), self.ends, len(self.ends)

        def kid_at(j: int) -> str:
            return _kid_in(data, ends[j - 1] + 1 if j else 0, ends[j])

        if after_last and n and kid > kid_at(n - 1):
            return n, False
        j = bisect.bisect_left(range(n), kid, key=kid_at)
        return j, j < n and kid_at(j) == kid

    def kids(self) -> Iterator[str]:
        return map(self.kid, range(len(self.ends)))

    def part(self, j: int) -> bytes:
        start, end = self._span(j)
        if self.buf is not None:
            return bytes(memoryview(self.buf)[start:end])
        assert self.frozen is not None
        return self.frozen.body[start:end]

    def insert(self, j: int, part: bytes) -> None:
        buf = self._open()
        if j == len(self.ends):
            if j:
                buf += b","
            buf += part
            self.ends.append(len(buf))
        else:
            start = self._span(j)[0]
            buf[start:start] = part + b","
            self._shift(j, len(part) + 1)
            self.ends.insert(j, start + len(part))

    def replace(self, j: int, part: bytes) -> None:
        buf = self._open()
        start, end = self._span(j)
        buf[start:end] = part
        self._shift(j, len(part) - (end - start))

    def delete(self, j: int) -> None:
        buf = self._open()
        start, end = self._span(j)
        if len(self.ends) == 1:
            buf.clear()
        elif j + 1 < len(self.ends):  # with the comma after it
            del buf[start:end + 1]
            self._shift(j + 1, start - end - 1)
        else:  # the last: with the comma before it
            del buf[start - 1:end]
        del self.ends[j]

    def split_after(self, j: int) -> _Segment:
        """Move the keys after key j to a new segment (returned)."""
        buf = self._open()
        end = self.ends[j]
        tail = _Segment()
        tail.ends = array("I", [e - end - 1 for e in self.ends[j + 1:]])
        if tail.ends:
            tail.buf = buf[end + 1:]
        del buf[end:], self.ends[j + 1:]
        return tail

    def extend(self, other: _Segment) -> None:
        """Append the keys of ``other`` (which follow ours)."""
        buf = self._open()
        if not other.ends:
            return
        base = 0
        if self.ends:
            buf += b","
            base = len(buf)
        buf += other._data()
        self.ends.extend(array("I", [e + base for e in other.ends]))

    def freeze(self) -> _Frozen:
        if self.frozen is None:
            assert self.buf is not None
            self.frozen = _Frozen(bytes(self.buf), _ends_block(self.kid(len(self.ends) - 1)))
            self.buf = None
        return self.frozen


def _combine(pieces: Iterable[_Frozen | _Block]) -> int:
    crc = 0
    for p in pieces:
        if _crc32_combine is not None:
            crc = _crc32_combine(crc, p.crc, p.size)
        else:  # no libz to call: a CRC pass over the bytes (~9 ms at 43 MiB)
            crc = zlib.crc32(b"".join(p.chunks) if isinstance(p, _Block) else p.body, crc)
    return crc


class _Block:
    """Consecutive segments (~16, cut by content like segments) with their
    separators: the lists of chunks and the combined CRC, reused by the next
    rendering when its segments are the same, so a render touches ~100 blocks
    at 100k keys, not ~3,000 pieces. Holds references, never joined bytes."""

    __slots__ = ("segments", "first", "size", "chunks", "_crc", "_gzip_chunks")

    def __init__(self, segments: list[_Frozen], first: bool) -> None:
        self.segments, self.first = segments, first  # first: it opens the list (no leading comma)
        pieces = self._pieces()
        self.size = sum(p.size for p in pieces)
        self.chunks = [p.body for p in pieces]
        self._crc: int | None = None
        self._gzip_chunks: list[bytes] | None = None

    def _pieces(self) -> list[_Frozen]:
        out: list[_Frozen] = []
        for i, seg in enumerate(self.segments):
            if i or not self.first:
                out.append(_COMMA)
            out.append(seg)
        return out

    @property
    def crc(self) -> int:
        if self._crc is None:
            self._crc = _combine(self._pieces())
        return self._crc

    @property
    def gzip_chunks(self) -> list[bytes]:
        if self._gzip_chunks is None:
            self._gzip_chunks = [p.deflated for p in self._pieces()]
        return self._gzip_chunks


class RenderedJWKS:
    """One rendering: the identity body and its gzip encoding as chunks (the
    segments' own bytes and compressed streams, shared with later renderings:
    nothing is copied per change), or joined (``body``, ``gzipped``: a copy on
    each call, for tests and small documents)."""

    __slots__ = ("etag", "key_count", "size", "_blocks", "_chunks", "_gzip_chunks")

    def __init__(self, blocks: list[_Block], etag: str, key_count: int) -> None:
        self.etag = etag  # strong, quoted: "..."
        self.key_count = key_count  # keys served, sentinel included
        self._blocks = blocks
        self.size = _OPEN.size + sum(b.size for b in blocks) + _CLOSE.size
        chunks = [_OPEN.body]
        for b in blocks:
            chunks += b.chunks
        chunks.append(_CLOSE.body)
        self._chunks = chunks
        self._gzip_chunks: list[bytes] | None = None

    @property
    def chunks(self) -> list[bytes]:
        return self._chunks

    @property
    def gzip_chunks(self) -> list[bytes]:
        """The body as one gzip member; only changed segments are compressed."""
        if self._gzip_chunks is None:
            crc = _combine([_OPEN, *self._blocks, _CLOSE])
            chunks = [_GZIP_HEADER + _OPEN.deflated]
            for b in self._blocks:
                chunks += b.gzip_chunks
            chunks.append(_CLOSE.deflated + _FINAL_BLOCK + struct.pack("<II", crc, self.size & 0xFFFFFFFF))
            self._gzip_chunks = chunks
        return self._gzip_chunks

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    @property
    def gzipped(self) -> bytes:
        return b"".join(self.gzip_chunks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RenderedJWKS):
            return NotImplemented
        return (self.etag, self.key_count) == (other.etag, other.key_count) and self.body == other.body

    def __hash__(self) -> int:
        return hash(self.etag)


def _serialize(jwk: Mapping[str, Any]) -> bytes:
    return json.dumps(public_only(jwk), separators=(",", ":")).encode("ascii")


def serialize_jwk(jwk: Mapping[str, Any]) -> bytes:
    """A published JWK as the document holds it (public members, compact):
    for ``JWKSDocument.add_serialized``, which then holds the only copy a
    caller needs (``JWKSDocument.get``)."""
    if not isinstance(jwk.get("kid"), str) or "alg" not in jwk:
        raise ValueError("every published JWK needs kid and alg")
    return _serialize(jwk)


def _ends_segment(kid: str) -> bool:
    return zlib.crc32(kid.encode()) & (SEGMENT_KEYS - 1) == 0


def _ends_block(kid: str) -> bool:  # a segment end that also ends a block
    return zlib.crc32(kid.encode()) & (SEGMENT_KEYS * BLOCK_SEGMENTS - 1) == 0


class JWKSDocument:
    """``sentinel`` is required: an empty set would make gateways keep their
    old one forever (see keys.sentinel_jwk)."""

    def __init__(self, sentinel: Mapping[str, Any]) -> None:
        # segments in kid order; all but the last end with a kid that _ends_segment,
        # listed in _ends, and hold no other such kid; the last may be empty
        self._segments: list[_Segment] = [_Segment()]
        self._ends: list[str] = []
        self._count = 0
        self._sentinel = _Frozen(_serialize(sentinel))
        self._rendered: RenderedJWKS | None = None
        self._blocks: dict[tuple[int, ...], _Block] = {}

    def _locate(self, kid: str, adding: bool = False) -> tuple[int, _Segment, int, bool]:
        i = bisect.bisect_left(self._ends, kid)
        seg = self._segments[i]
        # a key added after the last (a load in kid order): appended, no bisection
        return i, seg, *seg.find(kid, after_last=adding and i == len(self._ends))

    def add(self, jwk: Mapping[str, Any]) -> None:
        part = serialize_jwk(jwk)  # checks kid and alg first
        self.add_serialized(jwk["kid"], part)

    def add_serialized(self, kid: str, part: bytes) -> None:
        """Add (or replace) a key by its ``serialize_jwk`` bytes; cheapest in
        kid order (``find``)."""
        i, seg, j, found = self._locate(kid, adding=True)
        if found:
            if seg.part(j) == part:
                return
            seg.replace(j, part)
        else:
            seg.insert(j, part)
            self._count += 1
            if _ends_segment(kid):  # split after it
                self._segments.insert(i + 1, seg.split_after(j))
                self._ends.insert(i, kid)
        self._rendered = None

    def remove(self, kid: str) -> bool:
        i, seg, j, found = self._locate(kid)
        if not found:
            return False
        seg.delete(j)
        self._count -= 1
        if i < len(self._ends) and self._ends[i] == kid:  # its segment's end: join the next one
            seg.extend(self._segments.pop(i + 1))
            del self._ends[i]
        self._rendered = None
        return True

    def get(self, kid: str) -> bytes | None:
        """A key's bytes as published (``serialize_jwk``), or None."""
        _, seg, j, found = self._locate(kid)
        return seg.part(j) if found else None

    def compact(self) -> None:
        """Join every changed segment now (``render`` does it too): after a
        bulk load, before the first request."""
        for seg in self._segments:
            if len(seg):
                seg.freeze()

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, str) and self._locate(kid)[3]

    def __len__(self) -> int:
        return self._count

    def kids(self) -> Iterator[str]:
        for seg in self._segments:
            yield from seg.kids()

    @property
    def segment_count(self) -> int:
        return sum(1 for seg in self._segments if len(seg))

    def render(self) -> RenderedJWKS:
        """Cached until the next change; redoes only the segments that changed."""
        if self._rendered is None:
            frozen = [seg.freeze() for seg in self._segments if len(seg)] or [self._sentinel]
            h = hashlib.sha256()
            for f in frozen:  # digest of digests: each key's bytes counted once, in order
                h.update(f.digest)
            etag = '"' + base64.urlsafe_b64encode(h.digest()[:18]).decode("ascii") + '"'
            self._rendered = RenderedJWKS(self._block(frozen), etag, self._count or 1)
        return self._rendered

    def _block(self, frozen: list[_Frozen]) -> list[_Block]:
        """Cut where a segment also ends a block; reuse the previous rendering's
        block when its segments are the very same objects."""
        blocks: list[_Block] = []
        cache: dict[tuple[int, ...], _Block] = {}
        start = 0
        for i, f in enumerate(frozen):
            if i + 1 < len(frozen) and not f.ends_block:
                continue
            members = frozen[start:i + 1]
            key = (start == 0, *map(id, members))  # the cached block holds them: no id is reused meanwhile
            block = self._blocks.get(key) or _Block(members, first=start == 0)
            blocks.append(block)
            cache[key] = block
            start = i + 1
        self._blocks = cache
        return blocks
