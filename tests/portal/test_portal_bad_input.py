"""Bad input to the portal: a clear 4xx page, never a 500, never a traceback in
the log (issue 16 item 5), on SQLite and PostgreSQL (which refuses NUL)."""

from __future__ import annotations

import base64
import logging

import pytest
from portal_helpers import Portal


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged():
    """Everything the app logs at WARNING or above (a traceback is logged at ERROR)."""
    handler = _Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler.records
    root.removeHandler(handler)


def _clean(records) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("cursor", [
    "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk6YWJj",  # 9999...:abc, past int64
    "MToA",  # 1:\x00
    _cursor(f"{2**63}:abc".encode()),
    _cursor(f"{-2**63 - 1}:abc".encode()),
    _cursor(b"1:a\x00b"),
    _cursor(b"\xff\xfe"),
    "not base64 !",
    "a%00b",
])
async def test_a_bad_cursor_is_a_422_page(portal: Portal, logged, cursor):
    r = await portal.client.get("/portal/keys", params={"cursor": cursor})
    assert r.status_code == 422, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("text/html")
    assert "cursor" in r.text and "Traceback" not in r.text
    assert _clean(logged) == []


async def test_a_cursor_the_server_issued_still_pages(portal: Portal):
    for i in range(21):
        await portal.create(name=f"k{i}")
    first = await portal.get("/portal/keys")
    import re

    nxt = re.search(r'cursor=([A-Za-z0-9_%-]+)"', first.text)
    assert nxt, "no next page link"
    second = await portal.client.get("/portal/keys?cursor=" + nxt.group(1))
    assert second.status_code == 200
    one, two = (re.findall(r'<tr data-key-id="([^"]+)"', p.text) for p in (first, second))
    assert len(one) == 20 and len(two) == 1 and not set(one) & set(two)


async def test_a_search_with_a_control_character_is_a_422_page(portal: Portal, logged):
    for q in ("a\x00b", "\x00", "a\nb", "x" * 201):
        r = await portal.client.get("/portal/keys", params={"q": q})
        assert r.status_code == 422, (q, r.status_code, r.text[:500])
        assert "Traceback" not in r.text
    assert _clean(logged) == []


@pytest.mark.parametrize("key_id", ["a\x00b", "\x00", "a b", "x" * 65, "é"])
async def test_a_malformed_key_id_is_a_404_page(portal: Portal, logged, key_id):
    from urllib.parse import quote

    base = "/portal/keys/" + quote(key_id, safe="")
    for method, path in (("GET", ""), ("GET", "/revoke"), ("POST", "/revoke"), ("GET", "/roll"), ("POST", "/roll")):
        data = {"csrf_token": portal.csrf, "grace_value": "1", "grace_unit": "hours"} if method == "POST" else None
        r = await portal.client.request(method, base + path, data=data, follow_redirects=False)
        assert r.status_code == 404, (method, path, r.status_code, r.text[:500])
        assert r.headers["content-type"].startswith("text/html")
    assert _clean(logged) == []


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e308", "nan", "1e400", "-1", "", "x",
                                   "9" * 5000, "0x10", "1_000", "1e3"])
async def test_a_grace_the_server_cannot_use_is_a_422_page_and_nothing_rolls(portal: Portal, logged, value):
    await portal.create(name="roll-me")
    page = await portal.get("/portal/keys")
    import re

    kid = re.search(r'<tr data-key-id="([^"]+)"', page.text).group(1)
    r = await portal.post(f"/portal/keys/{kid}/roll", {"grace_value": value, "grace_unit": "days"})
    assert r.status_code == 422, (value, r.status_code, r.text[:500])
    assert "grace period" in r.text
    assert (await portal.client.get(f"/v1/keys/{kid}", headers={"Authorization": f"Bearer {portal.admin_key}"})
            ).json()["state"] == "active"
    assert _clean(logged) == []


@pytest.mark.parametrize("path", [
    "/portal/static/%00", "/portal/static/a%00b", "/portal/static/portal.js%00.css", "/portal/static/" + "a" * 5000,
    "/portal/static/" + "%2e%2e/" * 3 + "pyproject.toml", "/portal/static/../app.py", "/portal/static/nope.css",
    "/portal/static/", "/portal/static/portal.css/x",
])
async def test_static_files_refuse_bad_names_with_a_404(client, logged, path):
    r = await client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["code"] == "not_found"
    if "%00" in path or "aaaa" in path:  # answered by the static router (the others never reach it)
        assert r.headers["x-content-type-options"] == "nosniff"
    assert _clean(logged) == []


async def test_static_files_still_served(client):
    for path in ("/portal/static/portal.css", "/portal/static/portal.js", "/portal/static/favicon.svg"):
        r = await client.get(path)
        assert r.status_code == 200 and r.content, path
        assert "max-age=3600" in r.headers["cache-control"]
