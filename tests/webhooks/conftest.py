from __future__ import annotations

import pytest
from _webhooks import Receiver

import keys.webhooks as wh


@pytest.fixture
def webhook_key() -> str:
    return wh.new_box_key()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def hook_settings(make_settings, webhook_key):
    """Settings with a webhook key and loopback http allowed (the receiver is local)."""

    def make(**overrides):
        base = dict(webhook_key=webhook_key, webhook_allow_http_loopback=True, webhook_retry_base_seconds=10.0,
                    webhook_retry_max_seconds=60.0)
        return make_settings(**(base | overrides))

    return make
