"""Change notices: key notices as before, tenant notices to their own handler,
our own and malformed notices ignored."""

from __future__ import annotations

import json

from authserver.invalidation import Invalidation


def make(seen: list[tuple[str, ...]], with_tenant_handler: bool = True) -> Invalidation:
    async def on_notice(tenant: str, kid: str) -> None:
        seen.append(("key", tenant, kid))

    async def on_tenant(tenant: str) -> None:
        seen.append(("tenant", tenant))

    async def on_subscribed(_: bool) -> None:
        pass

    return Invalidation(None, "ch", "me", on_notice, on_subscribed, lambda: None,  # type: ignore[arg-type]
                        on_tenant_notice=on_tenant if with_tenant_handler else None)


async def test_key_and_tenant_notices_reach_their_handlers() -> None:
    seen: list[tuple[str, ...]] = []
    inv = make(seen)
    await inv._handle(json.dumps({"tenant": "acme", "kid": "k1", "origin": "other"}))
    await inv._handle(json.dumps({"tenant": "acme", "kind": "tenant", "origin": "other"}))
    await inv._handle(json.dumps({"tenant": "acme", "kind": "tenant", "origin": "me"}))  # our own
    for bad in ("not json", "[]", json.dumps({"kid": "k"}), json.dumps({"tenant": "acme"}),
                json.dumps({"tenant": 1, "kind": "tenant"}), json.dumps({"tenant": "a", "kid": 5})):
        await inv._handle(bad)
    assert seen == [("key", "acme", "k1"), ("tenant", "acme")]


async def test_a_tenant_notice_without_a_handler_is_ignored() -> None:
    seen: list[tuple[str, ...]] = []
    await make(seen, with_tenant_handler=False)._handle(json.dumps({"tenant": "acme", "kind": "tenant"}))
    assert seen == []


async def test_subject_notices_reach_their_handler() -> None:
    seen: list[tuple[str, ...]] = []
    inv = make(seen)

    async def on_subject(tenant: str, subject: str) -> None:
        seen.append(("subject", tenant, subject))

    inv.on_subject_notice = on_subject
    await inv._handle(json.dumps({"tenant": "acme", "kind": "subject", "subject": "u1", "origin": "other"}))
    await inv._handle(json.dumps({"tenant": "acme", "kind": "subject", "subject": "u1", "origin": "me"}))
    for bad in (json.dumps({"tenant": "acme", "kind": "subject"}),
                json.dumps({"tenant": "acme", "kind": "subject", "subject": 3})):
        await inv._handle(bad)
    assert seen == [("subject", "acme", "u1")]
