"""The developer portal in a real browser: headless Chromium (Debian's package)
driven by Playwright against a real `authserver serve` process.

Chromium missing: the test fails when CI is set, and is skipped otherwise.
Never run `playwright install`: we use /usr/bin/chromium.

Screenshots go to a temporary directory; set AUTHSERVER_TEST_SCREENSHOTS=docs/screenshots
to refresh the ones in the repository.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest
from _env import IN_CI
from _proc import Server, cli, free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _chromium() -> str:
    exe = os.environ.get("AUTHSERVER_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is not installed (pip install -e '.[test]')"
    else:
        missing = None if Path(exe).exists() else "chromium is not installed (apt-get install -y chromium)"
    if missing:
        if IN_CI:
            pytest.fail(f"{missing}; CI is set, so the browser test must run")
        pytest.skip(missing)
    return exe


@pytest.fixture(scope="module")
def live_server():
    """`authserver serve` on a free 127.0.0.1 port, a temporary SQLite file,
    the default tenant created before the start."""
    tmp = Path(tempfile.mkdtemp(prefix="portal-browser-"))
    port = free_port()
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'authserver.db'}",
        "AUTHSERVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "AUTHSERVER_REDIS_URL": "",
        "AUTHSERVER_LOG_JSON": "false",
    }
    admin_key = cli(env, "tenant", "create", "default", "--json")["admin_key"]
    server = Server(env, port=port, log_dir=tmp).start()
    try:
        yield server, admin_key
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path):
    target = os.environ.get("AUTHSERVER_TEST_SCREENSHOTS")
    out = (REPO / target) if target and not os.path.isabs(target) else Path(target) if target else tmp_path
    out.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        page.screenshot(path=str(out / f"{name}.png"), full_page=True)

    return shot


@pytest.fixture
def page(browser, live_server):
    server, _ = live_server
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 820},
                                  color_scheme="light", locale="en-US")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
          if msg.type == "error" and "the server responded with a status of 4" not in msg.text else None)
    yield pg
    context.close()
    assert problems == [], problems  # e.g. a CSP violation or a script error


def jwks(server) -> dict:
    return httpx.get(f"{server.url}/t/default/.well-known/jwks.json", timeout=5).json()


def verify(server, key: str) -> dict:
    """Check a key as a gateway would: PyJWT against the served JWKS."""
    assert key.startswith("sk_live_"), key[:12]
    token = key[len("sk_live_"):]
    kid = pyjwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks(server)["keys"] if k["kid"] == kid)
    return pyjwt.decode(token, pyjwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], audience="api://default",
                        issuer=f"{server.url}/t/default")


def sign_in(page, admin_key: str) -> None:
    page.goto("/portal/login")
    page.get_by_label("Admin key").fill(admin_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/keys")


def copy_key(page) -> str:
    """Click Copy and read the clipboard back; the key stays masked."""
    secret = page.locator("#secret-key")
    assert secret.get_attribute("type") == "password"
    page.evaluate("navigator.clipboard.writeText('')")
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("The key is on your clipboard.").wait_for()
    assert secret.get_attribute("type") == "password"  # copying did not reveal it
    key = page.evaluate("navigator.clipboard.readText()")
    assert key == secret.input_value()
    return key


def test_rejected_sign_in(page, live_server, shots):
    server, admin_key = live_server
    page.goto("/portal/login")
    page.get_by_label("Admin key").fill(admin_key[:-8] + "AAAAAAAA")
    with page.expect_response(re.compile(r"/portal/login$")) as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    page.get_by_text("Sign-in failed. Check the admin key and try again.").wait_for()
    assert page.get_by_label("Admin key").input_value() == ""  # never echoed back
    assert page.get_by_label("Admin key").get_attribute("aria-invalid") == "true"
    shots(page, "login-rejected")
    page.goto("/portal/keys")
    page.wait_for_url("**/portal/login")


def test_portal_sign_in_create_copy_roll_revoke(page, live_server, shots):
    server, admin_key = live_server
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)

    page.goto("/portal/login")
    headers = page.goto("/portal/login").all_headers()
    assert headers["x-frame-options"] == "DENY" and "script-src 'self'" in headers["content-security-policy"]
    shots(page, "login")
    sign_in(page, admin_key)
    assert page.get_by_role("heading", name="API keys").is_visible()
    assert "Tenant default" in page.locator(".who").inner_text()
    # cookies: the session id only, HttpOnly and SameSite=Strict; no admin key
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["authserver_portal"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert all(admin_key.split(".")[-1] not in c["value"] for c in cookies.values())

    # a few keys made through the API, so the list has something to show
    for body in ({"name": "billing service", "subject": "team-billing", "scopes": ["invoices:read", "invoices:write"]},
                 {"name": "mobile app (iOS)", "subject": "team-mobile", "scopes": ["read"], "expires_in": 90 * 86400},
                 {"name": "old CI runner", "subject": "team-platform", "scopes": ["deploy"]}):
        r = api.post("/v1/keys", json={**body, "algorithm": "ES256"})
        assert r.status_code == 201
    old_ci = r.json()["id"]

    # --- create ---------------------------------------------------------------
    page.get_by_role("link", name="Create a key").first.click()
    page.get_by_label("Name").fill("analytics exporter")
    page.get_by_label("Subject (optional)").fill("team-data")
    page.get_by_label("Scopes (optional)").fill("events:read, reports:read")
    page.get_by_label("Expires after").check()
    page.get_by_label("Number of days").fill("30")
    shots(page, "key-new")
    with page.expect_response(lambda r: r.url.endswith("/portal/keys") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Create key").click()
    assert answer.value.status == 201
    assert "no-store" in answer.value.headers["cache-control"]
    page.get_by_role("heading", name="Key created").wait_for()
    assert page.get_by_text("Copy this key now. You won't see it again.").is_visible()
    secret = page.locator("#secret-key")
    assert secret.get_attribute("type") == "password"
    shots(page, "key-created")
    key = copy_key(page)
    assert key not in page.locator("body").inner_text()  # masked: not on screen
    claims = verify(server, key)
    assert claims["sub"] == "team-data" and claims["scope"] == "events:read reports:read"
    assert claims["exp"] - claims["iat"] == 30 * 86400
    # reveal toggles the mask, and back
    reveal = page.get_by_role("button", name="Reveal")
    reveal.click()
    assert secret.get_attribute("type") == "text"
    assert page.get_by_role("button", name="Hide").get_attribute("aria-pressed") == "true"
    page.get_by_role("button", name="Hide").click()
    assert secret.get_attribute("type") == "password"

    # the list shows its hint, never the key
    page.get_by_role("link", name="back to the keys").click()
    page.wait_for_url("**/portal/keys")
    assert key not in page.content()
    row = page.locator(f'tr[data-key-id="{claims["jti"]}"]')
    assert f"sk_live_…{key[-4:]}" in row.inner_text() and "Active" in row.inner_text()

    # --- roll, through the dialog -----------------------------------------------
    row.get_by_role("link", name="Roll…").click()
    dialog = page.locator("#roll-dialog")
    dialog.wait_for(state="visible")
    assert "analytics exporter" in dialog.inner_text()
    assert dialog.get_by_label("Grace period amount").input_value() == "24"
    assert dialog.get_by_label("Grace period unit").input_value() == "hours"
    dialog.get_by_label("Grace period amount").fill("2")
    shots(page, "roll-dialog")
    with page.expect_response(lambda r: r.url.endswith("/roll") and r.request.method == "POST") as answer:
        dialog.get_by_role("button", name="Roll key").click()
    assert answer.value.status == 201
    page.get_by_role("heading", name="Key rolled").wait_for()
    new_key = copy_key(page)
    new_claims = verify(server, new_key)
    assert new_claims["sub"] == "team-data" and new_claims["jti"] != claims["jti"]
    kids = [k["kid"] for k in jwks(server)["keys"]]
    assert claims["jti"] in kids and new_claims["jti"] in kids  # both during the grace period
    verify(server, key)  # the old key still verifies
    old = api.get(f"/v1/keys/{claims['jti']}").json()
    assert old["state"] == "rolling" and old["grace_ends_at"] - old["created_at"] >= 7200

    # --- revoke, through the dialog ---------------------------------------------
    page.goto("/portal/keys")
    assert "Rolling" in page.locator(f'tr[data-key-id="{claims["jti"]}"]').inner_text()
    page.locator(f'tr[data-key-id="{old_ci}"]').get_by_role("link", name="Revoke…").click()
    dialog = page.locator("#revoke-dialog")
    dialog.wait_for(state="visible")
    assert "old CI runner" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="hidden")
    assert old_ci in [k["kid"] for k in jwks(server)["keys"]]  # cancel changes nothing
    page.locator(f'tr[data-key-id="{old_ci}"]').get_by_role("link", name="Revoke…").click()
    dialog.get_by_role("button", name="Revoke key").click()
    page.get_by_text("is revoked: it left the JWKS.").wait_for()
    assert old_ci not in [k["kid"] for k in jwks(server)["keys"]]
    assert "Revoked" in page.locator(f'tr[data-key-id="{old_ci}"]').inner_text()
    shots(page, "keys")

    # filter and search
    page.get_by_label("State").select_option("revoked")
    page.wait_for_url(re.compile(r"state=revoked"))
    assert page.locator("tbody tr").count() == 1
    page.get_by_label("Search").fill("TEAM-DATA")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"q=TEAM-DATA"))
    assert page.get_by_text("No key matches this filter.").is_visible()

    # --- audit ------------------------------------------------------------------
    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url("**/portal/audit")
    text = page.locator("table").inner_text()
    for action in ("key.revoke", "key.roll", "key.mint", "tenant.create"):
        assert action in text
    shots(page, "audit")

    # --- sign out ---------------------------------------------------------------
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/portal/login?out=1")
    assert page.get_by_text("You are signed out.").is_visible()
    page.goto("/portal/keys")
    page.wait_for_url("**/portal/login")
    api.close()


# --- layout: nothing overflows, whatever the keys are called ----------------------

_LONG = [  # the longest name and subject the schema allows, with and without places to break
    {"name": "n" * 200, "subject": "s" * 256, "scopes": ["scope:" + "x" * 120]},
    {"name": "billing-" * 25, "subject": "team-billing-production-eu-west-1." * 7, "scopes": ["read", "write"]},
    {"name": "a name with spaces " * 10, "subject": "user@" + "example." * 30 + "com",
     "scopes": [f"s{i}" for i in range(40)]},
]
# what must be inside the viewport: every Roll/Revoke button, wholly, and inside its table's box
_OVERFLOW = """() => {
  const vw = document.documentElement.clientWidth;
  const out = [];
  if (document.documentElement.scrollWidth > vw) out.push(`page ${document.documentElement.scrollWidth} > ${vw}`);
  for (const b of document.querySelectorAll('td.actions .btn')) {
    const r = b.getBoundingClientRect();
    const box = b.closest('.table-wrap').getBoundingClientRect();
    if (r.left < 0 || r.right > vw || r.left < box.left || r.right > box.right)
      out.push(`${b.textContent} at ${r.left}..${r.right}, box ${box.left}..${box.right}, viewport ${vw}`);
  }
  for (const w of document.querySelectorAll('.table-wrap'))
    if (w.scrollWidth > w.clientWidth + 1) out.push(`table ${w.scrollWidth} > its box ${w.clientWidth}`);
  return out;
}"""


@pytest.mark.parametrize("width", [1280, 390, 1920])
def test_long_names_and_subjects_never_overflow(browser, live_server, shots, width):
    server, admin_key = live_server
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    made = []
    for body in _LONG:
        r = api.post("/v1/keys", json={**body, "algorithm": "ES256"})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    context = browser.new_context(base_url=server.url, viewport={"width": width, "height": 900},
                                  color_scheme="light", locale="en-US")
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        sign_in(page, admin_key)
        for kid in made:  # each long key has both buttons
            row = page.locator(f'tr[data-key-id="{kid}"]')
            assert row.get_by_role("link", name="Roll…").is_visible()
            assert row.get_by_role("link", name="Revoke…").is_visible()
        assert page.evaluate(_OVERFLOW) == []
        shots(page, f"keys-long-{width}")
        # the buttons work where they are: the roll dialog opens for the longest key, within the viewport
        page.locator(f'tr[data-key-id="{made[0]}"]').get_by_role("link", name="Roll…").click()
        dialog = page.locator("#roll-dialog")
        dialog.wait_for(state="visible")
        box = dialog.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        dialog.get_by_role("button", name="Cancel").click()
        for path in ("/portal/audit", f"/portal/audit?key={made[0]}", f"/portal/keys/{made[1]}/roll",
                     f"/portal/keys/{made[2]}/revoke", "/portal/keys/new"):
            page.goto(path)
            assert page.evaluate(_OVERFLOW) == [], path
    finally:
        context.close()


# --- a key's usage chart -----------------------------------------------------------

def _record_usage(server, kid: str, calls: list[tuple[int, int]]) -> None:
    """Usage through the usage service, on the server's database, as the
    access-log service writes it."""
    import asyncio
    import concurrent.futures

    from authserver.offline import open_core
    from authserver.services.usage import UsageRecorder
    from authserver.settings import Settings

    async def run() -> None:
        settings = Settings(database_url=server.env["AUTHSERVER_DATABASE_URL"], public_url=server.url)
        async with open_core(settings) as core:
            rec = UsageRecorder(core.sessions)
            for status, at in calls:
                rec.record("default", kid, status, at)
            await rec.flush()

    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


_CHART = """() => {
  const svg = document.querySelector('svg.usage-chart');
  const box = svg.getBoundingClientRect();
  const bars = [...svg.querySelectorAll('rect.bar')].map(r => r.getBoundingClientRect())
    .map(r => ({left: r.left, right: r.right, height: r.height}));
  return {width: box.width, height: box.height, left: box.left, right: box.right, bars,
          vw: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth};
}"""


@pytest.mark.parametrize("width", [390, 1280])
def test_usage_chart_renders_with_bars_and_fits(browser, live_server, shots, width):
    import time

    server, admin_key = live_server
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    r = api.post("/v1/keys", json={"name": f"busy service {width}", "algorithm": "ES256"})
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    now = int(time.time())
    calls = [(200, now - d * 86400) for d in range(14) for _ in range(5 + 3 * d)]
    calls += [(429, now - 86400)] * 7 + [(503, now - 3 * 86400)] * 2
    _record_usage(server, kid, calls)

    context = browser.new_context(base_url=server.url, viewport={"width": width, "height": 900},
                                  color_scheme="light", locale="en-US")
    problems: list[str] = []
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        sign_in(page, admin_key)
        row = page.locator(f'tr[data-key-id="{kid}"]')
        last_used = row.locator("time.last-used")
        assert last_used.inner_text() == "just now"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", last_used.get_attribute("title"))
        assert page.evaluate(_OVERFLOW) == []
        row.get_by_role("link", name=f"busy service {width}").click()
        page.wait_for_url(f"**/portal/keys/{kid}")
        chart = page.get_by_role("img", name=re.compile("Requests per day"))
        assert chart.is_visible()
        got = page.evaluate(_CHART)
        assert got["scroll"] <= got["vw"], got  # no horizontal overflow
        assert 0 <= got["left"] and got["right"] <= got["vw"] and got["width"] > 200 and got["height"] > 100
        assert len(got["bars"]) == 14 + 2  # every day's 2xx, one day's 4xx, one day's 5xx
        assert all(b["height"] > 0 and got["left"] <= b["left"] < b["right"] <= got["right"] for b in got["bars"])
        summary = page.locator("#usage-summary").inner_text()
        assert f"{len(calls)} requests" in summary and "7 4xx" in summary and "2 5xx" in summary
        page.get_by_text("Numbers per day").click()
        assert page.locator(".usage-table tbody tr").count() == 14
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        shots(page, f"key-usage-{width}")
    finally:
        context.close()
        api.close()
    assert problems == [], problems  # e.g. a CSP violation
