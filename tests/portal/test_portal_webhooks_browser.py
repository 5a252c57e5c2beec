"""The webhooks page in a real Chromium against a real `authserver serve`
(with its sender) and a local receiver: add an endpoint, copy its secret,
see a delivery arrive and replay it with the same webhook-id."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest
from _proc import Server, cli, free_port, wait_until
from _webhooks import Receiver, verified
from test_portal_browser import CHROMIUM_ARGS, _chromium, shots  # noqa: F401  # shots: a fixture

import keys.webhooks as wh


@pytest.fixture(scope="module")
def hook_server():
    tmp = Path(tempfile.mkdtemp(prefix="portal-webhooks-"))
    port = free_port()
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'authserver.db'}",
        "AUTHSERVER_PUBLIC_URL": f"http://127.0.0.1:{port}", "AUTHSERVER_REDIS_URL": "",
        "AUTHSERVER_LOG_JSON": "false", "AUTHSERVER_WEBHOOK_KEY": wh.new_box_key(),
        "AUTHSERVER_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true", "AUTHSERVER_WEBHOOK_POLL_SECONDS": "0.1",
    }
    admin_key = cli(env, "tenant", "create", "default", "--json")["admin_key"]
    server = Server(env, port=port, log_dir=tmp).start()
    try:
        yield server, admin_key
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_add_deliver_and_replay_in_the_browser(hook_server, shots):  # noqa: F811
    server, admin_key = hook_server
    rx = Receiver()
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 820})
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
            page = context.new_page()
            page.set_default_timeout(10_000)
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.goto("/portal/login")
            page.get_by_label("Admin key").fill(admin_key)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/portal/keys")
            page.get_by_role("link", name="Webhooks").click()
            page.wait_for_url("**/portal/webhooks")
            page.get_by_label("URL").fill(rx.url)
            page.get_by_label("Description").fill("billing service")
            page.get_by_role("button", name="Add endpoint").click()
            page.get_by_text("Copy this signing secret now").wait_for()
            assert page.locator("#secret-key").get_attribute("type") == "password"
            page.get_by_role("button", name="Copy").click()
            page.get_by_text("on your clipboard").wait_for()
            secret = page.evaluate("navigator.clipboard.readText()")
            assert secret.startswith("whsec_")

            r = httpx.post(f"{server.url}/v1/keys", headers={"Authorization": f"Bearer {admin_key}"},
                           json={"name": "browser"}, timeout=10)
            assert r.status_code == 201
            wait_until(lambda: len(rx.requests) == 1, 10, what="the key.created delivery")
            assert verified(secret, rx.requests[0])["type"] == "key.created"
            page.goto("/portal/webhooks")
            row = page.locator("tr[data-delivery-id]").first
            row.get_by_text("delivered").wait_for()
            shots(page, "webhooks")
            row.get_by_role("button", name="Replay").click()
            page.get_by_text("queued again").wait_for()
            wait_until(lambda: len(rx.requests) == 2, 10, what="the replay")
            assert rx.requests[1].headers["webhook-id"] == rx.requests[0].headers["webhook-id"]
            assert secret not in page.content()
            context.close()
            browser.close()
            assert problems == []
    finally:
        rx.close()
