"""The cap on a tenant's live API keys (issue 16 item 7), through the API:
409 quota_exceeded on mint and roll, what frees a place, the per-tenant
override taking effect on a running server. SQLite and PostgreSQL.
(Parallel mints against the cap: tests/replicas/test_quota_race.py.)"""

from __future__ import annotations

from _server_helpers import is_problem, mint


async def set_quota(make_settings, limit: int | None) -> None:
    """As `authserver tenant quota` does it: through the database, not the server."""
    from authserver.offline import open_core

    async with open_core(make_settings()) as core:
        await core.tenants.set_quota("default", limit)


def refused(r, limit: int) -> None:
    body = is_problem(r, 409)
    assert body["code"] == "quota_exceeded" and body["limit"] == limit, body
    assert f"limit of {limit} live keys" in body["detail"] and "authserver tenant quota default" in body["detail"]


async def test_mint_and_roll_stop_at_the_cap_and_what_leaves_frees_a_place(tenant, client_factory, admin_headers,
                                                                          clock):
    client = await client_factory(max_live_keys_per_tenant=3, default_algorithm="EdDSA")
    a = await mint(client, admin_headers, name="a")
    b = await mint(client, admin_headers, name="b", expires_in=60)
    c = await mint(client, admin_headers, name="c")
    refused(await client.post("/v1/keys", json={"name": "d"}, headers=admin_headers), 3)
    # a roll with grace would make four live keys: refused, and the old key is left as it was
    refused(await client.post(f"/v1/keys/{a['id']}/roll", json={"grace_seconds": 60}, headers=admin_headers), 3)
    assert (await client.get(f"/v1/keys/{a['id']}", headers=admin_headers)).json()["state"] == "active"
    # without grace the old key leaves as the new one comes: allowed at the cap
    r = await client.post(f"/v1/keys/{a['id']}/roll", json={"grace_seconds": 0}, headers=admin_headers)
    assert r.status_code == 201, r.text
    refused(await client.post("/v1/keys", json={}, headers=admin_headers), 3)
    # a revoked key frees its place
    assert (await client.delete(f"/v1/keys/{c['id']}", headers=admin_headers)).status_code == 200
    await mint(client, admin_headers, name="e")
    refused(await client.post("/v1/keys", json={}, headers=admin_headers), 3)
    # so does an expired one
    clock.advance(61)
    assert (await client.get(f"/v1/keys/{b['id']}", headers=admin_headers)).json()["state"] == "expired"
    await mint(client, admin_headers, name="f")
    refused(await client.post("/v1/keys", json={}, headers=admin_headers), 3)
    listed = (await client.get("/v1/keys", params={"state": "live"}, headers=admin_headers)).json()["data"]
    assert len(listed) == 3
    # refusals left no trace: no key row, no audit event (the five API keys minted above)
    events = (await client.get("/v1/audit", headers=admin_headers)).json()
    actions = [e["action"] for e in events["data"]]
    assert actions.count("key.mint") == 5 and actions.count("key.roll") == 1


async def test_the_tenant_override_applies_to_a_running_server_at_once(tenant, client_factory, admin_headers,
                                                                      make_settings):
    client = await client_factory(max_live_keys_per_tenant=2, default_algorithm="EdDSA")
    for _ in range(2):
        await mint(client, admin_headers)
    refused(await client.post("/v1/keys", json={}, headers=admin_headers), 2)
    await set_quota(make_settings, 4)
    for _ in range(2):
        await mint(client, admin_headers)
    refused(await client.post("/v1/keys", json={}, headers=admin_headers), 4)
    await set_quota(make_settings, 0)  # no limit for this tenant
    for _ in range(3):
        await mint(client, admin_headers)
    await set_quota(make_settings, None)  # the server's default (2) again
    refused(await client.post("/v1/keys", json={}, headers=admin_headers), 2)
    # admin keys are not API keys: the management API keeps working at the cap
    assert (await client.get("/v1/keys", headers=admin_headers)).status_code == 200


async def test_zero_means_no_limit(tenant, client_factory, admin_headers):
    client = await client_factory(max_live_keys_per_tenant=0, default_algorithm="EdDSA")
    for _ in range(5):
        await mint(client, admin_headers)
