"""Rate limits shared by every API key of one subject: /v1/subjects/{subject}/limits.

Thin, like the key routes: guards decode and authenticate, the handler makes
one call on ``core.subjects`` (services.subjects).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from ..auth import READ, WRITE, Admin, provide_admin, requires
from ..schemas import SUBJECT_MAX_LENGTH, TEXT_PATTERN, SubjectLimitsBody
from . import docs
from .deps import core_of, json_body

__all__ = ["SubjectsController"]

AnyRequest = Request[Any, Any, Any]
SubjectParam = Annotated[str, PathParameter(min_length=1, max_length=SUBJECT_MAX_LENGTH, pattern=TEXT_PATTERN)]


class SubjectsController(Controller):
    path = "/v1/subjects"
    tags = ["subjects"]
    dependencies = {"admin": provide_admin}

    @put("/{subject:str}/limits", guards=[json_body(SubjectLimitsBody), requires(WRITE)],
         **docs.op("put_subject_limits"))
    async def put_limits(self, request: AnyRequest, admin: NamedDependency[Admin], subject: SubjectParam,
                         data: JSONBody[SubjectLimitsBody]) -> dict[str, Any]:
        """Set the rate limits all API keys of ``subject`` share (each key's own
        limits still apply too); gateways count them within a second."""
        body: SubjectLimitsBody = request.state.body
        view = await core_of(request).subjects.set(admin.tenant_id, subject, body.rate_limits, admin.actor)
        return view.as_dict()

    @get("/{subject:str}/limits", guards=[requires(READ)], **docs.op("get_subject_limits"))
    async def get_limits(self, request: AnyRequest, admin: NamedDependency[Admin],
                         subject: SubjectParam) -> dict[str, Any]:
        """The rate limits all API keys of ``subject`` share (404: none)."""
        return (await core_of(request).subjects.get(admin.tenant_id, subject)).as_dict()

    @delete("/{subject:str}/limits", status_code=200, guards=[requires(WRITE)], **docs.op("delete_subject_limits"))
    async def delete_limits(self, request: AnyRequest, admin: NamedDependency[Admin],
                            subject: SubjectParam) -> dict[str, Any]:
        """Remove the subject's shared limits (its keys' own limits stay)."""
        return (await core_of(request).subjects.clear(admin.tenant_id, subject, admin.actor)).as_dict()
