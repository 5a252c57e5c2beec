"""What is stored: nothing secret, everything durable; consistency under
concurrent load (issue #3). SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path

from _server_helpers import (
    PRIVATE_JWK_MEMBERS,
    all_key_ids,
    execute_sql,
    jwks_keys,
    jwks_kids,
    metric,
    mint,
    secret_parts,
    walk_dicts,
    walk_strings,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

TABLES = ("tenants", "api_keys", "audit_log", "alembic_version")
PUBLIC_JWK_MEMBERS = {"kty", "n", "e", "crv", "x", "y", "kid", "alg", "use", "key_ops"}


def _decoded(value):
    if isinstance(value, (bytes, memoryview)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


async def dump_database(url: str) -> dict[str, list[dict]]:
    """SELECT * from every table, JSON columns decoded."""
    engine = create_async_engine(url)
    out: dict[str, list[dict]] = {}
    try:
        async with engine.connect() as conn:
            for table in TABLES:
                rows = (await conn.execute(text(f"SELECT * FROM {table}"))).mappings().all()
                out[table] = [{k: _decoded(v) for k, v in row.items()} for row in rows]
    finally:
        await engine.dispose()
    return out


async def test_a_database_dump_holds_no_private_key_material(client, admin_headers, database_url):
    minted = []
    for alg in ("RS256", "ES256", "EdDSA", "PS256"):
        minted.append(await mint(client, admin_headers, algorithm=alg, name=alg, scopes=["read"],
                                 metadata={"note": "public"}))
    rolled = (await client.post(f"/v1/keys/{minted[0]['id']}/roll", json={"grace_seconds": 60},
                                headers=admin_headers)).json()
    await client.delete(f"/v1/keys/{minted[1]['id']}", headers=admin_headers)
    await client.post("/oauth/introspect", data={"token": minted[2]["key"]}, headers=admin_headers)
    keys_ = [m["key"] for m in minted] + [rolled["key"], admin_headers["Authorization"].split()[1]]
    secrets = [s for k in keys_ for s in secret_parts(k)]

    dump = await dump_database(database_url)
    assert len(dump["api_keys"]) == 6 and len(dump["tenants"]) == 1  # 5 API keys + the admin key
    jwks_seen = 0
    for table, rows in dump.items():
        for d in walk_dicts(rows):
            if "kty" in d:  # a stored JWK: public members only
                jwks_seen += 1
                assert set(d) <= PUBLIC_JWK_MEMBERS, (table, set(d))
            assert not (PRIVATE_JWK_MEMBERS - {"k"}) & d.keys(), (table, d.keys())
        for s in walk_strings(rows):
            assert "PRIVATE KEY" not in s
            for secret in secrets:
                assert secret not in s, (table, s[:80])
    assert jwks_seen == 6 + 1  # every key's public JWK, and the tenant's sentinel
    stored = {r["id"]: r for r in dump["api_keys"]}
    for m in (*minted, rolled):
        assert stored[m["id"]]["public_jwk"]["kid"] == m["id"]
        assert stored[m["id"]]["last4"] == m["key"][-4:]  # the hint, not the key

    if database_url.startswith("sqlite"):  # the raw files too: database, WAL and shared memory
        db = Path(database_url.split("///", 1)[1])
        files = sorted(db.parent.glob(db.name + "*"))
        assert {p.name for p in files} >= {db.name}
        raw = b"".join(p.read_bytes() for p in files)
        assert b'"kty"' in raw  # the JWKs are in there, so the search below is not vacuous
        assert b"PRIVATE KEY" not in raw
        assert not re.search(rb'"(d|p|q|dp|dq|qi|oth)"\s*:', raw)
        for secret in secrets:
            assert secret.encode() not in raw


async def test_restart_keeps_keys_revocations_grace_and_expiry(tenant, client_factory, admin_headers, clock):
    client = await client_factory()
    plain = [await mint(client, admin_headers, algorithm="EdDSA", name=f"p{i}") for i in range(3)]
    revoked = await mint(client, admin_headers, algorithm="ES256")
    expiring = await mint(client, admin_headers, algorithm="EdDSA", expires_in=100)
    old = await mint(client, admin_headers, algorithm="RS256", scopes=["a"])
    new = (await client.post(f"/v1/keys/{old['id']}/roll", json={"grace_seconds": 50},
                             headers=admin_headers)).json()
    await client.delete(f"/v1/keys/{revoked['id']}", headers=admin_headers)
    before = await jwks_kids(client)
    listing_before = (await client.get("/v1/keys?limit=100", headers=admin_headers)).json()["data"]
    audit_before = (await client.get("/v1/audit", headers=admin_headers)).json()["data"]
    await client.__aexit__(None, None, None)

    again = await client_factory()
    assert await jwks_kids(again) == before == {*(p["id"] for p in plain), expiring["id"], old["id"], new["id"]}
    assert (await again.get("/v1/keys?limit=100", headers=admin_headers)).json()["data"] == listing_before
    assert (await again.get("/v1/audit", headers=admin_headers)).json()["data"] == audit_before
    for key, status in ((plain[0]["key"], "VALID"), (revoked["key"], "REVOKED"), (old["key"], "VALID"),
                        (new["key"], "VALID")):
        r = await again.post("/oauth/introspect", data={"token": key}, headers=admin_headers)
        assert r.json()["status"] == status
    # the schedule survives: the grace ends, then the expiry, after the restart
    clock.advance(50)
    assert old["id"] not in await jwks_kids(again) and new["id"] in await jwks_kids(again)
    clock.advance(50)
    assert await jwks_kids(again) == {*(p["id"] for p in plain), new["id"]}
    # and the sentinel is the same key (stored, not regenerated)
    for p in plain + [new]:
        await again.delete(f"/v1/keys/{p['id']}", headers=admin_headers)
    empty = await jwks_keys(again)
    assert len(empty) == 1 and empty[0]["kid"] not in before
    await again.__aexit__(None, None, None)
    third = await client_factory()
    assert await jwks_keys(third) == empty


async def test_concurrent_mints_rolls_and_revokes_keep_jwks_and_db_equal(tenant, client_factory, admin_headers):
    client = await client_factory(rate_limit_admin_per_minute=0)
    rng = random.Random(1234)
    algs = ["EdDSA", "ES256"] * 4 + ["RS256", "EdDSA"]  # 10% RS256: ~35 ms each
    minted: list[str] = []
    revoked: set[str] = set()
    successors: dict[str, str] = {}  # old -> new
    rolled_now: set[str] = set()  # rolled with grace 0: gone at once
    jwks_reads: list[int] = []

    async def do_mint(i: int) -> None:
        r = await client.post("/v1/keys", json={"algorithm": algs[i % len(algs)], "name": f"c{i}"},
                              headers=admin_headers)
        assert r.status_code == 201, r.text
        minted.append(r.json()["id"])

    async def revoker(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(rng.random() / 200)
            if minted:
                kid = rng.choice(minted)
                r = await client.delete(f"/v1/keys/{kid}", headers=admin_headers)
                assert r.status_code == 200, r.text
                revoked.add(kid)

    async def roller(n: int, grace: int) -> None:
        for _ in range(n):
            await asyncio.sleep(rng.random() / 100)
            if minted:
                kid = rng.choice(minted)
                r = await client.post(f"/v1/keys/{kid}/roll", json={"grace_seconds": grace}, headers=admin_headers)
                assert r.status_code in (201, 409), r.text  # 409: revoked or rolled meanwhile
                if r.status_code == 201:
                    successors[kid] = r.json()["id"]
                    if grace == 0:
                        rolled_now.add(kid)

    async def reader(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)
            r = await client.get("/.well-known/jwks.json")
            assert r.status_code == 200
            jwks_reads.append(len(r.json()["keys"]))

    await asyncio.gather(*(do_mint(i) for i in range(120)), revoker(25), revoker(25), roller(6, 0),
                         roller(6, 3600), reader(30))
    # then the rest of a random half, all at once
    rest = rng.sample(sorted(set(minted) - revoked), max(0, 60 - len(revoked)))
    results = await asyncio.gather(*(client.delete(f"/v1/keys/{k}", headers=admin_headers) for k in rest))
    assert all(r.status_code == 200 for r in results)
    revoked |= set(rest)

    assert len(minted) == 120 and len(set(minted)) == 120 and len(revoked) >= 60
    assert successors and rolled_now and set(successors) - rolled_now  # both kinds of roll happened
    assert jwks_reads and min(jwks_reads) >= 1
    everything = set(minted) | set(successors.values())
    expected = everything - revoked - rolled_now
    served = await jwks_kids(client, "/.well-known/jwks.json")
    listed_live = await all_key_ids(client, admin_headers, state="live", limit=7)
    assert len(listed_live) == len(set(listed_live))  # pagination: no duplicates
    assert served == expected == set(listed_live)
    assert await metric(client, "authserver_keys_active", 'tenant="default"') == len(expected)
    assert set(await all_key_ids(client, admin_headers, state="revoked")) == revoked
    # one audit event per effective change
    events = []
    before = None
    while True:
        params = {"limit": "500", **({"before_id": str(before)} if before else {})}
        page = (await client.get("/v1/audit", params=params, headers=admin_headers)).json()
        events += page["data"]
        before = page["next_before_id"]
        if not before:
            break
    actions = [e["action"] for e in events]
    assert actions.count("key.roll") == len(successors)
    assert actions.count("key.revoke") == len(revoked)
    assert sum(1 for e in events if e["action"] == "key.mint" and e["details"]["kind"] == "api") == 120
    # and a restart sees exactly the same
    await client.__aexit__(None, None, None)
    again = await client_factory()
    assert await jwks_kids(again, "/.well-known/jwks.json") == expected
    for kid in rng.sample(sorted(expected), 5):
        jwk = next(k for k in await jwks_keys(again) if k["kid"] == kid)
        assert jwk["alg"] in ("EdDSA", "ES256", "RS256")


async def _audit_log_schema(url: str) -> tuple[list[str], list[str], list[dict]]:
    """audit_log's columns, index names and rows, as the database reports them."""
    from sqlalchemy import inspect

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            columns, indexes = await conn.run_sync(lambda c: (
                [col["name"] for col in inspect(c).get_columns("audit_log")],
                sorted(ix["name"] for ix in inspect(c).get_indexes("audit_log")),
            ))
            rows = (await conn.execute(text("SELECT * FROM audit_log ORDER BY id"))).mappings().all()
            return columns, indexes, [{k: _decoded(v) for k, v in r.items()} for r in rows]
    finally:
        await engine.dispose()


async def test_migration_0003_drops_audit_note_and_downgrades(database_url):
    from alembic import command

    from authserver.db.migrate import alembic_config, upgrade_async
    from authserver.db.models import AuditEvent

    await upgrade_async(database_url, "0002")
    await execute_sql(database_url, "INSERT INTO audit_log (tenant_id, at, actor, action, target, details, note) "
                                 "VALUES ('acme', 1700000000, 'cli', 'tenant.create', 'acme', '{\"a\": 1}', 'old')")
    row = {"id": 1, "tenant_id": "acme", "at": 1700000000, "actor": "cli", "action": "tenant.create",
           "target": "acme", "remote_addr": None, "details": {"a": 1}}

    await upgrade_async(database_url)
    columns, indexes, rows = await _audit_log_schema(database_url)
    assert columns == [c.name for c in AuditEvent.__table__.columns]  # the model and the migrated schema agree
    assert "note" not in columns and indexes == ["ix_audit_log_tenant_id"]
    assert rows == [row]  # the copy SQLite needs kept the row
    await execute_sql(database_url, "INSERT INTO audit_log (tenant_id, at, actor, action, details) "
                                 "VALUES ('acme', 1700000001, 'cli', 'key.mint', '{}')")
    assert [r["id"] for r in (await _audit_log_schema(database_url))[2]] == [1, 2]  # ids still generated

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0002")
    columns, indexes, rows = await _audit_log_schema(database_url)
    assert columns[-1] == "note" and indexes == ["ix_audit_log_tenant_id"]
    assert [r["note"] for r in rows] == [None, None] and rows[0] == {**row, "note": None}

    await upgrade_async(database_url)
    assert "note" not in (await _audit_log_schema(database_url))[0]
