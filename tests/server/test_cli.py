"""The authserver command line, as a user runs it (subprocesses on a temp SQLite file)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from _server_helpers import bare_jwt, on_app_loop, verify_both


@pytest.fixture
def cli_env(tmp_path):
    return {**os.environ, "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
            "AUTHSERVER_PUBLIC_URL": "http://cli.test", "AUTHSERVER_LOG_JSON": "false"}


@pytest.fixture
def run(cli_env):
    def run(*args: str, ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "authserver", *args], env=env or cli_env, capture_output=True,
                           text=True, timeout=120)
        assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
        if ok:
            assert p.returncode == 0, p.stderr
        return p

    return run


def test_tenant_and_key_lifecycle(run):
    created = json.loads(run("tenant", "create", "acme", "--json", "--algorithm", "ES256").stdout)
    assert created["issuer"] == "http://cli.test/t/acme" and created["admin_key"].startswith("sk_admin_")
    assert created["audience"] == "api://acme" and created["admin_key_id"]
    minted = json.loads(run("keys", "mint", "--tenant", "acme", "--name", "ci", "--scope", "read",
                            "--scope", "write", "--expires-in", "3600", "--subject", "cus_1", "--json").stdout)
    assert minted["key"].startswith("sk_live_") and minted["scopes"] == ["read", "write"]
    assert minted["algorithm"] == "ES256" and minted["expires_at"] == minted["created_at"] + 3600
    claims = json.loads(__import__("base64").urlsafe_b64decode(bare_jwt(minted["key"]).split(".")[1] + "=="))
    assert claims["iss"] == "http://cli.test/t/acme" and claims["sub"] == "cus_1" and claims["scope"] == "read write"
    human = run("keys", "mint", "--tenant", "acme", "--name", "human", "--algorithm", "EdDSA").stdout
    assert "shown once" in human and re.search(r"^sk_live_eyJ\S+$", human, re.M)
    human_key = re.search(r"^(sk_live_eyJ\S+)$", human, re.M).group(1)

    listed = json.loads(run("keys", "list", "--tenant", "acme", "--json").stdout)
    assert {k["name"] for k in listed} == {"ci", "human"} and all("key" not in k for k in listed)
    table = run("keys", "list", "--tenant", "acme").stdout
    assert table.splitlines()[0].split()[:4] == ["ID", "NAME", "HINT", "STATE"]
    assert "ci" in table and "human" in table
    for secret in (minted["key"], human_key):
        assert secret not in table and secret.rsplit(".", 1)[1] not in table
    active = json.loads(run("keys", "list", "--tenant", "acme", "--state", "active", "--json", "--limit", "1").stdout)
    assert len(active) == 1

    got = json.loads(run("keys", "get", "--tenant", "acme", minted["id"], "--json").stdout)
    assert got["id"] == minted["id"] and got["state"] == "active" and "key" not in got
    got_table = run("keys", "get", "--tenant", "acme", minted["id"]).stdout
    assert minted["id"] in got_table and "active" in got_table and minted["key"] not in got_table

    rolled = json.loads(run("keys", "roll", "--tenant", "acme", minted["id"], "--grace", "60", "--json").stdout)
    assert rolled["previous"]["state"] == "rolling" and rolled["key"] != minted["key"]
    assert rolled["previous"]["grace_ends_at"] - rolled["created_at"] in (60, 61)
    human_roll = run("keys", "roll", "--tenant", "acme", rolled["id"], "--grace", "0").stdout
    assert f"rolled {rolled['id']} ->" in human_roll and "sk_live_" in human_roll
    assert "revoked" in run("keys", "revoke", "--tenant", "acme", minted["id"]).stdout
    revoked = json.loads(run("keys", "revoke", "--tenant", "acme", minted["id"], "--json").stdout)  # idempotent
    assert revoked["state"] == "revoked"
    state = json.loads(run("keys", "get", "--tenant", "acme", rolled["id"], "--json").stdout)["state"]
    assert state == "rolled"

    human_tenant = run("tenant", "create", "beta").stdout
    assert "tenant beta created" in human_tenant and "sk_admin_" in human_tenant
    assert "http://cli.test/t/beta" in human_tenant


ERROR_CASES = [
    (("keys", "list", "--tenant", "nope"), "no such tenant"),
    (("keys", "mint", "--tenant", "nope"), "no such tenant"),
    (("keys", "get", "--tenant", "nope", "A" * 43), "no such tenant"),
    (("keys", "roll", "--tenant", "nope", "A" * 43), "no such tenant"),
    (("keys", "revoke", "--tenant", "nope", "A" * 43), "no such tenant"),
    (("keys", "list"), "no such tenant"),  # no default tenant yet
    (("keys", "get", "--tenant", "acme", "missing"), "no such key"),
    (("keys", "roll", "--tenant", "acme", "A" * 43), "no such key"),
    (("keys", "revoke", "--tenant", "acme", "missing"), "no such key"),
    (("tenant", "create", "acme"), "exists"),
    (("tenant", "create", "Bad_Name!"), "tenant id"),
    (("tenant", "create", "x", "--prefix", "bad prefix"), "prefix"),
    (("tenant", "create", "x", "--prefix", "sk_admin_"), "reserved"),
    (("keys", "mint", "--tenant", "acme", "--algorithm", "HS256"), "algorithm"),
    (("keys", "mint", "--tenant", "acme", "--scope", "a b"), "scope"),
    (("keys", "mint", "--tenant", "acme", "--expires-in", "0"), "expires_in"),
    (("keys", "list", "--tenant", "acme", "--state", "bogus"), "state"),
    (("keys", "list", "--tenant", "acme", "--limit", "0"), "limit"),
    # a key id starts with '-' about one time in 64: it must not be taken for an option
    (("keys", "get", "--tenant", "acme", "-" + "A" * 42), "no such key"),
    (("keys", "roll", "-" + "A" * 42, "--tenant", "acme", "--json"), "no such key"),
    (("keys", "revoke", "--tenant", "acme", "-" + "A" * 42), "no such key"),
]


def test_readable_errors(run, cli_env, monkeypatch, capsys):
    """Exit code 2 and one 'error: ...' line, no traceback. The whole table runs
    in-process (main() as the console script calls it); a few also as real
    subprocesses."""
    from authserver.cli import main

    run("tenant", "create", "acme", "--json")
    for name in ("AUTHSERVER_DATABASE_URL", "AUTHSERVER_PUBLIC_URL"):
        monkeypatch.setenv(name, cli_env[name])
    for args, needle in ERROR_CASES:
        code = main(list(args))
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and needle in err, (args, code, err)
        assert "Traceback" not in err
    for args, needle in (ERROR_CASES[0], ERROR_CASES[6], ERROR_CASES[-2]):
        p = run(*args, ok=False)
        assert p.returncode == 2 and needle in p.stderr and p.stderr.startswith("error: "), (args, p.stderr)


def test_unusable_databases_are_reported_not_traced(run, cli_env, tmp_path):
    for url, needle in (
        (f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", "does not exist"),
        ("postgresql://nobody:s3cret@127.0.0.1:9/x", "cannot use the database"),
    ):
        p = run("keys", "list", ok=False, env={**cli_env, "AUTHSERVER_DATABASE_URL": url})
        assert p.returncode in (1, 2) and needle in p.stderr, p.stderr
        assert "s3cret" not in p.stderr  # the password is never echoed
    p = run("keys", "list", ok=False, env={**cli_env, "AUTHSERVER_PORT": "eighty"})
    assert p.returncode == 2 and "AUTHSERVER_PORT" in p.stderr


def test_dash_key_ids_are_kept_positional():
    from authserver.cli import _key_id_last, build_parser

    kid = "-abcdefghijABCDEFGHIJ0123456789_-abcdefghij"
    assert len(kid) == 43
    for argv in (["keys", "revoke", kid], ["keys", "revoke", kid, "--tenant", "t", "--json"],
                 ["--database-url", "sqlite:///x.db", "keys", "roll", "--grace", "5", kid]):
        args = build_parser().parse_args(_key_id_last(argv))
        assert args.key_id == kid
    # nothing else is touched
    assert _key_id_last(["keys", "mint", "--name", kid]) == ["keys", "mint", "--name", kid]
    assert _key_id_last(["keys", "revoke", "--", kid]) == ["keys", "revoke", "--", kid]
    assert _key_id_last(["keys", "revoke", "abc"]) == ["keys", "revoke", "abc"]


def test_quickstart_no_serve_prints_a_working_admin_key_and_curl(run):
    out = run("quickstart", "--no-serve").stdout
    admin = re.search(r"^\s+(sk_admin_eyJ\S+)\s*$", out, re.M)
    assert admin, out
    assert "curl -s -X POST http://127.0.0.1:8080/v1/keys" in out and "Authorization: Bearer $ADMIN_KEY" in out
    assert "/t/default/.well-known/jwks.json" in out and "(created)" in out
    again = run("quickstart", "--no-serve").stdout  # an existing tenant: no new admin key unless asked
    assert "(existing)" in again and "sk_admin_" not in again
    assert "authserver admin-keys mint --tenant default" in again and "--new-admin-key" in again
    assert len(json.loads(run("admin-keys", "list", "--json").stdout)) == 1
    asked = run("quickstart", "--no-serve", "--new-admin-key").stdout
    second = re.search(r"^\s+(sk_admin_eyJ\S+)\s*$", asked, re.M).group(1)
    assert "(existing)" in asked and second != admin.group(1)
    assert len(json.loads(run("admin-keys", "list", "--json").stdout)) == 2
    listed = json.loads(run("keys", "list", "--json").stdout)  # the default tenant exists now
    assert listed == []


async def test_a_running_server_picks_up_cli_changes(run, cli_env):
    """The CLI writes to the database; the server's reconcile pass (every
    AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS) publishes and unpublishes."""
    from litestar.testing import AsyncTestClient

    from authserver.app import create_app
    from authserver.settings import Settings

    created = json.loads(run("tenant", "create", "default", "--json", "--algorithm", "EdDSA").stdout)
    settings = Settings(database_url=cli_env["AUTHSERVER_DATABASE_URL"], public_url="http://cli.test",
                        log_json=False)
    async with AsyncTestClient(app=create_app(settings), base_url="http://cli.test") as client:
        h = {"Authorization": f"Bearer {created['admin_key']}"}
        assert (await client.get("/v1/keys", headers=h)).status_code == 200  # the CLI's admin key works
        minted = json.loads(run("keys", "mint", "--json").stdout)
        await on_app_loop(client, client.app.state.core.reconcile_once)
        jwks = (await client.get("/.well-known/jwks.json")).json()["keys"]
        jwk = next(k for k in jwks if k["kid"] == minted["id"])
        verify_both(minted["key"], jwk, "EdDSA", audience="api://default", issuer="http://cli.test/t/default")
        run("keys", "revoke", minted["id"])
        await on_app_loop(client, client.app.state.core.reconcile_once)
        assert minted["id"] not in {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
        r = await client.post("/oauth/introspect", data={"token": minted["key"]}, headers=h)
        assert r.json() == {"active": False, "status": "REVOKED"}


def test_db_upgrade(run):
    assert "head" in run("db", "upgrade").stdout
