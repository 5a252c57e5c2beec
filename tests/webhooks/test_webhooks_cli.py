"""`authserver webhooks ...` as a user runs it (subprocesses on a temp SQLite file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def run(tmp_path):
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
           "AUTHSERVER_PUBLIC_URL": "http://cli.test", "AUTHSERVER_LOG_JSON": "false"}

    def run(*args: str, ok: bool = True, **extra: str) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "authserver", *args], env=env | extra, capture_output=True,
                           text=True, timeout=120)
        assert "Traceback" not in p.stderr + p.stdout, p.stderr
        assert (p.returncode == 0) == ok, p.stderr
        return p

    return run


def test_webhooks_cli(run, tmp_path):
    key = run("webhooks", "new-key").stdout.strip()
    assert len(key) == 43
    run("tenant", "create", "default")
    # no key: refused, saying what to set
    p = run("webhooks", "add", "https://hooks.example.com/h", ok=False)
    assert p.returncode == 2 and "AUTHSERVER_WEBHOOK_KEY" in p.stderr
    keyfile = tmp_path / "webhook.key"
    keyfile.write_text(key + "\n")
    p = run("webhooks", "add", "https://hooks.example.com/h", "--event", "key.revoked", "--event", "key.leaked",
            "--description", "ops", "--json", AUTHSERVER_WEBHOOK_KEY_FILE=str(keyfile))
    created = json.loads(p.stdout)
    assert created["secret"].startswith("whsec_") and created["event_types"] == ["key.revoked", "key.leaked"]
    listed = json.loads(run("webhooks", "list", "--json").stdout)
    assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]
    assert created["secret"] not in run("webhooks", "list").stdout
    # a revocation from the CLI queues a delivery (the server's sender sends it)
    kid = json.loads(run("keys", "mint", "--json").stdout)["id"]
    run("keys", "revoke", kid)
    [d] = json.loads(run("webhooks", "deliveries", created["id"], "--json").stdout)
    assert (d["event_type"], d["status"], d["attempts"]) == ("key.revoked", "pending", 0)
    assert "key.revoked" in run("webhooks", "deliveries").stdout
    again = json.loads(run("webhooks", "replay", d["id"], "--json").stdout)
    assert again["webhook_id"] == d["webhook_id"] and again["replay_of"] == d["id"]
    assert json.loads(run("webhooks", "expiring-days", "--json").stdout) == {"expiring_days": 7}
    assert "10 days" in run("webhooks", "expiring-days", "10").stdout
    p = run("webhooks", "expiring-days", "0", ok=False)
    assert "between 1 and 365" in p.stderr
    p = run("webhooks", "add", "http://hooks.example.com/h", ok=False, AUTHSERVER_WEBHOOK_KEY=key)
    assert "https" in p.stderr
    p = run("webhooks", "add", "https://hooks.example.com/h", "--event", "key.nope", ok=False)
    assert "invalid choice" in p.stderr
    run("webhooks", "remove", created["id"])
    assert json.loads(run("webhooks", "list", "--json").stdout) == []
    assert run("webhooks", "remove", created["id"], ok=False).returncode == 2
    # the key file is what seals: a wrong one is refused at once
    p = run("webhooks", "add", "https://hooks.example.com/h", ok=False, AUTHSERVER_WEBHOOK_KEY="short")
    assert "32 bytes" in p.stderr


def test_quickstart_makes_a_webhook_key_beside_the_database(run, tmp_path):
    out = run("quickstart", "--no-serve").stdout
    keyfile = tmp_path / "authserver-webhook.key"
    assert str(keyfile) in out and (keyfile.stat().st_mode & 0o777) == 0o600
    key = keyfile.read_text().strip()
    run("quickstart", "--no-serve")
    assert keyfile.read_text().strip() == key  # made once
    assert key.encode() not in (tmp_path / "cli.db").read_bytes()
    p = run("webhooks", "add", "https://hooks.example.com/h", AUTHSERVER_WEBHOOK_KEY_FILE=str(keyfile))
    assert "whsec_" in p.stdout


def test_rotating_the_webhook_key(run, tmp_path):
    old, new = (run("webhooks", "new-key").stdout.strip() for _ in range(2))
    run("tenant", "create", "default")
    ids = [json.loads(run("webhooks", "add", f"https://hooks.example.com/{i}", "--json",
                          AUTHSERVER_WEBHOOK_KEY=old).stdout)["id"] for i in range(2)]
    # the new key alone does not open the old secrets; with the old one as previous it does
    p = run("webhooks", "reseal", ok=False, AUTHSERVER_WEBHOOK_KEY=new)
    assert all(i in p.stderr for i in ids) and "AUTHSERVER_WEBHOOK_PREVIOUS_KEYS" in p.stderr
    rotated = {"AUTHSERVER_WEBHOOK_KEY": new, "AUTHSERVER_WEBHOOK_PREVIOUS_KEYS": old}
    assert json.loads(run("webhooks", "reseal", "--json", **rotated).stdout) == {
        "resealed": 2, "already_current": 0, "unopenable": []}
    assert "can go" in run("webhooks", "reseal", **rotated).stdout
    # now the new key alone opens every secret, and the old one none
    assert json.loads(run("webhooks", "reseal", "--json", AUTHSERVER_WEBHOOK_KEY=new).stdout)["already_current"] == 2
    p = run("webhooks", "reseal", "--json", ok=False, AUTHSERVER_WEBHOOK_KEY=old)
    assert json.loads(p.stdout)["unopenable"] == ids
    p = run("webhooks", "reseal", ok=False, AUTHSERVER_WEBHOOK_KEY=new, AUTHSERVER_WEBHOOK_PREVIOUS_KEYS="short")
    assert "AUTHSERVER_WEBHOOK_PREVIOUS_KEYS" in p.stderr and "32 bytes" in p.stderr
