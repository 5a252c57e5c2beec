"""``create_app(settings)``: assemble the Litestar application."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from . import __version__, portal
from .api import admin_keys, docs, management, portal_sessions, public, secret_scanning, subjects, tenant, webhooks
from .api.deps import SERVICES, add_ratelimit_headers
from .api.docspage import DocsPage
from .core import Core
from .httpmetrics import with_http_metrics
from .logs import configure_logging
from .metrics_access import MetricsListener
from .portal.session import STORE_NAME
from .portal.store import DatabaseStore
from .problems import EXCEPTION_HANDLERS
from .settings import Settings


def create_app(settings: Settings | None = None, *, clock: Callable[[], float] = time.time) -> Litestar:
    settings = settings or Settings.from_env()
    configure_logging(settings)
    core = Core.build(settings, clock)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await core.start()
        listener = None
        try:
            if settings.metrics_port:
                listener = MetricsListener(core.metrics.render, settings.metrics_host, settings.metrics_port,
                                           settings.metrics_token)
                await listener.start()
            yield
        finally:
            if listener is not None:
                await listener.stop()
            await core.stop()

    handlers = [*public.ROUTES, *management.ROUTES, *portal_sessions.ROUTES, admin_keys.AdminKeysController,
                subjects.SubjectsController, tenant.TenantController, webhooks.WebhooksController,
                *secret_scanning.ROUTES]
    app = Litestar(
        route_handlers=[*handlers, *portal.ROUTES],  # type: ignore[list-item]  # portal.ROUTES is an untyped list (not ours)
        lifespan=[lifespan],
        dependencies=SERVICES,
        before_send=[add_ratelimit_headers],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="authserver", version=__version__, path="/schema", components=docs.COMPONENTS,
            description="API keys as JWTs that gateways verify offline against the JWKS. Errors are RFC 9457 "
                        "problem details (application/problem+json) with a stable `code`.",
            render_plugins=[DocsPage()], use_handler_docstrings=True,
        ),
        state=State({"core": core}),
        # sessions expire on the wall clock, like session.py's own limits
        stores={STORE_NAME: DatabaseStore(core.sessions)},
        logging_config=None,
        debug=False,
    )
    # outside routing, so unmatched paths are counted too (Litestar's own middleware runs per route)
    handler = public.with_jwks_fast_path(subjects.with_addressable_subjects(app.asgi_handler), core)
    app.asgi_handler = with_http_metrics(handler, core.metrics, server_timing=settings.server_timing)
    return app
