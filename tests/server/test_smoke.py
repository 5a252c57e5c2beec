import jwt as pyjwt


async def test_mint_appears_in_jwks_and_verifies_independently(client, admin_headers, tenant):
    r = await client.post("/v1/keys", json={"name": "k", "scopes": ["read", "write"]}, headers=admin_headers)
    assert r.status_code == 201, r.text
    body = r.json()
    jwks = (await client.get("/t/default/.well-known/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [body["id"]]
    jwk = pyjwt.PyJWK(jwks["keys"][0])
    claims = pyjwt.decode(body["key"][len("sk_live_"):], jwk.key, algorithms=["RS256"], audience="api://default",
                          issuer="http://testserver.local/t/default")
    assert claims["scope"] == "read write" and claims["jti"] == body["id"]
    r = await client.delete(f"/v1/keys/{body['id']}", headers=admin_headers)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert body["id"] not in [k["kid"] for k in jwks["keys"]]
    assert len(jwks["keys"]) == 1  # the sentinel: never an empty set
