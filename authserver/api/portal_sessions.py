"""POST /v1/portal/sessions: a one-time consumer portal sign-in link.

The API producer's backend calls it with an admin key that may write keys
(``keys:write``: the consumer gets a part of that power, for one subject and
within the policy) and sends its customer's browser to the ``url``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from ..auth import WRITE, Admin, provide_admin, requires
from ..schemas import PortalSessionRequest
from ..services.consumers import ConsumerPortal
from . import docs
from .deps import json_body

__all__ = ["ROUTES", "create_portal_session"]


@post("/v1/portal/sessions", tags=["portal"], status_code=201, dependencies={"admin": provide_admin},
      guards=[json_body(PortalSessionRequest), requires(WRITE)], **docs.op("create_portal_session"))
async def create_portal_session(request: Request[Any, Any, Any], admin: NamedDependency[Admin],
                                consumers: NamedDependency[ConsumerPortal],
                                data: JSONBody[PortalSessionRequest]) -> Response[Any]:
    """A one-time sign-in URL for a customer (``subject``) to manage their own keys in
    the portal, within ``policy``. It works once, until ``expires_at``."""
    body: PortalSessionRequest = request.state.body
    url, expires_at = await consumers.create_sign_in(admin.tenant_id, body, admin.actor)
    return Response({"url": url, "expires_at": expires_at}, status_code=201, headers={"Cache-Control": "no-store"})


ROUTES = [create_portal_session]
