"""Structured logs never carry a token (issue #3 observability)."""

from __future__ import annotations

import json
import logging


async def test_no_token_reaches_any_log(client, admin_headers, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    admin = admin_headers["Authorization"].split()[1]
    secrets = [admin]
    for alg in ("RS256", "EdDSA"):
        r = await client.post("/v1/keys", json={"algorithm": alg, "name": "logged?"}, headers=admin_headers)
        secrets.append(r.json()["key"])
    r = await client.post(f"/v1/keys/{r.json()['id']}/roll", headers=admin_headers)
    secrets.append(r.json()["key"])
    await client.post("/oauth/introspect", data={"token": secrets[1]}, headers=admin_headers)
    await client.get("/v1/keys", headers={"Authorization": f"Bearer {secrets[1]}"})  # an API key on the admin API
    await client.get("/v1/keys", headers={"Authorization": f"Bearer {admin[:-3]}xyz"})  # a forged admin key
    await client.post("/v1/keys", content=b"{not json", headers={**admin_headers, "Content-Type": "application/json"})
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions.count("key.mint") == 2 and "key.roll" in actions  # the events are logged...
    for secret in secrets:
        jwt = secret.split("_", 2)[-1] if secret.count("_") >= 2 else secret
        assert secret not in text and jwt.rsplit(".", 1)[1] not in text  # ...their keys never


def test_json_log_lines_are_structured():
    from authserver.logs import JsonFormatter

    record = logging.LogRecord("authserver.x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    record.tenant, record.kid = "acme", "kid123"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "hello world" and entry["level"] == "warning"
    assert entry["tenant"] == "acme" and entry["kid"] == "kid123"
