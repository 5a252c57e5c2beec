"""``authserver admin-keys`` as a user runs it (subprocesses on a temp SQLite
file), and the recovery path: every admin key lost, the CLI mints one."""

from __future__ import annotations

import json
import re

import jwt as pyjwt
from _server_helpers import bare_jwt
from test_cli import cli_env, run  # noqa: F401  (the fixtures of the CLI tests)

FULL = ["keys:read", "keys:write", "admin-keys:write"]


async def _public_jwk(database_url: str, tenant: str, kid: str) -> dict:
    from authserver.offline import open_core
    from authserver.settings import Settings

    async with open_core(Settings(database_url=database_url, public_url="http://cli.test", log_json=False)) as core:
        return core.cache.get(tenant).published[kid].jwk


async def test_admin_keys_lifecycle_and_recovery(run, cli_env):  # noqa: F811
    created = json.loads(run("tenant", "create", "acme", "--json").stdout)
    first = created["admin_key_id"]
    listed = json.loads(run("admin-keys", "list", "--tenant", "acme", "--json").stdout)
    assert [(k["id"], k["scopes"], k["state"]) for k in listed] == [(first, FULL, "active")]
    assert all("key" not in k for k in listed)

    ro = json.loads(run("admin-keys", "mint", "--tenant", "acme", "--name", "ro", "--scope", "keys:read",
                        "--expires-in", "3600", "--json").stdout)
    assert ro["key"].startswith("sk_admin_eyJ") and ro["scopes"] == ["keys:read"]
    assert ro["expires_at"] == ro["created_at"] + 3600
    jwk = await _public_jwk(cli_env["AUTHSERVER_DATABASE_URL"], "acme", ro["id"])
    claims = pyjwt.decode(bare_jwt(ro["key"]), pyjwt.PyJWK(jwk).key, algorithms=[ro["algorithm"]],
                          audience="http://cli.test/t/acme/admin", issuer="http://cli.test/t/acme")
    assert claims["scope"] == "keys:read" and claims["jti"] == ro["id"] and claims["exp"] == ro["expires_at"]
    human = run("admin-keys", "mint", "--tenant", "acme", "--name", "human").stdout
    assert "shown once" in human and re.search(r"^sk_admin_eyJ\S+$", human, re.M)
    assert "keys:read keys:write admin-keys:write" in human and "expires: never" in human
    table = run("admin-keys", "list", "--tenant", "acme").stdout
    assert table.splitlines()[0].split()[:4] == ["ID", "NAME", "HINT", "STATE"] and "human" in table
    assert "sk_admin_eyJ" not in table
    got = json.loads(run("admin-keys", "get", "--tenant", "acme", ro["id"], "--json").stdout)
    assert got["id"] == ro["id"] and "key" not in got

    bad = run("admin-keys", "mint", "--tenant", "acme", "--scope", "root", ok=False)
    assert bad.returncode == 2 and "admin-keys:write" in bad.stderr
    # an admin key id given to `keys`: say what it is and where to go
    wrong = run("keys", "revoke", "--tenant", "acme", first, ok=False)
    assert wrong.returncode == 2 and "is an admin key" in wrong.stderr
    assert f"authserver admin-keys get|roll|revoke {first}" in wrong.stderr
    assert json.loads(run("admin-keys", "get", "--tenant", "acme", first, "--json").stdout)["state"] == "active"

    rolled = json.loads(run("admin-keys", "roll", "--tenant", "acme", first, "--grace", "60", "--json").stdout)
    assert rolled["previous"]["state"] == "rolling" and rolled["scopes"] == FULL and rolled["rolled_from"] == first
    assert rolled["key"].startswith("sk_admin_")
    new = rolled["id"]

    # revoke every manager: the CLI refuses the last one unless --force
    human_id = next(k["id"] for k in json.loads(run("admin-keys", "list", "--tenant", "acme", "--json").stdout)
                    if k["name"] == "human")
    assert "revoked admin key" in run("admin-keys", "revoke", "--tenant", "acme", human_id).stdout
    assert "revoked admin key" in run("admin-keys", "revoke", "--tenant", "acme", first).stdout  # in grace
    last = run("admin-keys", "revoke", "--tenant", "acme", new, ok=False)
    assert last.returncode == 2 and "last active admin key" in last.stderr and "--force" in last.stderr
    gone = json.loads(run("admin-keys", "revoke", "--tenant", "acme", new, "--force", "--json").stdout)
    assert gone["state"] == "revoked"
    live = json.loads(run("admin-keys", "list", "--tenant", "acme", "--state", "live", "--json").stdout)
    assert [k["id"] for k in live] == [ro["id"]]  # read-only: cannot manage anything

    # recovery: the CLI mints a working admin key with every admin key lost
    recovered = json.loads(run("admin-keys", "mint", "--tenant", "acme", "--json").stdout)
    from litestar.testing import AsyncTestClient

    from authserver.app import create_app
    from authserver.settings import Settings

    app = create_app(Settings(database_url=cli_env["AUTHSERVER_DATABASE_URL"], public_url="http://cli.test",
                              log_json=False))
    async with AsyncTestClient(app=app) as client:
        h = {"Authorization": f"Bearer {recovered['key']}"}
        r = await client.get("/v1/admin-keys", headers=h)
        assert r.status_code == 200 and recovered["id"] in {k["id"] for k in r.json()["data"]}
        assert (await client.post("/v1/keys", json={}, headers=h)).status_code == 201
        for key in (rolled["key"],):
            assert (await client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"})).status_code == 401
    audit = [(e.action, e.actor) for e in await _audit(cli_env["AUTHSERVER_DATABASE_URL"], "acme")]
    assert ("admin_key.roll", "cli") in audit and ("admin_key.revoke", "cli") in audit
    assert audit.count(("admin_key.mint", "cli")) >= 4


async def _audit(database_url: str, tenant: str):
    from authserver.offline import open_core
    from authserver.settings import Settings

    async with open_core(Settings(database_url=database_url, public_url="http://cli.test", log_json=False)) as core:
        return (await core.queries.audit(tenant, limit=500)).items


def test_an_admin_key_id_starting_with_a_dash_is_a_key_id():
    from authserver.cli import _key_id_last, build_parser

    kid = "-" + "A" * 42
    for argv in (["admin-keys", "revoke", kid], ["admin-keys", "roll", "--grace", "5", kid, "--json"],
                 ["admin-keys", "get", kid, "--tenant", "t"]):
        assert build_parser().parse_args(_key_id_last(argv)).key_id == kid
    args = build_parser().parse_args(["admin-keys", "mint", "--scope", "keys:read", "--expires-in", "60"])
    assert args.scope == ["keys:read"] and args.expires_in == 60 and args.name is None
