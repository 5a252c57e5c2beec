"""Fixtures for the portal tests (helpers live in portal_helpers)."""

from __future__ import annotations

import pytest
from portal_helpers import Portal


@pytest.fixture
async def portal(client, tenant) -> Portal:
    p = Portal(client)
    await p.login(tenant[1])
    return p
