"""The developer portal (web pages for people). Routes are registered by create_app.

Everything the portal needs is on its own routers (templates, sessions, CSRF,
security headers, error pages), so ``create_app`` only adds ``ROUTES``.
Sessions are server-side in the app's store registry under
``session.STORE_NAME``: a store on the database (store.py), so every replica
and worker shares them.
"""

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from .admin_keys import HANDLERS as ADMIN_KEY_HANDLERS
from .consumer import CONSUMER_PORTAL
from .render import STATIC_DIR, STATIC_PATH, TEMPLATE_CONFIG, only_static_files, security_headers
from .sign_in_links import HANDLERS as SIGN_IN_LINK_HANDLERS
from .views import EXCEPTION_HANDLERS, HANDLERS
from .webhooks import HANDLERS as WEBHOOK_HANDLERS

__all__ = ["ROUTES", "TEMPLATE_CONFIG"]

PORTAL = Router(
    path="/portal",
    route_handlers=[*HANDLERS, *ADMIN_KEY_HANDLERS, *WEBHOOK_HANDLERS, *SIGN_IN_LINK_HANDLERS],
    middleware=[security_headers],
    exception_handlers=EXCEPTION_HANDLERS,
    include_in_schema=False,
)

STATIC = create_static_files_router(
    path=STATIC_PATH,
    directories=[STATIC_DIR],
    name="portal-static",
    middleware=[security_headers, only_static_files],
    cache_control=CacheControlHeader(max_age=3600, public=True),
    include_in_schema=False,
)

ROUTES: list[Router] = [PORTAL, CONSUMER_PORTAL, STATIC]
