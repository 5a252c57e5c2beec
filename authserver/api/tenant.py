"""The admin key's own tenant: ``/v1/tenant/leak-policy``, what a secret
scanner's report of a leaked key does (services/leaks.py); the same service as
``authserver tenant leak-policy``. Reading needs ``keys:read``, changing it
``keys:write`` (like the webhook settings).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from ..auth import READ, WRITE, Admin, provide_admin, requires
from ..schemas import LeakPolicyBody
from . import docs
from .deps import core_of, json_body

__all__ = ["TenantController"]

AnyRequest = Request[Any, Any, Any]


class TenantController(Controller):
    path = "/v1/tenant"
    tags = ["tenant"]
    dependencies = {"admin": provide_admin}

    @get("/leak-policy", guards=[requires(READ)], **docs.op("leak_policy"))
    async def get_leak_policy(self, request: AnyRequest, admin: NamedDependency[Admin]) -> dict[str, Any]:
        """``revoke``: a leaked key is revoked at once; ``notify``: it stays valid, key.leaked is recorded."""
        policy = await core_of(request).tenants.leak_policy(admin.tenant_id)
        return {"tenant": admin.tenant_id, "leak_policy": policy}

    @put("/leak-policy", guards=[json_body(LeakPolicyBody), requires(WRITE)], **docs.op("set_leak_policy"))
    async def put_leak_policy(self, request: AnyRequest, admin: NamedDependency[Admin],
                              data: JSONBody[LeakPolicyBody]) -> dict[str, Any]:
        """Set ``leak_policy`` (``revoke`` or ``notify``; anything else is a 422) for the tenant (audited)."""
        body: LeakPolicyBody = request.state.body
        policy = await core_of(request).tenants.set_leak_policy(admin.tenant_id, body.leak_policy, admin.actor)
        return {"tenant": admin.tenant_id, "leak_policy": policy}
