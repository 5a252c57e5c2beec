"""`authserver quickstart --with-envoy`: the printed curl works on the first try."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from authserver_devtools import free_port, wait_until

pytestmark = pytest.mark.envoy


def _wait_for(path, pattern: str, proc: subprocess.Popen, timeout: float) -> re.Match:
    def text() -> str:
        return path.read_text(errors="replace") if path.exists() else ""

    try:
        return wait_until(lambda: re.search(pattern, text(), re.M), timeout, interval=0.1,
                          what=f"{pattern!r} printed", alive=lambda: proc.poll() is None)
    except (TimeoutError, RuntimeError) as exc:
        raise AssertionError(f"{exc} (exit {proc.poll()}):\n{text()[-3000:]}") from None


def _run_printed_curl(line: str) -> tuple[int, str]:
    argv = shlex.split(line)
    assert argv[0] == "curl"
    if shutil.which("curl"):
        out = subprocess.run([*argv, "--noproxy", "*", "-w", "\n%{http_code}"], capture_output=True, text=True,
                             timeout=20)
        body, _, code = out.stdout.rpartition("\n")
        return int(code), body
    url = next(a for a in argv if a.startswith("http"))
    header = argv[argv.index("-H") + 1]
    name, _, value = header.partition(": ")
    r = httpx.get(url, headers={name: value}, trust_env=False, timeout=10)
    return r.status_code, r.text


def test_quickstart_with_envoy_prints_a_working_curl(envoy_binary, tmp_path):
    port, listen = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env["AUTHSERVER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'quick.db'}"
    log = tmp_path / "quickstart.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "authserver", "quickstart", "--with-envoy", "--port", str(port),
             "--envoy-listen", f"127.0.0.1:{listen}"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    envoy_pid = None
    try:
        curl_line = rf"^\s*(curl -s http://127\.0\.0\.1:{listen}/hello -H 'Authorization: Bearer sk_live_\S+')$"
        curl = _wait_for(log, curl_line, proc, timeout=60).group(1)
        envoy_pid = int(_wait_for(log, r"\(pid (\d+),", proc, timeout=5).group(1))
        admin_key = _wait_for(log, r"export ADMIN_KEY='(sk_admin_\S+)'", proc, timeout=5).group(1)

        # the printed curl, exactly as printed, on the first try
        status, body = _run_printed_curl(curl)
        assert status == 200, body
        assert '"scope": "read"' in body and '"x-api-key-id"' in body

        http = httpx.Client(trust_env=False, timeout=10)
        gw = f"http://127.0.0.1:{listen}"
        api_key = re.search(r"Bearer (sk_live_\S+)'", curl).group(1)
        assert http.get(f"{gw}/hello").status_code == 401
        assert http.get(f"{gw}/write/x", headers={"Authorization": f"Bearer {api_key}"}).status_code == 403
        # a key minted now works through Envoy at once (pushed; the JWKS cache is the default 300 s)
        admin = {"Authorization": f"Bearer {admin_key}"}
        r = http.post(f"http://127.0.0.1:{port}/v1/keys", json={"name": "later", "scopes": ["write"]}, headers=admin)
        assert r.status_code == 201, r.text
        later = r.json()["key"]

        def status_of(key: str) -> int:
            return http.get(f"{gw}/write/x", headers={"Authorization": f"Bearer {key}"}).status_code

        wait_until(lambda: status_of(later) == 200, 1.0, interval=0.01, what="the new key works through Envoy")
        # and a revoked one stops at once
        assert http.delete(f"http://127.0.0.1:{port}/v1/keys/{r.json()['id']}", headers=admin).status_code == 200
        wait_until(lambda: status_of(later) == 401, 1.0, interval=0.01, what="the revoked key is refused")
        http.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # what Ctrl-C does: it stops Envoy and the upstream too
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    # Envoy went with it
    if envoy_pid is not None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(envoy_pid):
            time.sleep(0.1)
        if _alive(envoy_pid):
            os.kill(envoy_pid, signal.SIGKILL)
            pytest.fail("Envoy outlived `authserver quickstart --with-envoy`")


def _alive(pid: int) -> bool:
    if not os.path.isdir("/proc"):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
