"""Rate limits shared by every API key of one subject: /v1/subjects/{subject}/limits.

Thin, like the key routes: guards decode and authenticate, the handler makes
one call on ``core.subjects`` (services.subjects).

Any subject is addressable, "/" included: the subject is one percent-encoded
path segment (``org%2Fteam``). Routing splits the *decoded* path on "/", so
``with_addressable_subjects`` (outside routing) re-encodes the segment from the
raw path, and the handlers decode it (``_subject``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote, unquote, unquote_to_bytes

from litestar import Controller, Request, delete, get, put
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.params import JSONBody, PathParameter
from litestar.types import ASGIApp, Receive, Scope, Send

from ..auth import READ, WRITE, Admin, provide_admin, requires
from ..errors import ServiceError
from ..schemas import SUBJECT_MAX_LENGTH, TEXT_PATTERN, SubjectLimitsBody
from . import docs
from .deps import core_of, json_body

__all__ = ["SubjectsController", "with_addressable_subjects"]

AnyRequest = Request[Any, Any, Any]
SubjectParam = Annotated[str, PathParameter(
    min_length=1, description="The subject, percent-encoded as one path segment: `/` as `%2F`, `%` as `%25` "
                              f"(decoded: 1 to {SUBJECT_MAX_LENGTH} characters, no control characters)")]
_PREFIX, _SUFFIX = "/v1/subjects/", "/limits"
_TEXT = re.compile(TEXT_PATTERN)


def with_addressable_subjects(app: ASGIApp) -> ASGIApp:
    """ASGI wrapper, outside routing: on /v1/subjects/..., the path's subject
    segment becomes its canonical percent-encoding, taken from the raw path (where
    ``%2F`` is still not a "/"), so a subject with "/" reaches its route as one
    segment. A server without ``raw_path`` gets the same for an unencoded "/"."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            base = root if root and path.startswith(root) else ""
            if path.startswith(_PREFIX, len(base)):
                raw = scope.get("raw_path")
                start = (base + _PREFIX).encode()
                if raw is not None and raw.startswith(start):
                    tail = raw[len(start):]
                else:  # already decoded: encode it again, "/" as a separator
                    tail = quote(path[len(base) + len(_PREFIX):], safe="/").encode()
                suffix = _SUFFIX.encode()
                # only a literal "/limits" ends the segment: "a%2Flimits" is the subject "a/limits"
                ends = tail.endswith(suffix) and tail != suffix
                segment, end = (tail[:-len(suffix)], _SUFFIX) if ends else (tail, "")
                scope["path"] = base + _PREFIX + quote(unquote_to_bytes(segment), safe="") + end
        await app(scope, receive, send)

    return handler


def _subject(segment: str) -> str:
    """The path segment as the subject it names; 400 for one that cannot be a subject."""
    try:
        subject = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        subject = ""
    if not 1 <= len(subject) <= SUBJECT_MAX_LENGTH or not _TEXT.match(subject):
        raise ServiceError(f"The subject must be 1 to {SUBJECT_MAX_LENGTH} characters without control characters, "
                           "percent-encoded as one path segment (\"/\" as %2F).")
    return subject


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
        view = await core_of(request).subjects.set(admin.tenant_id, _subject(subject), body.rate_limits, admin.actor)
        return view.as_dict()

    @get("/{subject:str}/limits", guards=[requires(READ)], **docs.op("get_subject_limits"))
    async def get_limits(self, request: AnyRequest, admin: NamedDependency[Admin],
                         subject: SubjectParam) -> dict[str, Any]:
        """The rate limits all API keys of ``subject`` share (404: none)."""
        return (await core_of(request).subjects.get(admin.tenant_id, _subject(subject))).as_dict()

    @delete("/{subject:str}/limits", status_code=200, guards=[requires(WRITE)], **docs.op("delete_subject_limits"))
    async def delete_limits(self, request: AnyRequest, admin: NamedDependency[Admin],
                            subject: SubjectParam) -> dict[str, Any]:
        """Remove the subject's shared limits (its keys' own limits stay)."""
        return (await core_of(request).subjects.clear(admin.tenant_id, _subject(subject), admin.actor)).as_dict()
