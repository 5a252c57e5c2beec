"""POST /v1/secret-scanning/github (issue 15): GitHub's secret-scanning partner
endpoint. A P-256 key pair made here stands in for GitHub's; its public half is
served from a file and from a local HTTP server, in GitHub's format."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import threading
from pathlib import Path

import pytest
from _server_helpers import is_problem, jwks_kids, mint
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import keys

PATH = "/v1/secret-scanning/github"
KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


class FakeGitHub:
    """GitHub's side: a signing key pair and its published key document."""

    def __init__(self, key_id: str = KEY_ID) -> None:
        self.entries: list[dict] = []
        self.private = self.add(key_id)

    def add(self, key_id: str) -> ec.EllipticCurvePrivateKey:
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.entries.append({"key_identifier": key_id, "key": pem, "is_current": True})
        return private

    def document(self) -> bytes:
        return json.dumps({"public_keys": self.entries}).encode()

    def headers(self, body: bytes, private: ec.EllipticCurvePrivateKey | None = None,
                key_id: str = KEY_ID) -> dict[str, str]:
        signature = (private or self.private).sign(body, ec.ECDSA(hashes.SHA256()))
        return {"Content-Type": "application/json", "Github-Public-Key-Identifier": key_id,
                "Github-Public-Key-Signature": base64.b64encode(signature).decode()}


def report(*tokens: str, url: str = "https://github.com/octo/leaky/blob/main/app.py",
           source: str = "content") -> bytes:
    return json.dumps([{"token": t, "type": "authserver_api_key", "url": url, "source": source}
                       for t in tokens]).encode()


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def github(tmp_path: Path) -> tuple[FakeGitHub, Path]:
    gh = FakeGitHub()
    path = tmp_path / "github-keys.json"
    path.write_bytes(gh.document())
    return gh, path


@pytest.fixture
async def app(github, tenant, client_factory):
    return await client_factory(secret_scanning_keys_url=str(github[1]))


async def post(client, gh: FakeGitHub, body: bytes, **kw):
    return await client.post(PATH, content=body, headers=gh.headers(body, **kw))


async def audit(client, admin_headers, action: str) -> list[dict]:
    r = await client.get("/v1/audit", params={"action": action}, headers=admin_headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_our_key_is_revoked_and_leaves_the_jwks(app, github, admin_headers):
    gh, _ = github
    key = await mint(app, admin_headers, name="leaky")
    other = await mint(app, admin_headers, name="safe")
    assert key["id"] in await jwks_kids(app)

    r = await post(app, gh, report(key["key"]))
    assert r.status_code == 200, r.text
    assert r.json() == [{"token_hash": sha256(key["key"]), "token_type": "authserver_api_key",
                         "label": "true_positive"}]
    assert r.headers["content-type"].startswith("application/json")

    kids = await jwks_kids(app)
    assert key["id"] not in kids and other["id"] in kids
    got = await app.get(f"/v1/keys/{key['id']}", headers=admin_headers)
    assert got.json()["state"] == "revoked"
    [leaked] = await audit(app, admin_headers, "key.leaked")
    assert leaked["target"] == key["id"] and leaked["actor"] == "github-secret-scanning"
    assert leaked["details"]["url"] == "https://github.com/octo/leaky/blob/main/app.py"
    assert leaked["details"]["source"] == "content" and leaked["details"]["policy"] == "revoke"
    assert key["key"] not in json.dumps(leaked)
    assert len(await audit(app, admin_headers, "key.revoke")) == 1

    # GitHub reports it again: it is no longer a credential of ours
    again = await post(app, gh, report(key["key"]))
    assert again.json()[0]["label"] == "false_positive"
    assert len(await audit(app, admin_headers, "key.leaked")) == 1


async def test_a_leaked_admin_key_is_revoked_too(app, github, admin_headers):
    gh, _ = github
    r = await app.post("/v1/admin-keys", json={"name": "ci", "scopes": ["keys:read"]}, headers=admin_headers)
    assert r.status_code == 201, r.text
    admin = r.json()
    theirs = {"Authorization": f"Bearer {admin['key']}"}
    assert (await app.get("/v1/keys", headers=theirs)).status_code == 200

    r = await post(app, gh, report(admin["key"]))
    assert r.json()[0]["label"] == "true_positive"
    is_problem(await app.get("/v1/keys", headers=theirs), 401)
    [leaked] = await audit(app, admin_headers, "admin_key.leaked")
    assert leaked["target"] == admin["id"]
    assert (await app.get("/v1/keys", headers=admin_headers)).status_code == 200  # the other admin key


async def test_notify_only_tenant_keeps_the_key(app, github, admin_headers, make_settings):
    from authserver.offline import open_core

    gh, _ = github
    async with open_core(make_settings()) as core:
        assert await core.tenants.leak_policy("default") == "revoke"
        await core.tenants.set_leak_policy("default", "notify")
    key = await mint(app, admin_headers)

    r = await post(app, gh, report(key["key"], key["key"]))  # twice in one report: one event
    assert [m["label"] for m in r.json()] == ["true_positive", "true_positive"]
    assert key["id"] in await jwks_kids(app)
    assert (await app.get(f"/v1/keys/{key['id']}", headers=admin_headers)).json()["state"] == "active"
    [leaked] = await audit(app, admin_headers, "key.leaked")
    assert leaked["details"]["policy"] == "notify" and leaked["target"] == key["id"]
    assert await audit(app, admin_headers, "key.revoke") == []


async def test_the_leak_policy_over_http(app, github, admin_headers, tenant):
    """GET/PUT /v1/tenant/leak-policy: the CLI's `tenant leak-policy` for an admin key's
    own tenant; bad values are problems and change nothing; keys:write to set it."""
    url = "/v1/tenant/leak-policy"
    assert (await app.get(url, headers=admin_headers)).json() == {"tenant": tenant[0], "leak_policy": "revoke"}
    for body in ({"leak_policy": "ignore"}, {"leak_policy": "REVOKE"}, {"leak_policy": 1}, {"leak_policy": None},
                 {}, {"leak_policy": "notify", "x": 1}, {"leak_policy": "n" * 100}):
        r = await app.put(url, json=body, headers=admin_headers)
        assert r.status_code in (400, 422) and is_problem(r)["status"] == r.status_code, (body, r.text)
    assert is_problem(await app.put(url, content=b"leak_policy=notify", headers=admin_headers
                                    | {"content-type": "application/x-www-form-urlencoded"}), 415)
    assert is_problem(await app.put(url, json={"leak_policy": "notify"}), 401)
    r = await app.post("/v1/admin-keys", json={"name": "ro", "scopes": ["keys:read"]}, headers=admin_headers)
    ro = {"Authorization": f"Bearer {r.json()['key']}"}
    assert is_problem(await app.put(url, json={"leak_policy": "notify"}, headers=ro), 403)
    assert (await app.get(url, headers=ro)).json()["leak_policy"] == "revoke"  # nothing changed so far

    r = await app.put(url, json={"leak_policy": "notify"}, headers=admin_headers)
    assert r.status_code == 200 and r.json() == {"tenant": tenant[0], "leak_policy": "notify"}, r.text
    [event] = await audit(app, admin_headers, "tenant.leak_policy")
    assert event["details"] == {"leak_policy": "notify"} and event["actor"] != "cli"
    key = await mint(app, admin_headers)
    gh, _ = github
    assert [m["label"] for m in (await post(app, gh, report(key["key"]))).json()] == ["true_positive"]
    assert key["id"] in await jwks_kids(app)  # notify: the key keeps working

    assert (await app.put(url, json={"leak_policy": "revoke"}, headers=admin_headers)).json()["leak_policy"] == "revoke"
    await post(app, gh, report(key["key"]))
    assert key["id"] not in await jwks_kids(app)


async def test_foreign_and_garbage_tokens_are_false_positives(app, github, admin_headers):
    gh, _ = github
    ours = await mint(app, admin_headers)
    # our format and our issuer, signed by a key we never published
    forged = keys.mint({"iss": "http://testserver.local/t/default", "aud": "api://default"},
                       algorithm="ES256", prefix="sk_live_").key
    # one of our keys with its signature swapped for another token's
    parsed = keys.parse_key_string(ours["key"])
    h, p, _ = parsed.jwt.split(".")
    spliced = f"{parsed.prefix}{h}.{p}.{forged.rsplit('.', 1)[1]}"
    # our key under another prefix (a key is valid only with the one it was minted with)
    reprefixed = "sk_test_" + parsed.jwt
    # our kid and claims, signed by someone else who points at their own keys (jku, jwk)
    import jwt as pyjwt

    evil = ec.generate_private_key(ec.SECP256R1())
    evil_jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(evil.public_key()))
    claims = {"iss": "http://testserver.local/t/default", "aud": "api://default", "jti": ours["id"],
              "sub": ours["id"], "iat": 1}
    pointing = ["sk_live_" + pyjwt.encode(claims, evil, algorithm=alg_, headers=h)
                for alg_, h in (("ES256", {"kid": ours["id"], "jku": "https://evil.example/jwks.json"}),
                                ("ES256", {"kid": ours["id"], "jwk": evil_jwk}))]
    assert all(keys.is_key_string(t) for t in (forged, spliced, reprefixed, *pointing))  # they reach the verifier
    revoked = await mint(app, admin_headers)
    assert (await app.delete(f"/v1/keys/{revoked['id']}", headers=admin_headers)).status_code == 200
    tokens = [forged, spliced, reprefixed, *pointing, revoked["key"], "hello", "", "sk_live_" + "x" * 300,
              "ghp_" + "a" * 36]
    r = await post(app, gh, report(*tokens))
    assert r.status_code == 200, r.text
    assert r.json() == [{"token_hash": sha256(t), "token_type": "authserver_api_key", "label": "false_positive"}
                        for t in tokens]
    assert ours["id"] in await jwks_kids(app)
    assert await audit(app, admin_headers, "key.leaked") == []


async def test_bad_or_missing_signature_is_401_and_revokes_nothing(app, github, admin_headers):
    gh, _ = github
    key = await mint(app, admin_headers)
    body = report(key["key"])
    headers = gh.headers(body)
    tampered = body.replace(b"content", b"commit!")
    impostor = ec.generate_private_key(ec.SECP256R1())
    cases = [
        (tampered, headers),
        (body, {**headers, "Github-Public-Key-Signature": "not base64 !"}),
        (body, {k: v for k, v in headers.items() if k != "Github-Public-Key-Signature"}),
        (body, {k: v for k, v in headers.items() if k != "Github-Public-Key-Identifier"}),
        (body, gh.headers(body, private=impostor)),  # GitHub's key id, someone else's signature
        (body, gh.headers(body, private=impostor, key_id="f" * 64)),  # an identifier GitHub never published
    ]
    for sent, hdrs in cases:
        r = await app.post(PATH, content=sent, headers=hdrs)
        is_problem(r, 401)
        assert key["key"] not in r.text
    assert key["id"] in await jwks_kids(app)
    assert await audit(app, admin_headers, "key.leaked") == []


async def test_malformed_and_large_reports(app, github, client_factory):
    gh, _ = github
    for body in (b"", b"{}", b"not json", b'[{"type": "x"}]', b'[{"token": 1}]', b"[" * 5000, b'"x"'):
        r = await post(app, gh, body)
        is_problem(r, 400)
    assert (await post(app, gh, b"[]")).json() == []
    small = await client_factory(secret_scanning_keys_url=str(github[1]), secret_scanning_max_body_bytes=1024)
    big = report(*["sk_live_" + "a" * 100] * 20)
    assert len(big) > 1024
    is_problem(await post(small, gh, big), 413)
    # the default cap is larger than an ordinary API body: 300 matches in one report
    many = report(*["sk_live_" + "a" * 200] * 300)
    assert len(many) > 65536
    r = await post(app, gh, many)
    assert r.status_code == 200 and len(r.json()) == 300


async def test_no_token_is_ever_logged(app, github, admin_headers, caplog):
    gh, _ = github
    caplog.set_level(logging.DEBUG)
    leaked = await mint(app, admin_headers)
    kept = await mint(app, admin_headers)
    body = report(leaked["key"], "garbage_token_value_123")
    await post(app, gh, body)  # revoked
    tampered = report(kept["key"])
    await app.post(PATH, content=tampered, headers=gh.headers(tampered + b" "))  # 401
    await post(app, gh, report(kept["key"])[:-2])  # 400
    assert caplog.records, "the revocation is logged (by key id)"
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (leaked["key"], kept["key"], "garbage_token_value_123"):
        assert secret not in text
        assert keys.parse_key_string(secret).jwt.split(".")[2] not in text if secret.startswith("sk_") else True
    assert leaked["id"] in text  # the key id is public and is what operators need


async def test_keys_from_an_http_server_refetched_for_a_new_identifier(tenant, client_factory, admin_headers, clock):
    gh = FakeGitHub()
    served = {"doc": gh.document(), "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            served["hits"] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(served["doc"])

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = await client_factory(
            secret_scanning_keys_url=f"http://127.0.0.1:{server.server_address[1]}/meta/public_keys/secret_scanning")
        key = await mint(app, admin_headers)
        r = await post(app, gh, report("nothing_of_ours"))
        assert r.status_code == 200 and served["hits"] == 1
        await post(app, gh, report("nothing_of_ours"))
        assert served["hits"] == 1  # cached

        # GitHub rotates: a new identifier makes us refetch, at most once a minute
        new_id = "a" * 64
        rotated = gh.add(new_id)
        served["doc"] = gh.document()
        is_problem(await post(app, gh, report(key["key"]), private=rotated, key_id=new_id), 401)
        assert served["hits"] == 1 and key["id"] in await jwks_kids(app)
        clock.advance(61)
        r = await post(app, gh, report(key["key"]), private=rotated, key_id=new_id)
        assert r.json()[0]["label"] == "true_positive" and served["hits"] == 2
        # forged identifiers cannot make us fetch again within the minute
        for i in range(5):
            is_problem(await post(app, gh, report(key["key"]), key_id=f"{i}" * 64), 401)
        assert served["hits"] == 2
    finally:
        server.shutdown()
        server.server_close()


async def test_unreachable_key_source_is_503(tenant, client_factory, tmp_path, admin_headers):
    gh = FakeGitHub()
    app = await client_factory(secret_scanning_keys_url=str(tmp_path / "missing.json"))
    key = await mint(app, admin_headers)
    is_problem(await post(app, gh, report(key["key"])), 503)
    assert key["id"] in await jwks_kids(app)


def test_cli_sets_the_leak_policy(tmp_path, monkeypatch, capsys):
    from authserver.cli import main

    monkeypatch.setenv("AUTHSERVER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("AUTHSERVER_LOG_JSON", "false")
    assert main(["tenant", "create", "acme"]) == 0
    capsys.readouterr()
    assert main(["tenant", "leak-policy", "acme", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tenant": "acme", "leak_policy": "revoke"}
    assert main(["tenant", "leak-policy", "acme", "notify"]) == 0
    assert "reported only" in capsys.readouterr().out
    assert main(["tenant", "leak-policy", "acme", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leak_policy"] == "notify"


def test_readme_publishes_the_regex_and_it_matches_our_keys():
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert keys.SECRET_SCANNING_PATTERN in readme
    minted = keys.mint({"iss": "i", "aud": "a"}, algorithm="ES256", prefix="sk_live_s3_")
    assert re.fullmatch(keys.SECRET_SCANNING_PATTERN, minted.key)
    assert keys.is_key_string(minted.key) and not keys.is_key_string(minted.key + " ")
