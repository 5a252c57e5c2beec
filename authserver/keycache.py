"""The in-process view of every published key, per tenant.

Serves the JWKS bytes and verifies admin and API keys without touching the
database. It is rebuilt from the database at start and kept current by:
the local process after each change it commits, change notices from other
replicas (see ``invalidation``), and a reconcile loop that rereads recently
changed rows (which also bounds staleness when notices are lost).
Keys leave at their scheduled time (expiry, end of grace) lazily: every read
prunes what is due first, so no timer has to fire on time.

For gateways that take pushed configuration (``gateways.xds``) each tenant also
keeps what a gateway's cached JWKS may not know yet: keys published within the
push window (``recent``) and keys removed within it (``removed``). Both stay
small whatever the tenant's size: they hold one window of changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import keys
import keys.hazmat
from keys import JWKSDocument, PublicKeySet, VerificationKey, Verifier
from keys.jwks import serialize_jwk

from .db.models import ApiKey, SubjectLimits, Tenant
from .duetimes import DueTimes
from .keytable import KeyTable
from .schemas import ALGORITHM_NAMES

# a key minted on a replica (or by the CLI) whose clock runs ahead must not be
# "issued in the future" here; Envoy allows 60 s too (clock_skew_seconds)
CLOCK_SKEW_SECONDS = 60
# an admin key that verified is trusted this long without its signature being
# checked again (everything that can change is still checked: KeyCache.verify_admin)
ADMIN_RECHECK_SECONDS = 60.0
ADMIN_RECHECK_MAX = 4096


@dataclass(frozen=True, slots=True)
class TenantInfo:
    id: str
    issuer: str
    audience: str
    admin_audience: str
    key_prefix: str
    algorithm: str
    shard_count: int = 1  # 1: one JWKS; more: keys spread over shard JWKS documents

    @classmethod
    def from_row(cls, row: Tenant) -> TenantInfo:
        return cls(row.id, row.issuer, row.audience, row.admin_audience, row.key_prefix, row.algorithm,
                   row.shard_count or 1)

    def shard_prefix(self, shard: int | None) -> str:
        """Keys of shard n carry it in their visible prefix, e.g. sk_live_s3_,
        so a gateway routes each key to exactly one JWKS provider."""
        return self.key_prefix if shard is None else f"{self.key_prefix}s{shard}_"


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """What the cache knows of a key: public data only, and only what serving
    and lookups need. The cache keeps its fields in columns (``keytable``) and
    builds one of these per lookup; no JWK bytes once published (``jwk_bytes``
    None: its JWKS document holds them once, see ``TenantKeys.jwk_bytes``; an
    admin key, in no JWKS, keeps them), no parsed key (``TenantKeys`` parses
    one when a key is verified)."""

    kid: str
    tenant_id: str
    kind: str
    subject: str
    scopes: tuple[str, ...]
    rate_limits: tuple[dict[str, int], ...]
    removed_at: int | None
    shard: int | None
    metadata: dict[str, Any] | None = field(repr=False)  # None: none (most keys)
    jwk_bytes: bytes | None = field(repr=False)  # serialize_jwk; None: held by its JWKS document
    # the exact prefix it was minted with: no other prefix verifies as this key
    # ("" never matches one, so a key built without it fails closed)
    prefix: str = ""
    # when its public key first appeared in a JWKS (gateways learn it one cache period later)
    published_at: int = 0
    has_credits: bool = False  # its calls spend credits (services.credits)
    rolling: bool = False  # rolled: published only until its grace ends (removed_at)

    @classmethod
    def from_row(cls, row: ApiKey, jwk_bytes: bytes | None) -> PublishedKey:
        """``jwk_bytes``: ``serialize_jwk(row.public_jwk)``, or None (see ``jwk_bytes``)."""
        kid = row.id
        return cls(
            kid, sys.intern(row.tenant_id), sys.intern(row.kind),
            kid if row.subject == kid else row.subject,  # the default subject is the key id: one string
            tuple(sys.intern(s) for s in row.scopes), tuple(row.rate_limits or ()), row.removed_at(), row.shard,
            row.meta or None, jwk_bytes, sys.intern(row.prefix),
            row.published_at or row.created_at, row.credits_remaining is not None,
            row.grace_ends_at is not None,
        )

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any], tenant_id: str, kind: str = "api", **fields: Any) -> PublishedKey:
        """A key with no row (benchmarks, tests): ``fields`` as named above."""
        kid = jwk["kid"]
        base: dict[str, Any] = {"subject": kid, "scopes": (), "rate_limits": (), "removed_at": None, "shard": None,
                                "metadata": None}
        return cls(kid=kid, tenant_id=tenant_id, kind=kind, jwk_bytes=serialize_jwk(jwk), **(base | fields))

    @property
    def meta(self) -> dict[str, Any]:
        return {} if self.metadata is None else self.metadata

    @property
    def jwk(self) -> dict[str, Any]:
        """The public JWK, parsed again: for a key not in the cache (or an
        admin key); ``TenantKeys.jwk`` for any key it holds."""
        if self.jwk_bytes is None:
            raise LookupError("its JWK bytes are in its JWKS document: TenantKeys.jwk")
        parsed: dict[str, Any] = json.loads(self.jwk_bytes)
        return parsed


class _ParsedOnDemand:
    """A tenant's API keys as a verifier's lookup, parsed when one is verified.

    A parsed RSA public key costs more memory than its JWKS entry, and the
    server verifies API keys only for introspection and the portal: parsing
    one (~0.05 ms) is cheaper than keeping every one. The last ``size`` keys
    parsed are kept; a key that left (revoked, expired, rolled out) is never
    found, since every lookup checks the published keys first.
    """

    def __init__(self, published: KeyTable, jwk_of: Callable[[PublishedKey], dict[str, Any]],
                 size: int = 1024) -> None:
        self._published = published
        self._jwk_of = jwk_of
        self._size = size
        self._parsed: OrderedDict[str, VerificationKey] = OrderedDict()

    def get(self, kid: str, /) -> VerificationKey | None:
        key = self._published.get(kid)
        if key is None or key.kind != "api":
            return None
        parsed = self._parsed.get(kid)
        if parsed is None:
            # the kid is the JWK's thumbprint (checked here): a kid always names the same key
            parsed = self._parsed[kid] = keys.load_public_jwk(self._jwk_of(key))
            if len(self._parsed) > self._size:
                self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(kid)
        return parsed

    def __contains__(self, kid: str) -> bool:
        return self._published.kind(kid) == "api"

    def forget(self, kid: str) -> None:
        self._parsed.pop(kid, None)


class ServedJWKS:
    """One rendered JWKS (identity and gzip, see keys.JWKSDocument: a change
    recompresses one segment, not the set)."""

    __slots__ = ("rendered", "etag", "key_count", "size", "rendered_at")

    def __init__(self, rendered: keys.RenderedJWKS, rendered_at: float) -> None:
        self.rendered = rendered
        self.etag = rendered.etag
        self.key_count = rendered.key_count
        self.size = rendered.size
        self.rendered_at = rendered_at

    @property
    def body(self) -> bytes:
        return self.rendered.body

    @property
    def gzipped(self) -> bytes:
        return self.rendered.gzipped

    def chunks(self, gzip: bool) -> list[bytes]:
        """The answer as written: a few chunks for a big set, one copy of nothing."""
        return self.rendered.gzip_chunks if gzip else self.rendered.chunks


class TenantKeys:
    def __init__(self, info: TenantInfo, sentinel_jwk: dict[str, Any], clock: Callable[[], float],
                 push_window: float = 0.0, on_change: Callable[[str], None] | None = None,
                 recent_window: float | None = None) -> None:
        self.info = info
        self.clock = clock
        self._sentinel = sentinel_jwk
        # changes a gateway's cached JWKS may not reflect yet (see the module docstring)
        self.push_window = push_window  # for removals
        self.recent_window = push_window if recent_window is None else recent_window
        self.recent: dict[str, PublishedKey] = {}  # kid -> API key published within the window
        self.removed: dict[str, int] = {}  # kid -> when it left, within the window
        # API keys in a roll's grace period -> when they stop working (gateways tell callers)
        self.expiring: dict[str, int] = {}
        self._on_change = on_change
        # None: the tenant's main JWKS (unsharded keys); n: shard n's JWKS
        self.documents: dict[int | None, JWKSDocument] = {None: JWKSDocument(sentinel=sentinel_jwk)}
        self.published = KeyTable(info.id)  # kid -> PublishedKey, in columns
        # subject -> (limit, window seconds) shared by all its API keys; absent: none
        self.subject_limits: dict[str, tuple[tuple[int, int], ...]] = {}
        self.api_keys = _ParsedOnDemand(self.published, self.jwk)
        self.admin_keys = PublicKeySet()  # few: kept parsed
        self._due = DueTimes()  # (removed_at, slot in published): keys due to leave
        self._admin_due: list[tuple[int, str]] = []  # (removed_at, kid) heap: admin keys (no slot)
        self._served: dict[int | None, ServedJWKS] = {}
        self.last_rebuild_seconds = 0.0
        self.api_verifier = Verifier(
            self.api_keys, issuer=info.issuer, audience=info.audience,
            algorithms=ALGORITHM_NAMES, clock=clock, future_leeway=CLOCK_SKEW_SECONDS,
        )
        self.admin_verifier = Verifier(
            self.admin_keys, issuer=info.issuer, audience=info.admin_audience,
            algorithms=ALGORITHM_NAMES, clock=clock, future_leeway=CLOCK_SKEW_SECONDS,
        )

    def verify_api(self, token: str) -> tuple[keys.VerifiedKey, PublishedKey]:
        """Verify an API key as its gateway would, and its exact prefix (tenant
        prefix plus its own shard); raises keys.KeyCoreError."""
        return self._verify(self.api_verifier, token)

    def verify_admin(self, token: str) -> tuple[keys.VerifiedKey, PublishedKey]:
        """Verify an admin key, prefix included (``sk_admin_``); raises keys.KeyCoreError."""
        return self._verify(self.admin_verifier, token)

    def _verify(self, verifier: Verifier, token: str) -> tuple[keys.VerifiedKey, PublishedKey]:
        # a key whose grace ended has no exp to say so: drop what is due first
        self.prune(self.clock())
        verified = verifier.verify(token)
        published = self.published.get(verified.kid)
        if published is None:
            raise keys.UnknownKeyId()
        if verified.prefix != published.prefix:
            raise keys.WrongPrefix()
        return verified, published

    def still_admin(self, verified: keys.VerifiedKey, now: float) -> bool:
        """Whether an admin key verified earlier would verify now: still
        published as an admin key (not revoked, grace not over) and not expired."""
        self.prune(now)
        published = self.published.get(verified.kid)
        exp = verified.claims.get("exp")
        return published is not None and published.kind == "admin" and (exp is None or now < exp)

    def jwk_bytes(self, key: PublishedKey) -> bytes:
        """A key's JWK as published: its own bytes for an admin key, else cut
        from its JWKS document (which holds the only copy)."""
        if key.jwk_bytes is not None:
            return key.jwk_bytes
        doc = self.documents.get(key.shard)
        part = None if doc is None else doc.get(key.kid)
        if part is None:
            raise KeyError(key.kid)
        return part

    def jwk(self, key: PublishedKey) -> dict[str, Any]:
        """The public JWK, parsed again (for the few keys a push carries or a verification needs)."""
        parsed: dict[str, Any] = json.loads(self.jwk_bytes(key))
        return parsed

    def document(self, shard: int | None = None) -> JWKSDocument:
        doc = self.documents.get(shard)
        if doc is None:
            doc = self.documents[shard] = JWKSDocument(sentinel=self._sentinel)
        return doc

    def put(self, key: PublishedKey, part: bytes | None = None) -> bool:
        """Publish, or refresh, a key that is live now. Returns True if it changed.
        ``part``: its JWK bytes when ``key`` comes without (cheaper than a copy
        of ``key`` without them, which is what the cache keeps of any key but
        an admin key: its JWKS document holds the bytes).

        An unchanged key is left alone: re-adding would re-render its JWKS
        (sorted by kid, so the bytes stay the same) for nothing."""
        before = self.published.get(key.kid)
        if part is None:
            part = key.jwk_bytes
        if key.kind != "admin" and key.jwk_bytes is not None:
            key = dataclasses.replace(key, jwk_bytes=None)
        same_jwk = before is not None and (before.kind, before.shard) == (key.kind, key.shard) \
            and (part is None or self.jwk_bytes(before) == part)
        if same_jwk and before == key:
            return False
        if same_jwk:
            assert before is not None
            # the same public key (new limits, name, removal time): the JWKS stays as it is
            slot = self.published.put(key)
            self._note_expiring(key)
            if key.removed_at != before.removed_at:
                self._schedule(key, slot)
            self._changed()
            return True
        if part is None:
            raise ValueError("a new key needs its JWK bytes")
        if before is not None and before.kind == "pending" and key.shard == before.shard:
            # a pre-published key being issued: it keeps its place in the JWKS
            # (same bytes, same ETag), it only becomes verifiable here
            pass
        else:
            if before is not None:
                self.remove(key.kid)
            if key.kind != "admin":
                self.document(key.shard).add_serialized(key.kid, part)
                self._served.pop(key.shard, None)
        if key.kind == "admin":
            self.admin_keys.add(self.jwk(key))
        elif key.kind == "api":
            if key.published_at > self.clock() - self.recent_window:
                self.recent[key.kid] = key
        slot = self.published.put(key)
        self._note_expiring(key)
        self.removed.pop(key.kid, None)
        self._schedule(key, slot)
        self._changed()
        return True

    def load(self, key: PublishedKey, part: bytes) -> bool:
        """``put`` for a bulk load (``KeyCache.apply(loading=True)``): an API
        key new here is added without building the one it would replace (one
        table probe, not three), and loaded in kid order its JWK bytes are
        appended to its document, not bisected into it."""
        if key.kind != "api" or key.jwk_bytes is not None or (slot := self.published.add(key)) < 0:
            return self.put(key, part)
        self.document(key.shard).add_serialized(key.kid, part)
        self._served.pop(key.shard, None)
        if key.published_at > self.clock() - self.recent_window:
            self.recent[key.kid] = key
        self._note_expiring(key)
        self.removed.pop(key.kid, None)
        self._schedule(key, slot)
        self._changed()
        return True

    def _schedule(self, key: PublishedKey, slot: int) -> None:
        """Remember when ``key`` (in ``slot``; -1: an admin key) leaves, if it does."""
        if key.removed_at is None:
            return
        if slot < 0:
            heapq.heappush(self._admin_due, (key.removed_at, key.kid))
        else:
            self._due.push(key.removed_at, slot)

    def _note_expiring(self, key: PublishedKey) -> None:
        if key.kind == "api" and key.rolling and key.removed_at is not None:
            self.expiring[key.kid] = key.removed_at
        else:
            self.expiring.pop(key.kid, None)

    def remove(self, kid: str, at: float | None = None) -> bool:
        key = self.published.pop(kid)
        if key is None:
            return False
        self.expiring.pop(kid, None)
        if key.kind == "admin":
            self.admin_keys.remove(kid)
        else:  # api or pending (pre-published, not yet issued)
            self.api_keys.forget(kid)
            self.document(key.shard).remove(kid)
            self._served.pop(key.shard, None)
            self.recent.pop(kid, None)
            if key.kind == "api":
                self.removed[kid] = int(self.clock() if at is None else at)
        self._changed()
        return True

    def note_removed(self, kid: str, at: int) -> None:
        """A key that left before this cache was built (loaded at start or rebuild)."""
        if kid not in self.published and at > self.clock() - self.push_window:
            self.removed[kid] = at

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.info.id)

    def push_state(self, now: float) -> tuple[list[PublishedKey], dict[str, int]]:
        """What a gateway may not know from its cached JWKS: the keys published
        within the recent window, and the keys removed within the push window
        with their removal times (sorted by kid, so every replica renders the
        same resources). Drops entries that aged out."""
        self.prune(now)
        for kid in [k for k, key in self.recent.items() if key.published_at <= now - self.recent_window]:
            del self.recent[kid]
        horizon = now - self.push_window
        for kid in [k for k, at in self.removed.items() if at <= horizon]:
            del self.removed[kid]
        return sorted(self.recent.values(), key=lambda k: k.kid), dict(sorted(self.removed.items()))

    def expiring_state(self, now: float) -> list[tuple[str, int]]:
        """The keys in a roll's grace period now, with when each stops working, by kid."""
        self.prune(now)
        return sorted(self.expiring.items())

    def prune(self, now: float) -> list[str]:
        gone = []
        while self._admin_due and self._admin_due[0][0] <= now:
            at, kid = heapq.heappop(self._admin_due)
            if kid in self.published and self.published.removed_at(kid) == at:
                self.remove(kid, at)
                gone.append(kid)
        while (first := self._due.first()) is not None and first <= now:
            at, slot = self._due.pop()
            due = self.published.due(slot, at)
            if due is not None:  # else left or rescheduled since: a stale entry
                self.remove(due, at)
                gone.append(due)
        return gone

    def next_removal(self) -> int | None:
        times = [t for t in (self._due.first(), self._admin_due[0][0] if self._admin_due else None) if t is not None]
        return min(times, default=None)

    def has_shard(self, shard: int | None) -> bool:
        return shard is None or 0 <= shard < self.info.shard_count

    def least_loaded_shard(self) -> int | None:
        if self.info.shard_count <= 1:
            return None
        return min(range(self.info.shard_count), key=lambda n: len(self.document(n)))

    def jwks(self, shard: int | None = None) -> ServedJWKS:
        now = self.clock()
        self.prune(now)
        served = self._served.get(shard)
        if served is None:
            t0 = time.perf_counter()
            served = self._served[shard] = ServedJWKS(self.document(shard).render(), now)
            self.last_rebuild_seconds = time.perf_counter() - t0
        return served

    def shard_ids(self) -> list[int | None]:
        return [None, *range(self.info.shard_count)] if self.info.shard_count > 1 else [None]

    def count(self, kind: str = "api") -> int:
        self.prune(self.clock())
        return self.published.count(kind)


def claimed_kid(token: str) -> str:
    """The kid a key string claims, NOT verified: only to pick a verifier or
    explain a failure. Raises keys.KeyCoreError."""
    return keys.hazmat.unverified_kid(token)


class KeyCache:
    def __init__(self, clock: Callable[[], float] = time.time, push_window: float = 0.0,
                 recent_window: float | None = None) -> None:
        """``push_window``: how long removals are kept for pushing to gateways,
        ``recent_window`` publications (default the same; 0: not kept)."""
        self.clock = clock
        self.push_window = push_window
        self.recent_window = push_window if recent_window is None else recent_window
        self.tenants: dict[str, TenantKeys] = {}
        self._admin_index: dict[str, str] = {}  # admin kid -> tenant id
        # sha256(token) -> (tenant, verified admin key, when verified): see verify_admin
        self._verified_admins: dict[bytes, tuple[TenantKeys, keys.VerifiedKey, float]] = {}
        # called with a tenant id after any change to its published keys
        self.listeners: list[Callable[[str], None]] = []

    def _notify(self, tenant_id: str) -> None:
        for listener in self.listeners:
            listener(tenant_id)

    def set_tenant(self, row: Tenant) -> TenantKeys:
        """Add a tenant, or bring a known one's info in line with its row.

        A known tenant keeps its published keys and rendered JWKS: only its
        info (the shard count; shards only ever grow) is swapped. Issuer and
        audiences never change after creation, so its verifiers stay valid.
        """
        existing = self.tenants.get(row.id)
        if existing is not None:
            info = TenantInfo.from_row(row)
            if info != existing.info:
                existing.info = info
                self._notify(row.id)
            return existing
        tk = TenantKeys(TenantInfo.from_row(row), row.sentinel_jwk, self.clock, self.push_window, self._notify,
                        self.recent_window)
        self.tenants[row.id] = tk
        self._notify(row.id)
        return tk

    def get(self, tenant_id: str) -> TenantKeys | None:
        return self.tenants.get(tenant_id)

    def apply(self, row: ApiKey, loading: bool = False) -> bool:
        """Bring the cache in line with one key row. Returns True if it changed.
        ``loading``: one of many rows read by kid (``TenantKeys.load``)."""
        tk = self.tenants.get(row.tenant_id)
        if tk is None:
            return False
        if row.is_published(self.clock()):
            if row.kind == "admin":
                self._admin_index[row.id] = row.tenant_id
            part = serialize_jwk(row.public_jwk)
            key = PublishedKey.from_row(row, part if row.kind == "admin" else None)
            return tk.load(key, part) if loading else tk.put(key, part)
        self._admin_index.pop(row.id, None)
        # at the row's removal time, not ours: every replica files it alike
        return tk.remove(row.id, row.removed_at())

    def apply_subject(self, row: SubjectLimits) -> bool:
        """Bring one subject's shared limits in line with its row (a cleared
        row, ``rate_limits`` None, removes them). Returns True if they changed."""
        tk = self.tenants.get(row.tenant_id)
        if tk is None:
            return False
        limits = tuple((int(r["limit"]), int(r["window_seconds"])) for r in row.rate_limits or ())
        if tk.subject_limits.get(row.subject, ()) == limits:
            return False
        if limits:
            tk.subject_limits[row.subject] = limits
        else:
            tk.subject_limits.pop(row.subject, None)
        return True

    def forget_subject(self, tenant_id: str, subject: str) -> None:
        """A subject whose row is gone (its tenant deleted, or never there)."""
        tk = self.tenants.get(tenant_id)
        if tk is not None:
            tk.subject_limits.pop(subject, None)

    def compact(self) -> None:
        """After a bulk load: every JWKS document joins its keys' bytes now,
        so each key's own bytes object is freed before the first request."""
        for tk in self.tenants.values():
            for doc in tk.documents.values():
                doc.compact()

    def apply_all(self, rows: Iterable[ApiKey]) -> int:
        return sum(1 for row in rows if self.apply(row))

    def tenant_of_admin_key(self, kid: str) -> TenantKeys | None:
        tenant_id = self._admin_index.get(kid)
        return self.tenants.get(tenant_id) if tenant_id else None

    def verify_admin(self, token: str) -> tuple[TenantKeys, keys.VerifiedKey]:
        """Verify a tenant admin key; raises keys.KeyCoreError.

        A token that verified within ADMIN_RECHECK_SECONDS is not verified
        again (the signature check is most of an authentication), but every
        call still checks what can change: the key is still published (a
        revoked or rolled-out admin key fails at once), its exp has not passed,
        the clock has not gone back, and its tenant is the one this cache
        serves. Tokens are kept by their SHA-256 only."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self.clock()
        hit = self._verified_admins.get(digest)
        if hit is not None:
            known, earlier, at = hit
            # (a clock set back re-verifies: iat and nbf held at ``at``, so at any later time)
            if 0 <= now - at < ADMIN_RECHECK_SECONDS and self.tenants.get(known.info.id) is known \
                    and known.still_admin(earlier, now):
                return known, earlier
            del self._verified_admins[digest]
        tenant = self.tenant_of_admin_key(claimed_kid(token))
        if tenant is None:
            raise keys.UnknownKeyId()
        verified, _ = tenant.verify_admin(token)
        if len(self._verified_admins) >= ADMIN_RECHECK_MAX:
            self._verified_admins.clear()  # a burst of distinct tokens: start over rather than grow
        self._verified_admins[digest] = (tenant, verified, now)
        return tenant, verified

    def note_removed(self, row: ApiKey) -> None:
        """A key row that left the JWKS before this cache was built."""
        tk = self.tenants.get(row.tenant_id)
        removed = row.removed_at()
        if tk is not None and removed is not None and row.kind == "api":
            tk.note_removed(row.id, removed)

    def replace_with(self, other: KeyCache) -> None:
        """Swap in a freshly loaded cache at once (never serve a half-built one)."""
        self.tenants, self._admin_index = other.tenants, other._admin_index
        self._verified_admins.clear()
        for tk in self.tenants.values():
            tk._on_change = self._notify
        for tenant_id in self.tenants:
            self._notify(tenant_id)
