"""The servers of these tests run on each event loop `serve` may run
(AUTHSERVER_LOOP): uvloop, the default, and asyncio. The fast path writes to
the socket itself (sendfile, cork, the write deadline), so both must keep it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)
