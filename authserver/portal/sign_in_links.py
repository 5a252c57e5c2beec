"""A consumer portal sign-in link made from the admin portal: the same service
(and rules, audit event, ``keys:write``) as ``POST /v1/portal/sessions``, with
the default policy and lifetime. For an administrator helping a customer: the
link is shown once, to send on.

    POST /portal/sign-in-links     subject → the one-time URL, shown once (keys:write)
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response, post
from litestar.di import NamedDependency

from ..auth import WRITE
from ..errors import InvalidInput
from ..schemas import SUBJECT_MAX_LENGTH, PortalSessionRequest
from ..services.consumers import ConsumerPortal
from .keypages import SECRET_PAGE_HEADERS
from .views import DEPENDENCIES, Posted, signed_in_with

__all__ = ["HANDLERS"]

CAN_WRITE = [signed_in_with(WRITE)]


@post("/sign-in-links", status_code=201, guards=CAN_WRITE, dependencies=DEPENDENCIES)
async def sign_in_link_create(posted: NamedDependency[Posted],
                              consumers: NamedDependency[ConsumerPortal]) -> Response[Any]:
    ctx = posted.ctx
    subject = posted.form.get("subject")
    try:
        spec = msgspec.convert({"subject": subject}, PortalSessionRequest)
    except msgspec.ValidationError:
        raise InvalidInput(f"A subject is 1 to {SUBJECT_MAX_LENGTH} characters without control characters.") from None
    url, expires_at = await consumers.create_sign_in(ctx.tenant_id, spec, ctx.admin.actor)
    return await ctx.page("sign_in_link.html", 201, nav="keys", headers=SECRET_PAGE_HEADERS,
                          title="Consumer sign-in link", subject=spec.subject, url=url, expires_at=expires_at,
                          policy=spec.policy)


HANDLERS = [sign_in_link_create]
