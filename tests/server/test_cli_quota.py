"""`authserver tenant quota`: show and set the cap on a tenant's live API
keys (issue 16 item 7); the CLI's own mints meet it too."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """main() in-process, as the console script calls it: (exit code, stdout, stderr)."""
    from authserver.cli import main

    monkeypatch.setenv("AUTHSERVER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("AUTHSERVER_PUBLIC_URL", "http://cli.test")
    monkeypatch.setenv("AUTHSERVER_LOG_JSON", "false")
    monkeypatch.setenv("AUTHSERVER_MAX_LIVE_KEYS_PER_TENANT", "5")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        return code, out.out, out.err

    return run


def test_tenant_quota_shows_sets_and_is_enforced(cli):
    assert cli("tenant", "create", "acme", "--json")[0] == 0
    assert cli("tenant", "quota", "acme") == (0, "tenant acme: 0 live key(s), limit 5 "
                                                 "(AUTHSERVER_MAX_LIVE_KEYS_PER_TENANT)\n", "")
    code, out, _ = cli("tenant", "quota", "acme", "--max-live-keys", "2", "--json")
    assert code == 0 and json.loads(out) == {"tenant": "acme", "max_live_keys": 2, "override": 2, "live_keys": 0}
    for _ in range(2):
        assert cli("keys", "mint", "--tenant", "acme", "--json")[0] == 0
    code, out, err = cli("keys", "mint", "--tenant", "acme")
    assert code == 2 and out == ""
    assert err == ("error: tenant 'acme' has reached its limit of 2 live keys: revoke keys, or raise the limit "
                   "(authserver tenant quota acme --max-live-keys N)\n")
    assert cli("tenant", "quota", "acme")[1] == "tenant acme: 2 live key(s), limit 2 (set for this tenant)\n"
    assert cli("tenant", "quota", "acme", "--max-live-keys", "0")[1] == (
        "tenant acme: 2 live key(s), no limit (set for this tenant)\n")
    assert cli("keys", "mint", "--tenant", "acme", "--json")[0] == 0
    code, out, _ = cli("tenant", "quota", "acme", "--default", "--json")
    assert json.loads(out) == {"tenant": "acme", "max_live_keys": 5, "override": None, "live_keys": 3}


@pytest.mark.parametrize(("args", "needle"), [
    (("tenant", "quota", "nope"), "error: no such tenant: nope"),
    (("tenant", "quota", "nope", "--max-live-keys", "3"), "error: no such tenant: nope"),
    (("tenant", "quota", "acme", "--max-live-keys", "-1"), "error: the live key limit must be 0"),
])
def test_tenant_quota_errors(cli, args, needle):
    assert cli("tenant", "create", "acme", "--json")[0] == 0
    code, out, err = cli(*args)
    assert code == 2 and err.startswith(needle), err


def test_tenant_quota_flags_exclude_each_other(tmp_path):
    p = subprocess.run([sys.executable, "-m", "authserver", "tenant", "quota", "acme", "--default",
                        "--max-live-keys", "3"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    assert p.returncode == 2 and "not allowed with argument" in p.stderr
