"""Requests and latency by route template, method and status, for /metrics.

Wraps the whole application (outside routing) so that 404s and 405s for paths
no route matches are counted too, under one ``route="unmatched"`` label: label
values come from the route table and a fixed method list, never from the raw
path, so a scanner cannot grow the number of series.
"""

from __future__ import annotations

import time
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics
from .stagetimes import STATE_KEY, Stages

__all__ = ["with_http_metrics"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def with_http_metrics(app: ASGIApp, metrics: Metrics, clock: Any = time.perf_counter, *,
                      server_timing: bool = False) -> ASGIApp:
    """``server_timing``: answer with the stages a handler marked (authserver.stagetimes)."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = clock()
        status = 500  # what the server sends if the app fails before answering
        stages = None
        if server_timing:
            stages = scope.setdefault("state", {})[STATE_KEY] = Stages(time.perf_counter())

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if stages is not None and stages.marks:
                    stages.mark("respond")
                    message["headers"] = [*message.get("headers", ()), (b"server-timing", stages.header().encode())]
            await send(message)

        try:
            await app(scope, receive, observed_send)
        finally:
            method = scope.get("method", "")
            metrics.http_request(
                scope.get("path_template") or UNMATCHED,  # set by the router when a route matched
                method if method in _METHODS else "other",
                status,
                clock() - started,
            )

    return handler
