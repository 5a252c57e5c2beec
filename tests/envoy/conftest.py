"""Fixtures for the Envoy integration tests (helpers in envoy_stack.py)."""

from __future__ import annotations

import pytest
from envoy_stack import Stack, need_envoy


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    return need_envoy()


@pytest.fixture(scope="module")
def make_stack(tmp_path_factory, envoy_binary):
    """A factory so each test module describes what it mints before the start."""
    made: list[Stack] = []

    def make(plan, **options) -> Stack:
        stack = Stack(tmp_path_factory.mktemp("envoy-stack"), envoy_binary, **options)
        made.append(stack)
        stack.setup(plan)
        return stack.start()

    yield make
    for s in made:
        s.close()




@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the item (tests print process logs on failure)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
