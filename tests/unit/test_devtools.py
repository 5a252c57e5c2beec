"""authserver_devtools: outside the service, and its helpers do what they say."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from authserver_devtools import EchoUpstream, wait_for_value, wait_until, wait_until_async


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(out.stdout.split())


def test_the_service_never_imports_the_devtools():
    for statement in ("import authserver.app", "from authserver.app import create_app; create_app()",
                      "import authserver.cli"):
        mods = _modules_after(statement)
        assert "authserver.app" in mods or "authserver.cli" in mods
        assert not {m for m in mods if m.startswith("authserver_devtools")}, statement


def test_the_devtools_import_nothing_of_the_service():
    """No import cycle: quickstart imports the devtools, never the other way round."""
    mods = _modules_after("import authserver_devtools")
    assert "authserver_devtools.envoy" in mods
    assert not {m for m in mods if m == "authserver" or m.startswith("authserver.")}


def test_wait_until_returns_the_first_truthy_value_and_retries_exceptions():
    calls = iter([ConnectionError("not yet"), 0, "", "ready"])

    def pred() -> object:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_until(pred, 5, interval=0.001) == "ready"


def test_wait_until_gives_up():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"the thing: not met within 0.05s \(last ValueError"):
        wait_until(lambda: int("x"), 0.05, interval=0.01, what="the thing")
    assert time.monotonic() - t0 < 2
    with pytest.raises(RuntimeError, match="the process died"):
        wait_until(lambda: False, 30, alive=lambda: False)


def test_wait_for_value_names_the_last_value():
    values = iter(range(100))
    assert wait_for_value(lambda: next(values), 3, 5, interval=0.001) >= 0
    with pytest.raises(TimeoutError, match=r"status: no 200 within 0.05 s \(last: 401\)"):
        wait_for_value(lambda: 401, 200, 0.05, interval=0.01, what="status")


async def test_wait_until_async_lets_the_loop_run():
    import asyncio

    done: list[int] = []
    task = asyncio.get_running_loop().call_later(0.05, done.append, 1)
    assert await wait_until_async(lambda: done, 5, interval=0.01) == [1]
    task.cancel()
    with pytest.raises(TimeoutError):
        await wait_until_async(lambda: False, 0.05, interval=0.01)


def test_echo_upstream_echoes_the_forwarded_headers():
    echo = EchoUpstream().start()
    try:
        r = httpx.post(f"http://{echo.address}/x?y=1", headers={"x-api-key-id": "kid1", "x-api-key-scope": "read"},
                       content=b"body", trust_env=False)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = json.loads(r.text)
        assert body["method"] == "POST" and body["path"] == "/x?y=1" and body["upstream"] == "echo"
        assert body["api_key"] == {"id": "kid1", "subject": None, "scope": "read"}
        assert echo.hits == 1
    finally:
        echo.stop()
