"""The portal's admin-keys page over HTTP (issue 16 item 1), on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import jwt as pyjwt
from portal_helpers import Portal, csrf_of, nonce_of, secret_of

ISSUER = "http://testserver.local/t/default"


def key_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-key-id="([^"]+)"', page)


def kid_of(key: str) -> str:
    return pyjwt.get_unverified_header(key[key.index("eyJ"):])["kid"]


async def mint_form(portal: Portal, expect: int = 201, **fields):
    page = await portal.get("/portal/admin-keys")
    data = {"name": "ops", "scopes": ["keys:read", "keys:write", "admin-keys:write"], "expiry": "days",
            "expiry_days": "30", "form_nonce": nonce_of(page.text), **fields}
    return await portal.post("/portal/admin-keys", data, expect=expect)


async def test_list_mint_once_and_sign_in_with_it(portal, client, tenant, clock):
    first = kid_of(tenant[1])
    page = (await portal.get("/portal/admin-keys")).text
    assert 'href="/portal/admin-keys" aria-current="page"' in page  # the nav link
    assert key_ids(page) == [first] and "this session" in page and "keys:write" in page
    assert "authserver admin-keys mint --tenant default" in page  # the recovery path is on the page

    r = await mint_form(portal, name="ci bot", scopes=["keys:read"], expiry_days="7")
    assert r.headers["cache-control"].startswith("no-store")
    key = secret_of(r.text)
    assert key.startswith("sk_admin_eyJ") and r.text.count(key) == 2  # the input and its <noscript> twin
    kid = kid_of(key)
    row = client.app.state.core.cache.get("default").published[kid]
    claims = pyjwt.decode(key[len("sk_admin_"):], pyjwt.PyJWK(row.jwk).key, algorithms=[row.jwk["alg"]],
                          audience=f"{ISSUER}/admin", issuer=ISSUER)
    assert claims["scope"] == "keys:read" and claims["exp"] == claims["iat"] + 7 * 86400
    # shown once: not on the list afterwards, and a resent form mints nothing
    listed = (await portal.get("/portal/admin-keys")).text
    assert set(key_ids(listed)) == {kid, first} and key not in listed and key.rsplit(".", 1)[1] not in listed
    again = await portal.post("/portal/admin-keys", {"name": "x", "scopes": "keys:read", "expiry": "never",
                                                     "form_nonce": nonce_of(r.text)}, expect=201)
    assert "sk_admin_eyJ" in again.text  # a fresh form nonce on the answer page works once...
    replay = await portal.post("/portal/admin-keys", {"name": "x", "scopes": "keys:read", "expiry": "never",
                                                      "form_nonce": nonce_of(r.text)}, expect=409)
    assert "sk_admin_" not in replay.text
    # the read-only key signs in, lists, and is offered no mint or revoke
    client.cookies.clear()  # another browser (the first session is not used again)
    ro = Portal(client)
    await ro.login(key)
    ro_page = (await ro.get("/portal/admin-keys")).text
    assert kid in key_ids(ro_page) and "Mint an admin key" not in ro_page and "Revoke…" not in ro_page
    await ro.get(f"/portal/admin-keys/{first}/revoke", expect=403)
    await ro.post(f"/portal/admin-keys/{first}/revoke", expect=403)
    await ro.post("/portal/admin-keys", {"name": "y", "scopes": "keys:read", "expiry": "never"}, expect=403)


async def test_mint_refuses_bad_input_and_scopes_beyond_the_session(portal, client, tenant):
    for fields, message in (({"name": " "}, "Give the admin key a name"),
                            ({"expiry_days": "0"}, "between 1 and"),
                            ({"expiry": "soon"}, "Choose an expiry"),
                            ({"scopes": ["root"]}, "admin scopes")):
        r = await mint_form(portal, expect=422, **fields)
        assert message in r.text and "sk_admin_eyJ" not in r.text
    # a key that cannot write API keys cannot grant that scope
    r = await mint_form(portal, name="manager", scopes=["keys:read", "admin-keys:write"], expiry="never")
    client.cookies.clear()  # another browser
    manager = Portal(client)
    await manager.login(secret_of(r.text))
    page = (await manager.get("/portal/admin-keys")).text
    assert 'value="keys:write"' not in page  # not offered...
    r = await mint_form(manager, expect=403, scopes=["keys:read", "keys:write"])  # ...nor accepted
    assert "keys:write" in r.text and "sk_admin_eyJ" not in r.text
    await manager.post("/portal/admin-keys", {"csrf_token": "x", "name": "y", "form_nonce": "z"}, expect=403)


async def test_revoke_confirm_last_key_and_own_session(portal, client, tenant):
    first = kid_of(tenant[1])
    # the only manager: refused with an explanation, nothing changes
    confirm = (await portal.get(f"/portal/admin-keys/{first}/revoke")).text
    assert "You are signed in with this key" in confirm and csrf_of(confirm) == portal.csrf
    r = await portal.post(f"/portal/admin-keys/{first}/revoke", expect=409)
    assert "last active admin key" in r.text
    assert (await client.get("/v1/admin-keys", headers={"Authorization": f"Bearer {tenant[1]}"})).status_code == 200
    # another one, then revoke it: it stops working at once
    other = secret_of((await mint_form(portal, name="other")).text)
    r = await portal.post(f"/portal/admin-keys/{kid_of(other)}/revoke", expect=303)
    assert r.headers["location"] == "/portal/admin-keys"
    assert "is revoked" in (await portal.get("/portal/admin-keys")).text
    assert (await client.get("/v1/keys", headers={"Authorization": f"Bearer {other}"})).status_code == 401
    gone = (await portal.get(f"/portal/admin-keys/{kid_of(other)}/revoke")).text
    assert "no longer works" in gone and "Revoke admin key</button>" not in gone
    # with a second manager, revoking the session's own key ends the session
    successor = secret_of((await mint_form(portal, name="successor")).text)
    await portal.post(f"/portal/admin-keys/{first}/revoke", expect=303)
    r = await portal.get("/portal/admin-keys", expect=303)
    assert r.headers["location"] == "/portal/login?ended=1"
    r = await client.get("/v1/audit", headers={"Authorization": f"Bearer {successor}"})
    events = [(e["action"], e["target"]) for e in r.json()["data"]]
    assert ("admin_key.revoke", first) in events and ("admin_key.revoke", kid_of(other)) in events


async def test_bad_ids_and_cursors_are_4xx_pages(portal):
    for path in ("/portal/admin-keys/a%00b/revoke", "/portal/admin-keys/" + "A" * 43 + "/revoke",
                 "/portal/admin-keys?cursor=MToA", "/portal/admin-keys?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk6YWJj",
                 "/portal/admin-keys?cursor=%00"):
        r = await portal.client.get(path, follow_redirects=False)
        assert 400 <= r.status_code < 500, (path, r.status_code)
        assert "Traceback" not in r.text and 'File "' not in r.text
    r = await portal.post("/portal/admin-keys/a%00b/revoke")
    assert 400 <= r.status_code < 500
