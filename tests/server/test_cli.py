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
    (("keys", "mint", "--tenant", "acme", "--scope", "a b"), "scope"),
    (("keys", "mint", "--tenant", "acme", "--expires-in", "0"), "expires_in"),
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


# --- the operator's first day (issue 16, item 10) ------------------------------


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """main() in-process, as the console script calls it: (exit code, stdout, stderr)."""
    from authserver.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def test_version_and_help_without_arguments(run):
    from authserver import __version__

    assert run("--version").stdout.strip() == f"authserver {__version__}"
    bare = run()  # help, exit 0, not an error
    assert bare.stdout.startswith("usage: authserver") and bare.stderr == ""
    for command in ("serve", "quickstart", "db", "tenant", "keys", "gateway"):
        assert f"    {command}" in bare.stdout
    group = run("keys")  # a group without its subcommand: the group's help
    assert group.stdout.startswith("usage: authserver keys") and "verify" in group.stdout and group.stderr == ""


def _walk(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{sub.prog}: no help line"
                yield from _walk(sub)
        else:
            yield parser.prog, action


def test_every_option_has_a_help_line_and_its_choices():
    from authserver.cli import build_parser
    from authserver.schemas import ALGORITHM_NAMES
    from authserver.services.queries import STATES

    seen = 0
    for prog, action in _walk(build_parser()):
        assert action.help and action.help.strip(), (prog, action.option_strings or action.dest)
        if "--algorithm" in action.option_strings:
            assert tuple(action.choices) == ALGORITHM_NAMES and "PS256" in action.choices, prog
            seen += 1
        if "--state" in action.option_strings:
            assert tuple(action.choices) == STATES
        if "--format" in action.option_strings:
            assert set(action.choices) == {"yaml", "json"}
    assert seen == 2  # tenant create, keys mint
    help_text = build_parser()._subparsers._group_actions[0].choices["keys"]._subparsers._group_actions[0]
    mint_help = help_text.choices["mint"].format_help()
    assert "PS256" in mint_help and "RS256" in mint_help and "1h" in mint_help


def test_durations_one_parser():
    from authserver.durations import parse_duration

    for text, seconds in (("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("30d", 2592000), ("2w", 1209600),
                          ("1h30m", 5400), (" 1H ", 3600), ("0", 0)):
        assert parse_duration(text) == seconds, text
    for bad in ("", "h", "1x", "-5", "1.5h", "1 h", "١٢", "h1", "1h-"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
    from authserver.settings import Settings

    s = Settings.from_env({"AUTHSERVER_DEFAULT_GRACE_SECONDS": "1d", "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": "1m",
                           "AUTHSERVER_JWKS_MAX_AGE_SECONDS": "45"})
    assert (s.default_grace_seconds, s.degraded_cache_ttl_seconds, s.jwks_max_age_seconds) == (86400, 60.0, 45)
    with pytest.raises(ValueError, match="AUTHSERVER_DEFAULT_GRACE_SECONDS"):
        Settings.from_env({"AUTHSERVER_DEFAULT_GRACE_SECONDS": "1y"})


def test_durations_in_the_cli(run, cli_env, monkeypatch, capsys):
    run("tenant", "create", "default", "--json", "--algorithm", "EdDSA")
    monkeypatch.setenv("AUTHSERVER_DATABASE_URL", cli_env["AUTHSERVER_DATABASE_URL"])
    code, out, _ = _main(capsys, "keys", "mint", "--expires-in", "1h", "--json")
    minted = json.loads(out)
    assert code == 0 and minted["expires_at"] - minted["created_at"] == 3600
    code, out, _ = _main(capsys, "keys", "roll", minted["id"], "--grace", "2d", "--json")
    rolled = json.loads(out)
    assert code == 0 and rolled["previous"]["grace_ends_at"] - rolled["created_at"] in (172800, 172801)
    with pytest.raises(SystemExit) as exit_:
        _main(capsys, "keys", "mint", "--expires-in", "soon")
    assert exit_.value.code == 2 and "not a duration" in capsys.readouterr().err


def test_keys_verify_says_why(run, cli_env, monkeypatch, capsys):
    import time

    run("tenant", "create", "default", "--json", "--algorithm", "EdDSA")
    other = json.loads(run("tenant", "create", "other", "--json", "--algorithm", "EdDSA").stdout)
    monkeypatch.setenv("AUTHSERVER_DATABASE_URL", cli_env["AUTHSERVER_DATABASE_URL"])

    def mint(*extra: str) -> dict:
        code, out, _ = _main(capsys, "keys", "mint", "--json", *extra)
        assert code == 0
        return json.loads(out)

    def verify(key: str, *extra: str) -> tuple[int, str]:
        code, out, err = _main(capsys, "keys", "verify", key, *extra)
        assert key not in out and key not in err  # the key is never echoed
        return code, out.strip()

    live, short, revoked, rolled = mint(), mint("--expires-in", "1"), mint(), mint()
    foreign = mint("--tenant", "other")
    _main(capsys, "keys", "revoke", revoked["id"])
    _main(capsys, "keys", "roll", rolled["id"], "--grace", "0")
    time.sleep(1.2)

    code, out = verify(live["key"])
    assert code == 0 and out.startswith(f"VALID: signature verified with published key {live['id']}")
    assert "does not expire" in out
    code, out = verify(revoked["key"])
    assert code == 3 and out.startswith(f"REVOKED: key {revoked['id']} was revoked at 20")
    code, out = verify(short["key"])
    assert code == 3 and out.startswith(f"EXPIRED: key {short['id']} expired at 20")
    code, out = verify(rolled["key"])
    assert code == 3 and out.startswith(f"EXPIRED: key {rolled['id']} was rolled to ")
    head, payload, sig = live["key"].rsplit(".", 2)
    code, out = verify(f"{head}.{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}")
    assert code == 3 and out.startswith("INVALID: bad_signature")
    code, out = verify(foreign["key"])
    assert code == 3 and out.startswith("INVALID: ") and "belongs to tenant 'other'" in out
    assert verify(foreign["key"], "--tenant", "other")[0] == 0
    code, out = verify(other["admin_key"], "--tenant", "other")
    assert code == 3 and "admin key" in out
    code, out = verify("sk_live_" + live["key"].removeprefix("sk_live_").upper())
    assert code == 3 and out.startswith("INVALID: ")
    code, out = verify("not a key")
    assert code == 3 and out.startswith("INVALID: malformed")
    # like the introspection endpoint, plus the reason; from standard input with '-'
    p = subprocess.run([sys.executable, "-m", "authserver", "keys", "verify", "-", "--json"], env=cli_env,
                       input=f"Bearer {revoked['key']}\n", capture_output=True, text=True, timeout=120)
    answer = json.loads(p.stdout)
    assert p.returncode == 3 and answer["active"] is False and answer["status"] == "REVOKED"
    assert answer["reason"].startswith(f"key {revoked['id']} was revoked")
    code, out = verify(live["key"], "--json")
    answer = json.loads(out)
    assert code == 0 and answer["active"] is True and answer["status"] == "VALID" and answer["kid"] == live["id"]


def test_not_found_names_the_id_and_the_database(run, cli_env, monkeypatch, capsys, tmp_path):
    run("tenant", "create", "acme", "--json")
    monkeypatch.setenv("AUTHSERVER_DATABASE_URL", cli_env["AUTHSERVER_DATABASE_URL"])
    db = str(tmp_path / "cli.db")
    code, _, err = _main(capsys, "keys", "list", "--tenant", "nope")
    assert code == 2 and err.startswith("error: no such tenant 'nope' in the database ") and db in err
    code, _, err = _main(capsys, "keys", "revoke", "--tenant", "acme", "B" * 43)
    assert code == 2 and f"no such key '{'B' * 43}' in tenant 'acme' in the database " in err and db in err


def test_no_database_is_created_outside_quickstart_and_db_upgrade(tmp_path):
    """From a folder without a database, commands that read or change data
    refuse and create nothing; db upgrade creates it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "authserver", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    for args in (("keys", "list"), ("keys", "verify", "sk_live_x"), ("tenant", "shards", "default", "--count", "2"),
                 ("db", "upgrade", "nonsense")):
        p = cli(*args)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and len(p.stderr.splitlines()) == 1, p.stderr
        assert "Traceback" not in p.stderr
        assert list(tmp_path.iterdir()) == [], (args, list(tmp_path.iterdir()))
    assert f"no database at {tmp_path / 'authserver.db'}" in cli("keys", "list").stderr
    assert "unknown revision 'nonsense'" in cli("db", "upgrade", "nonsense").stderr
    assert cli("db", "upgrade").returncode == 0 and (tmp_path / "authserver.db").exists()
    p = cli("keys", "list")
    assert p.returncode == 2 and "no such tenant 'default'" in p.stderr  # the database exists now


def _closed_stdout_run(env: dict, *args: str) -> subprocess.CompletedProcess:
    """The CLI with its stdout a pipe nobody reads (like `| true` once true exited)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "authserver", *args], env=env, stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)


def test_a_key_that_cannot_be_printed_is_not_left_behind(run, cli_env):
    p = _closed_stdout_run(cli_env, "tenant", "create", "piped", "--json")
    assert p.returncode == 1 and "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr
    assert "error: could not write the admin key (BrokenPipeError" in p.stderr
    assert "tenant 'piped' was not created" in p.stderr
    assert "no such tenant 'piped'" in run("keys", "list", "--tenant", "piped", ok=False).stderr
    created = json.loads(run("tenant", "create", "piped", "--json").stdout)  # the id is free: nothing half-made
    assert created["admin_key"].startswith("sk_admin_")
    p = _closed_stdout_run(cli_env, "keys", "mint", "--tenant", "piped", "--json")
    assert p.returncode == 1 and "was revoked" in p.stderr, p.stderr
    listed = json.loads(run("keys", "list", "--tenant", "piped", "--json").stdout)
    assert [k["state"] for k in listed] == ["revoked"]  # a key nobody holds is not live


def test_db_upgrade_nonsense_is_one_line(run):
    p = run("db", "upgrade", "nonsense", ok=False)
    assert p.returncode == 2 and p.stderr.splitlines() == [p.stderr.strip()]
    assert p.stderr.startswith("error: unknown revision 'nonsense'")


def test_quickstart_checks_the_port_before_minting(run, cli_env, tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        p = run("quickstart", "--port", str(port), ok=False)
    assert p.returncode == 2 and p.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}"), p.stderr
    assert p.stdout == "" and not (tmp_path / "cli.db").exists()  # nothing minted, no database made
