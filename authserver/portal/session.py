"""Portal sessions and CSRF tokens.

A session lives server-side in a Litestar store (the app's store registry,
name ``STORE_NAME``: portal/store.py, on the database, so every replica and
worker knows every session). It holds only the admin key's id (kid), the
tenant, a CSRF token and small bookkeeping: never the admin key itself, never
an API key. The browser gets a random session id in a cookie that is HttpOnly,
SameSite=Strict, and Secure when the public URL is https.

We do not use Litestar's ``ServerSideSessionConfig`` middleware: its backend
keeps whatever session id an incoming cookie carries, so a cookie planted
before sign-in would survive it (session fixation). Here sign-in always
starts a new session id and drops the old one.

The session is re-checked on every request: the admin key must still be
published in ``core.cache`` (revoked or expired admin key -> signed out).

A session is of one ``kind``: "admin" (signed in with an admin key) or
"consumer" (a one-time link from ``POST /v1/portal/sessions``: it also holds
the consumer's subject, the producer's policy and the way back, and ``kid`` is
the admin key that asked for the link). Admin pages refuse consumer sessions
and the consumer pages (portal/consumer.py) admin ones.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from litestar import Request
from litestar.datastructures import Cookie
from litestar.stores.base import Store

STORE_NAME = "authserver-portal-sessions"
IDLE_SECONDS = 30 * 60  # signed out after 30 minutes without a request
MAX_SECONDS = 12 * 3600  # and at the latest 12 hours after signing in
LOGIN_CSRF_SECONDS = 2 * 3600
MAX_FORM_NONCES = 16

# Signs the pre-sign-in CSRF token (double-submit cookie) unless the settings
# give a portal_secret shared by the replicas (`serve --workers` makes one for its
# workers). Never in the database: a dump must not let anyone forge a token.
_PROCESS_SECRET = secrets.token_bytes(32)

# the portal neither authenticates through Litestar nor keeps request state
AnyRequest: TypeAlias = Request[Any, Any, Any]


def is_https(request: AnyRequest) -> bool:
    from ..api.deps import core_of

    return core_of(request).settings.base_url.startswith("https://")


def cookie_name(secure: bool) -> str:
    # __Host-: only over https, path /, no Domain: a sibling subdomain cannot set it.
    return "__Host-authserver_portal" if secure else "authserver_portal"


def login_cookie_name(secure: bool) -> str:
    return "__Host-authserver_portal_signin" if secure else "authserver_portal_signin"


def _store(request: AnyRequest) -> Store:
    return request.app.stores.get(STORE_NAME)


def _store_key(session_id: str) -> str:
    # the store never holds a usable cookie value
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class PortalSession:
    id: str
    tenant: str
    kid: str
    csrf: str
    created: float
    flash: list[tuple[str, str]] = field(default_factory=list)
    forms: list[str] = field(default_factory=list)  # one-time form nonces (mint)
    dirty: bool = False
    kind: str = "admin"  # or "consumer"
    subject: str | None = None  # consumer sessions: whose keys
    policy: dict[str, Any] | None = None  # consumer sessions: schemas.ConsumerPolicy as builtins
    return_url: str | None = None  # consumer sessions: the producer's page to go back to

    def to_json(self) -> bytes:
        return json.dumps({
            "tenant": self.tenant, "kid": self.kid, "csrf": self.csrf, "created": self.created,
            "flash": self.flash, "forms": self.forms, "kind": self.kind, "subject": self.subject,
            "policy": self.policy, "return_url": self.return_url,
        }).encode()

    @classmethod
    def from_json(cls, session_id: str, raw: bytes) -> PortalSession | None:
        try:
            d = json.loads(raw)
            kind = str(d.get("kind", "admin"))
            subject, policy, return_url = d.get("subject"), d.get("policy"), d.get("return_url")
            if kind not in ("admin", "consumer") or (kind == "consumer" and (
                    not isinstance(subject, str) or not isinstance(policy, dict))):
                return None
            return cls(session_id, str(d["tenant"]), str(d["kid"]), str(d["csrf"]), float(d["created"]),
                       [(str(kind), str(message)) for kind, message in d.get("flash", [])],
                       [str(nonce) for nonce in d.get("forms", [])], kind=kind, subject=subject, policy=policy,
                       return_url=return_url if isinstance(return_url, str) else None)
        except (ValueError, KeyError, TypeError):
            return None

    def check_csrf(self, token: Any) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.csrf.encode())

    def add_flash(self, kind: str, message: str) -> None:
        self.flash.append((kind, message))
        self.flash = self.flash[-5:]
        self.dirty = True

    def pop_flash(self) -> list[tuple[str, str]]:
        out, self.flash = self.flash, []
        if out:
            self.dirty = True
        return out

    def new_form_nonce(self) -> str:
        nonce = secrets.token_urlsafe(16)
        self.forms = [*self.forms[-(MAX_FORM_NONCES - 1):], nonce]
        self.dirty = True
        return nonce

    def use_form_nonce(self, nonce: Any) -> bool:
        if not isinstance(nonce, str) or nonce not in self.forms:
            return False
        self.forms.remove(nonce)
        self.dirty = True
        return True


async def load(request: AnyRequest) -> PortalSession | None:
    session_id = request.cookies.get(cookie_name(is_https(request)))
    if not session_id or len(session_id) > 128:
        return None
    raw = await _store(request).get(_store_key(session_id), renew_for=IDLE_SECONDS)
    if raw is None:
        return None
    session = PortalSession.from_json(session_id, raw)
    if session is None or time.time() - session.created > MAX_SECONDS:
        await destroy(request, session_id)
        return None
    return session


async def save(request: AnyRequest, session: PortalSession) -> None:
    await _store(request).set(_store_key(session.id), session.to_json(), expires_in=IDLE_SECONDS)
    session.dirty = False


async def create(request: AnyRequest, tenant: str, kid: str, *, kind: str = "admin", subject: str | None = None,
                 policy: dict[str, Any] | None = None, return_url: str | None = None) -> PortalSession:
    """A new session after sign-in: always a fresh id; any previous one is dropped."""
    store = _store(request)
    old = request.cookies.get(cookie_name(is_https(request)))
    if old:
        await store.delete(_store_key(old))
    if hasattr(store, "delete_expired"):
        await store.delete_expired()  # keep the in-memory store small
    session = PortalSession(secrets.token_urlsafe(32), tenant, kid, secrets.token_urlsafe(32), time.time(),
                            kind=kind, subject=subject, policy=policy, return_url=return_url)
    await save(request, session)
    return session


async def destroy(request: AnyRequest, session_id: str | None = None) -> None:
    session_id = session_id or request.cookies.get(cookie_name(is_https(request)))
    if session_id:
        await _store(request).delete(_store_key(session_id))


def _cookie(key: str, secure: bool, value: str | None, max_age: int) -> Cookie:
    """Host-only, HttpOnly, SameSite=Strict; ``value`` None clears the cookie."""
    if value is None:
        return Cookie(key=key, value="", max_age=0, expires=0, path="/", httponly=True, secure=secure,
                      samesite="strict")
    return Cookie(key=key, value=value, max_age=max_age, path="/", httponly=True, secure=secure, samesite="strict")


def session_cookie(request: AnyRequest, session: PortalSession | None) -> Cookie:
    secure = is_https(request)
    return _cookie(cookie_name(secure), secure, None if session is None else session.id, MAX_SECONDS)


# --- sign-in form CSRF (no session yet): a signed double-submit cookie -------

def _sign(request: AnyRequest, nonce: str) -> str:
    from ..api.deps import core_of

    shared = core_of(request).settings.portal_secret
    key = hashlib.sha256(shared.encode()).digest() if shared else _PROCESS_SECRET
    return hmac.new(key, nonce.encode(), hashlib.sha256).hexdigest()[:32]


def new_login_token(request: AnyRequest) -> str:
    nonce = secrets.token_urlsafe(24)
    return f"{nonce}.{_sign(request, nonce)}"


def valid_login_token(request: AnyRequest, token: Any) -> bool:
    if not isinstance(token, str) or len(token) > 128 or "." not in token:
        return False
    nonce, _, sig = token.partition(".")
    return hmac.compare_digest(sig.encode(), _sign(request, nonce).encode())


def login_token_of(request: AnyRequest) -> str | None:
    token = request.cookies.get(login_cookie_name(is_https(request)))
    return token if valid_login_token(request, token) else None


def check_login_csrf(request: AnyRequest, form_token: Any) -> bool:
    cookie_token = login_token_of(request)
    return cookie_token is not None and isinstance(form_token, str) and hmac.compare_digest(
        cookie_token.encode(), form_token.encode()
    )


def login_cookie(request: AnyRequest, token: str | None) -> Cookie:
    secure = is_https(request)
    return _cookie(login_cookie_name(secure), secure, token, LOGIN_CSRF_SECONDS)
