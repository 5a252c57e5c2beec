"""Leaked keys reported by GitHub's secret-scanning partner program.

GitHub finds strings matching our published regex (``keys.SECRET_SCANNING_PATTERN``)
in public code and posts them, signed with ECDSA P-256 over the raw body, as
``[{token, type, url, source}]``. We check the signature against GitHub's
published keys, then each token against our own keys: only a token that
verifies, with the strict verifier, against a key we still publish is ours
(``true_positive``); anything else is ``false_positive``. For ours, the
tenant's ``leak_policy`` decides: ``revoke`` (the default) revokes the key
through the lifecycle service, ``notify`` only records it; both record a
``key.leaked`` audit event (url and source, never the token), which the
webhooks turn into deliveries. The answer, ``[{token_hash, token_type,
label}]``, names tokens by their SHA-256 only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import keys

from ..db.models import Tenant
from ..errors import ServiceError, Unauthorized, Unavailable
from ..keycache import KeyCache, TenantKeys, claimed_kid
from .common import Actor, audit_action
from .lifecycle import KeyLifecycle

__all__ = ["LEAK_POLICIES", "GitHubKeys", "LeakReports", "ScanMatch", "fetch_source"]

log = logging.getLogger("authserver.leaks")
LEAK_POLICIES = ("revoke", "notify")
TRUE_POSITIVE, FALSE_POSITIVE = "true_positive", "false_positive"  # GitHub takes only these two
ACTOR_ID = "github-secret-scanning"
# GitHub's key list is a few hundred bytes; refuse to buffer a runaway answer
_MAX_KEYS_DOCUMENT = 1024 * 1024
_MAX_IDENTIFIER = 256
_MAX_DETAIL = 2048  # url and source, as stored in the audit event


class ScanMatch(msgspec.Struct):
    """One match as GitHub sends it (unknown members are ignored)."""

    token: str
    type: str = ""
    url: str = ""
    source: str = ""


class _KeyEntry(msgspec.Struct):
    key_identifier: str
    key: str
    is_current: bool = True


class _KeysDocument(msgspec.Struct):
    public_keys: list[_KeyEntry]


async def fetch_source(source: str) -> bytes:
    """The bytes at ``source``: an http(s) URL, or a file (a path or file://)."""
    if source.startswith(("https://", "http://")):
        def get() -> bytes:
            req = urllib.request.Request(source, headers={"Accept": "application/json",
                                                          "User-Agent": "authserver"})
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (the scheme is checked above)
                body: bytes = resp.read(_MAX_KEYS_DOCUMENT + 1)
            return body
        data = await asyncio.to_thread(get)
    else:
        path = Path(source.removeprefix("file://"))
        data = await asyncio.to_thread(path.read_bytes)
    if len(data) > _MAX_KEYS_DOCUMENT:
        raise ValueError("the key document is too large")
    return data


class GitHubKeys:
    """GitHub's signing keys by identifier, cached; an unknown identifier
    refetches the list, at most once per ``refetch_interval`` seconds (so
    forged identifiers cannot make us hammer GitHub)."""

    def __init__(self, source: str, fetch: Callable[[str], Awaitable[bytes]] = fetch_source,
                 clock: Callable[[], float] = time.monotonic, refetch_interval: float = 60.0) -> None:
        self.source = source
        self.fetch = fetch
        self.clock = clock
        self.refetch_interval = refetch_interval
        self._keys: dict[str, keys.P256PublicKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, identifier: str) -> keys.P256PublicKey | None:
        """The key, or None if GitHub does not publish it. Raises Unavailable
        when the list had to be fetched and could not be."""
        if not identifier or len(identifier) > _MAX_IDENTIFIER:
            return None
        key = self._keys.get(identifier)
        if key is not None:
            return key
        async with self._lock:  # concurrent unknown identifiers: one fetch
            key = self._keys.get(identifier)
            if key is None and self._may_fetch():
                await self._refresh()
                key = self._keys.get(identifier)
        return key

    def _may_fetch(self) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at >= self.refetch_interval

    async def _refresh(self) -> None:
        self._fetched_at = self.clock()  # failures count too: no retry storm
        self.fetches += 1
        try:
            doc = msgspec.json.decode(await self.fetch(self.source), type=_KeysDocument)
        except (OSError, ValueError, msgspec.DecodeError) as exc:  # ValidationError is a DecodeError
            log.warning("secret scanning: could not read GitHub's keys from %s (%s)", self.source,
                        type(exc).__name__)
            raise Unavailable("the secret-scanning signing keys could not be fetched; retry later",
                              retry_after=int(self.refetch_interval)) from None
        fresh: dict[str, keys.P256PublicKey] = {}
        for entry in doc.public_keys:
            try:
                fresh[entry.key_identifier] = keys.P256PublicKey.from_pem(entry.key)
            except ValueError:
                log.warning("secret scanning: skipped key %s (not a P-256 public key)", entry.key_identifier[:80])
        self._keys = fresh


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class LeakReports:
    def __init__(self, cache: KeyCache, sessions: async_sessionmaker[AsyncSession], lifecycle: KeyLifecycle,
                 signers: GitHubKeys, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.sessions = sessions
        self.lifecycle = lifecycle
        self.signers = signers
        self.clock = clock

    async def authenticate(self, body: bytes, key_id: str | None, signature: str | None) -> None:
        """401 unless ``signature`` signs ``body`` with the GitHub key ``key_id``."""
        if not key_id or not signature:
            raise Unauthorized("missing Github-Public-Key-Identifier or Github-Public-Key-Signature")
        key = await self.signers.get(key_id)
        if key is None or not key.verify(body, signature):
            raise Unauthorized("the report's signature does not verify")

    async def report(self, body: bytes, key_id: str | None, signature: str | None,
                     remote_addr: str | None = None) -> list[dict[str, str]]:
        """Authenticate a report, act on each of our keys in it, and answer per match."""
        await self.authenticate(body, key_id, signature)
        try:
            matches = msgspec.json.decode(body, type=list[ScanMatch])
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            # never echo the decoder's message: it could quote a token
            raise ServiceError("the report is not a JSON array of {token, type, url, source}") from None
        actor = Actor(ACTOR_ID, remote_addr)
        labels: dict[str, str] = {}  # a token twice in one report: judged (and revoked) once
        answer = []
        for m in matches:
            digest = token_hash(m.token)
            if digest not in labels:
                labels[digest] = await self._judge(m, actor)
            answer.append({"token_hash": digest, "token_type": m.type, "label": labels[digest]})
        return answer

    async def _judge(self, m: ScanMatch, actor: Actor) -> str:
        if not keys.is_key_string(m.token):
            return FALSE_POSITIVE
        ours = self._verify(m.token)
        if ours is None:
            return FALSE_POSITIVE
        tenant_id, kid, kind = ours
        policy = await self._policy(tenant_id)
        details: dict[str, Any] = {"url": m.url[:_MAX_DETAIL], "source": m.source[:_MAX_DETAIL],
                                   "type": m.type[:_MAX_DETAIL], "policy": policy}
        # the event first: if the revocation then fails, GitHub retries and we
        # revoke then (a duplicate event, never a lost one)
        await self.lifecycle.record(tenant_id, actor, audit_action(kind, "leaked"), kid, details)
        if policy == "revoke":
            await self.lifecycle.revoke(tenant_id, kid, actor, kind=kind)
        log.warning("leaked %s key %s reported (%s): %s", kind, kid, m.source[:64] or "unknown source",
                    "revoked" if policy == "revoke" else "owner notified only",
                    extra={"tenant": tenant_id, "kid": kid, "action": "key.leaked"})
        return TRUE_POSITIVE

    def _verify(self, token: str) -> tuple[str, str, str] | None:
        """(tenant, kid, kind) if ``token`` verifies as a key we publish now."""
        try:
            kid = claimed_kid(token)
        except keys.KeyCoreError:
            return None
        admin = self.cache.tenant_of_admin_key(kid)
        candidates: list[TenantKeys] = [admin] if admin is not None else [
            tk for tk in self.cache.tenants.values() if kid in tk.api_keys]
        for tk in candidates:
            try:
                verified, published = (tk.verify_admin if admin is not None else tk.verify_api)(token)
            except keys.KeyCoreError:
                continue
            return tk.info.id, verified.kid, published.kind
        return None

    async def _policy(self, tenant_id: str) -> str:
        async with self.sessions() as s:
            row = await s.get(Tenant, tenant_id)
        policy = row.leak_policy if row is not None else None
        return policy if policy in LEAK_POLICIES else "revoke"  # unknown: the safe side

