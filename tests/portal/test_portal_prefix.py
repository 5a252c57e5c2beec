"""Bug 3 in the portal: signing in needs the admin key's own prefix, sk_admin_."""

from __future__ import annotations

from portal_helpers import Portal


async def test_sign_in_with_the_admin_jwt_under_another_prefix_fails(client, tenant):
    admin_key = tenant[1]
    jwt = admin_key[admin_key.index("eyJ"):]
    for prefix in ("sk_live_", "sk_test_", "zz_"):
        r = await Portal(client).login(prefix + jwt, expect=401)
        assert "Sign-in failed" in r.text
    await Portal(client).login(admin_key, expect=303)


async def test_the_portal_uses_the_schema_limits(portal):
    r = await portal.create(name="x" * 201, expect=422)
    assert "200" in r.text
