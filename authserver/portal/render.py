"""Templates, security headers and error pages for the portal."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response
from litestar.enums import ScopeType
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..problems import problem
from .session import AnyRequest

log = logging.getLogger("authserver.portal")

PACKAGE_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
STATIC_PATH = "/portal/static"

# Only our own files: no inline script or style, no third-party origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]
_SECURITY_NAMES = {name for name, _ in SECURITY_HEADERS}


def security_headers(app: ASGIApp) -> ASGIApp:
    """ASGI middleware for the portal routes: adds the headers above to every
    answer, error pages and redirects included."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _SECURITY_NAMES]
                message = {**message, "headers": headers + SECURITY_HEADERS}
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


# The files the static router may serve, fixed when the package is installed.
# Any other path is a 404 before it reaches the file system: a NUL, a name too
# long for it or a path below a file make os.stat raise (a 500 with a traceback).
STATIC_FILES = frozenset(
    f"{STATIC_PATH}/{p.relative_to(STATIC_DIR).as_posix()}" for p in STATIC_DIR.rglob("*") if p.is_file()
)


def only_static_files(app: ASGIApp) -> ASGIApp:
    """ASGI middleware for the static router: only the files in STATIC_FILES.
    Answers the 404 itself (inside security_headers, unlike a raised exception)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"] not in STATIC_FILES:
            missing = problem(404, "not_found", "No such file.")
            await missing.to_asgi_response(None, Request(scope))(scope, receive, send)
            return
        await app(scope, receive, send)

    return middleware


# --- template filters -------------------------------------------------------

def _utc(ts: float | None, fmt: str, empty: str) -> str:
    return empty if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt)


def fmt_time(ts: float | None, empty: str = "—") -> str:
    return _utc(ts, "%Y-%m-%d %H:%M UTC", empty)


def short_time(ts: float | None, empty: str = "—") -> str:
    """For tables whose header says UTC."""
    return _utc(ts, "%Y-%m-%d %H:%M", empty)


def iso_time(ts: float | None) -> str:
    return _utc(ts, "%Y-%m-%dT%H:%M:%SZ", "")


def day(ts: float | None) -> str:
    return _utc(ts, "%Y-%m-%d", "")


def exact_time(ts: float | None) -> str:
    return _utc(ts, "%Y-%m-%d %H:%M:%S UTC", "")


def ago(ts: float | None, now: float, empty: str = "never") -> str:
    """How long before ``now``, in the largest whole unit ("3 hours ago")."""
    if ts is None:
        return empty
    s = int(now - ts)
    if s < 60:
        return "just now"  # also a gateway clock slightly ahead of ours
    for unit, n in (("year", 365 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n:
            v = s // n
            return f"{v} {unit}{'s' if v != 1 else ''} ago"
    return "just now"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n and s % n == 0:
            v = s // n
            return f"{v} {unit}{'s' if v != 1 else ''}"
    if s >= 3600:
        return f"{s / 3600:.1f} hours"
    return f"{s} second{'s' if s != 1 else ''}"


def short_id(value: str | None, n: int = 12) -> str:
    if not value:
        return ""
    return value if len(value) <= n else value[:n] + "…"


def _setup(engine: JinjaTemplateEngine) -> None:
    env = engine.engine
    env.filters.update(time=fmt_time, stime=short_time, isotime=iso_time, xtime=exact_time, day=day, ago=ago,
                       duration=fmt_duration, short=short_id)
    env.globals.update(version=__version__, static=STATIC_PATH)
    env.trim_blocks = True
    env.lstrip_blocks = True


# Litestar's Jinja engine. It is rendered here rather than through the app's
# template_config so the portal stays self-contained (create_app only
# registers ROUTES).
TEMPLATE_CONFIG = TemplateConfig(directory=TEMPLATES_DIR, engine=JinjaTemplateEngine, engine_callback=_setup)


def render(template: str, context: dict[str, Any]) -> str:
    return TEMPLATE_CONFIG.engine_instance.get_template(template).render(**context)


def page(template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> Response[str]:
    """An HTML page. Never cached: pages show tenant data, some show a key once."""
    html = render(template, context)
    return Response(
        html, status_code=status, media_type=MediaType.HTML,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})},
    )


def error_page(request: AnyRequest, status: int, title: str, detail: str, headers: dict[str, str] | None = None,
               **context: Any) -> Response[str]:
    return page("error.html", status, headers, title=title, detail=detail, code=status, **context)
