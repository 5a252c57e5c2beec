"""The consumer portal in a real browser (issue 15): headless Chromium driven by
Playwright against a real `authserver serve` (the fixtures and helpers of
test_portal_browser.py). The customer arrives from another site, as from the
producer's application, by a one-time link.
"""

from __future__ import annotations

import time

import httpx
from _proc import cli
from test_portal_browser import (  # noqa: F401  # fixtures
    browser,
    copy_key,
    jwks,
    live_server,
    page,
    shots,
    sign_in,
    verify,
)

POLICY = {"max_keys": 2, "allowed_scopes": ["read", "write"], "max_lifetime": 30 * 86400}


def api_of(server, admin_key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)


def link_for(api: httpx.Client, subject: str, **body) -> str:
    r = api.post("/v1/portal/sessions", json={"subject": subject, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["url"])


def arrive(pg, url: str) -> None:
    """Follow the link from a page that is not the portal's (the producer's app)."""
    pg.set_content(f'<a id="go" href="{url}">Manage your API keys</a>')
    pg.click("#go")


def kids(server) -> list[str]:
    return [k["kid"] for k in jwks(server)["keys"]]


def test_consumer_signs_in_creates_rolls_and_revokes_only_their_keys(page, live_server, shots):  # noqa: F811
    server, admin_key = live_server
    api = api_of(server, admin_key)
    given = api.post("/v1/keys", json={"name": "given by support", "subject": "cus_acme", "scopes": ["read"]}).json()
    theirs = api.post("/v1/keys", json={"name": "globex prod", "subject": "cus_globex"}).json()
    back = "http://localhost:9/account"
    url = link_for(api, "cus_acme", return_url=back, policy=POLICY)

    arrive(page, url)
    page.wait_for_url("**/portal/my/keys")
    assert page.locator("#consumer-subject").inner_text() == "cus_acme"
    assert page.get_by_role("link", name="Back to the application").get_attribute("href") == back
    cookie = {c["name"]: c for c in page.context.cookies()}["authserver_portal"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.locator(f'tr[data-key-id="{given["id"]}"]').is_visible()
    assert theirs["id"] not in page.content()
    shots(page, "consumer-keys")

    # --- create: a policy refusal is a form error, then a key within it ----------------
    page.get_by_role("link", name="Create a key").first.click()
    assert page.get_by_label("Never expires").count() == 0  # the policy requires an expiry
    page.get_by_label("Name").fill("my laptop")
    page.get_by_label("read", exact=True).check()
    page.get_by_label("Number of days").evaluate("e => e.removeAttribute('max')")  # past the form's own hint
    page.get_by_label("Number of days").fill("31")
    with page.expect_response(lambda r: r.url.endswith("/portal/my/keys") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Create key").click()
    assert answer.value.status == 422
    assert "must expire within 30 days" in page.locator("#form-error").inner_text()
    page.get_by_label("Number of days").fill("10")
    with page.expect_response(lambda r: r.url.endswith("/portal/my/keys") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Create key").click()
    assert answer.value.status == 201
    page.get_by_role("heading", name="Key created").wait_for()
    shots(page, "consumer-key-created")
    key = copy_key(page)
    claims = verify(server, key)
    assert claims["sub"] == "cus_acme" and claims["scope"] == "read" and claims["exp"] - claims["iat"] == 10 * 86400
    page.get_by_role("link", name="back to the keys").click()
    page.wait_for_url("**/portal/my/keys")
    assert page.get_by_role("link", name="Create a key").count() == 0  # 2 of 2 active keys

    # --- roll with grace ----------------------------------------------------------------
    page.locator(f'tr[data-key-id="{claims["jti"]}"]').get_by_role("link", name="Roll…").click()
    page.get_by_label("Grace period amount").fill("1")
    page.get_by_label("Grace period unit").select_option("hours")
    page.get_by_role("button", name="Roll key").click()
    page.get_by_role("heading", name="Key rolled").wait_for()
    new_claims = verify(server, copy_key(page))
    assert new_claims["sub"] == "cus_acme" and new_claims["jti"] != claims["jti"]
    assert claims["jti"] in kids(server) and new_claims["jti"] in kids(server)  # both, during the grace period
    assert api.get(f"/v1/keys/{claims['jti']}").json()["state"] == "rolling"

    # --- revoke -----------------------------------------------------------------------------
    page.goto("/portal/my/keys")
    page.locator(f'tr[data-key-id="{given["id"]}"]').get_by_role("link", name="Revoke…").click()
    page.get_by_role("button", name="Revoke key").click()
    page.get_by_text("is revoked.").wait_for()
    assert given["id"] not in kids(server)

    # --- a key's page: its usage chart, within a phone's width --------------------------------
    page.goto("/portal/my/keys")
    page.locator(f'tr[data-key-id="{new_claims["jti"]}"] a.name').click()  # the name leads to the key's page
    page.get_by_role("img", name="Requests per day (UTC) by status class, last 14 days").wait_for()
    page.set_viewport_size({"width": 390, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.set_viewport_size({"width": 1280, "height": 800})

    # --- another subject's key: in the URL, and swapped into a form ---------------------------
    for path in (f"/portal/my/keys/{theirs['id']}", f"/portal/my/keys/{theirs['id']}/revoke"):
        answer = page.goto(path)
        assert answer is not None and answer.status == 404, path
    page.goto(f"/portal/my/keys/{new_claims['jti']}/revoke")
    form = page.locator("form[action$='/revoke']")
    form.evaluate(f"f => f.action = '/portal/my/keys/{theirs['id']}/revoke'")
    with page.expect_response(lambda r: r.url.endswith(f"/{theirs['id']}/revoke")) as swapped:
        page.get_by_role("button", name="Revoke key").click()
    assert swapped.value.status == 404
    assert theirs["id"] in kids(server) and api.get(f"/v1/keys/{theirs['id']}").json()["state"] == "active"

    # --- never the admin pages ------------------------------------------------------------------
    for path in ("/portal/keys", "/portal/admin-keys", "/portal/audit"):
        answer = page.goto(path)
        assert answer is not None and answer.status == 403, path

    actors = {e["actor"] for e in api.get("/v1/audit", params={"limit": 20}).json()["data"]
              if e["action"] in ("key.mint", "key.roll", "key.revoke") and e["target"] in
              (claims["jti"], new_claims["jti"], given["id"])}
    assert "portal:cus_acme" in actors


def test_replayed_and_expired_links_are_refused(browser, live_server, shots):  # noqa: F811
    server, admin_key = live_server
    api = api_of(server, admin_key)
    url = link_for(api, "cus_replay", policy=POLICY)

    def fresh_page():
        ctx = browser.new_context(base_url=server.url)
        return ctx, ctx.new_page()

    first_ctx, first = fresh_page()
    arrive(first, url)
    first.wait_for_url("**/portal/my/keys")
    # the same link again, from another browser (say, a copy in someone's history): refused
    other_ctx, other = fresh_page()
    with other.expect_response(lambda r: "/portal/sign-in/" in r.url) as answer:
        arrive(other, url)
    assert answer.value.status == 401
    other.get_by_text("This sign-in link cannot be used").wait_for()
    shots(other, "consumer-link-refused")
    assert other.goto("/portal/my/keys").status == 401  # type: ignore[union-attr]
    # ...and from the first browser too: its session goes on, the link does not sign in again
    answer = first.goto(url)
    assert answer is not None and answer.status == 401

    # expired: a link from the CLI with a one-second ttl
    late = cli(server.env, "portal", "session", "--subject", "cus_late", "--ttl", "1", "--json")["url"]
    time.sleep(1.5)
    with other.expect_response(lambda r: "/portal/sign-in/" in r.url) as answer:
        arrive(other, late)
    assert answer.value.status == 401
    first_ctx.close()
    other_ctx.close()


def test_an_admin_makes_a_sign_in_link_for_a_subject_in_the_portal(page, browser, live_server, shots):  # noqa: F811
    """The key page's button: the same link as POST /v1/portal/sessions (default
    policy), shown once, masked; the customer it is sent to is that subject."""
    server, admin_key = live_server
    api = api_of(server, admin_key)
    mine = api.post("/v1/keys", json={"name": "helped by support", "subject": "cus_linked"}).json()
    other = api.post("/v1/keys", json={"name": "someone else", "subject": "cus_other"}).json()
    sign_in(page, admin_key)
    page.goto(f"/portal/keys/{mine['id']}")
    shots(page, "admin-key-with-link-button")
    with page.expect_response(lambda r: r.url.endswith("/portal/sign-in-links") and r.request.method == "POST") as a:
        page.get_by_role("button", name="Sign-in link for this subject").click()
    assert a.value.status == 201 and a.value.headers["cache-control"].startswith("no-store")
    page.get_by_role("heading", name="Sign-in link for cus_linked").wait_for()
    shots(page, "admin-sign-in-link")
    url = copy_key(page)
    assert url.startswith(f"{server.url}/portal/sign-in/")
    assert url not in page.inner_text("body")  # masked on screen
    events = api.get("/v1/audit", params={"action": "portal.link"}).json()["data"]
    assert events[0]["details"]["subject"] == "cus_linked"

    customer = browser.new_context(base_url=server.url)
    try:
        them = customer.new_page()
        arrive(them, url)
        them.wait_for_url("**/portal/my/keys")
        assert them.locator("#consumer-subject").inner_text() == "cus_linked"
        assert them.locator(f'tr[data-key-id="{mine["id"]}"]').is_visible()
        assert other["id"] not in them.content()
        arrive(them, url)  # once only
        them.get_by_role("heading", name="This link cannot be used").wait_for()
    finally:
        customer.close()
