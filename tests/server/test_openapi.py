"""The OpenAPI document says what the API does (issue 16, item 11): a bearer
security scheme, response schemas that real answers validate against, errors
as the problem+json actually sent with their codes, enums, a summary and a
description per operation; and the docs page at /schema works offline, from
same-origin scripts only, under a CSP."""

from __future__ import annotations

import re

import jsonschema_rs  # comes with schemathesis (the test extra)
import pytest

METHODS = ("get", "post", "put", "patch", "delete")
ADMIN_PATHS = ("/v1/", "/oauth/")
# authenticated by the caller's own signature over the body, not by an admin key
SIGNED_PATHS = ("/v1/secret-scanning/",)


async def _document(client) -> dict:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()


def _operations(doc: dict):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _values(schema: dict) -> list:
    """The values an enum schema allows (one value is written as a const)."""
    return list(schema["enum"]) if "enum" in schema else [schema["const"]] if "const" in schema else []


def _check(doc: dict, schema: dict, value) -> None:
    """Validate ``value`` against a schema of the document ($refs resolved in it)."""
    jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]}).validate(value)


def _response_schema(doc: dict, path: str, method: str, status: int) -> tuple[str, dict]:
    response = doc["paths"][path][method]["responses"][str(status)]
    ((media_type, content),) = response["content"].items()
    return media_type, content["schema"]


def _conforms(doc: dict, path: str, method: str, r) -> None:
    """The answer's status is documented for the operation, with its media type and schema."""
    media_type, schema = _response_schema(doc, path, method, r.status_code)
    assert r.headers["content-type"].split(";")[0] == media_type.split(";")[0], (path, r.status_code)
    _check(doc, schema, r.json())


async def test_the_document_has_security_summaries_responses_and_enums(client):
    doc = await _document(client)
    scheme = doc["components"]["securitySchemes"]["adminKey"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    ops = list(_operations(doc))
    assert len(ops) >= 18
    for path, method, op in ops:
        where = f"{method.upper()} {path}"
        assert op.get("summary") and op.get("description"), where
        responses = op["responses"]
        success = [s for s in responses if s.startswith("2")]
        assert success, where
        for status in success:
            media_type, schema = _response_schema(doc, path, method, int(status))
            assert schema, f"{where} {status}: no schema"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                ((media_type, content),) = response["content"].items()
                assert media_type == "application/problem+json", (where, status)
                problem = doc["components"]["schemas"][content["schema"]["$ref"].rsplit("/", 1)[1]]
                assert {"type", "title", "status", "code"} <= set(problem["required"]), (where, status)
                assert _values(problem["properties"]["status"]) == [int(status)], (where, status)
                assert all(_values(problem["properties"]["code"])), (where, status)
                assert "`code`:" in response["description"]
        if path.startswith(SIGNED_PATHS):
            assert not op.get("security") and "401" in responses, where
        elif path.startswith(ADMIN_PATHS):
            assert op.get("security") == [{"adminKey": []}], where
            assert {"401", "429", "503"} <= set(responses), where
            if path.startswith("/v1/"):
                assert "403" in responses, where
        else:
            assert not op.get("security"), where
        if "{key_id}" in path or "{tenant_id}" in path:
            assert "404" in responses, where
        if method == "post":
            assert "413" in responses, where
    keys = doc["paths"]["/v1/keys"]
    assert "409" in doc["paths"]["/v1/keys/{key_id}/roll"]["post"]["responses"]
    state = next(p for p in keys["get"]["parameters"] if p["name"] == "state")
    assert set(state["schema"]["enum"]) == {"active", "rolling", "live", "expired", "revoked", "all"}
    schemas = doc["components"]["schemas"]
    assert set(schemas["KeyView"]["properties"]["state"]["enum"]) == {"active", "rolling", "rolled", "expired",
                                                                      "revoked"}
    from authserver.schemas import ALGORITHM_NAMES

    assert set(schemas["KeyView"]["properties"]["algorithm"]["enum"]) == set(ALGORITHM_NAMES)
    assert set(ALGORITHM_NAMES) <= set(schemas["KeySpec"]["properties"]["algorithm"]["enum"])
    assert set(schemas["Introspection"]["properties"]["status"]["enum"]) == {
        "VALID", "RATE_LIMITED", "USAGE_EXCEEDED", "EXPIRED", "REVOKED", "INVALID"}
    assert _values(schemas["Problem401"]["properties"]["code"]) == ["unauthorized"]
    assert set(_values(schemas["Problem400"]["properties"]["code"])) == {"bad_request", "invalid_request"}


async def test_real_answers_match_the_documented_schemas(client, admin_headers, tenant, client_factory):
    doc = await _document(client)
    h = admin_headers
    r = await client.post("/v1/keys", json={"name": "doc", "scopes": ["read"], "rate_limits": [
        {"limit": 5, "window_seconds": 60}], "metadata": {"a": 1}}, headers=h)
    assert r.status_code == 201
    _conforms(doc, "/v1/keys", "post", r)
    minted = r.json()
    kid = minted["id"]
    _conforms(doc, "/v1/keys", "get", await client.get("/v1/keys", headers=h))
    _conforms(doc, "/v1/keys/{key_id}", "get", await client.get(f"/v1/keys/{kid}", headers=h))
    for token in (minted["key"], "nonsense"):
        _conforms(doc, "/oauth/introspect", "post",
                  await client.post("/oauth/introspect", data={"token": token}, headers=h))
    r = await client.post(f"/v1/keys/{kid}/roll", json={"grace_seconds": 0}, headers=h)
    assert r.status_code == 201
    _conforms(doc, "/v1/keys/{key_id}/roll", "post", r)
    r = await client.delete(f"/v1/keys/{r.json()['id']}", headers=h)
    _conforms(doc, "/v1/keys/{key_id}", "delete", r)
    _conforms(doc, "/v1/audit", "get", await client.get("/v1/audit", headers=h))
    _conforms(doc, "/t/{tenant_id}/.well-known/jwks.json", "get", await client.get("/t/default/.well-known/jwks.json"))
    _conforms(doc, "/.well-known/openid-configuration", "get", await client.get("/.well-known/openid-configuration"))
    _conforms(doc, "/healthz", "get", await client.get("/healthz"))

    # the errors, as sent: status, media type, the problem schema and its code enum
    errors = [
        ("/v1/keys", "get", await client.get("/v1/keys"), 401),
        ("/v1/keys/{key_id}", "get", await client.get("/v1/keys/" + "A" * 43, headers=h), 404),
        ("/v1/keys/{key_id}/roll", "post", await client.post(f"/v1/keys/{kid}/roll", json={}, headers=h), 409),
        ("/v1/keys", "post", await client.post("/v1/keys", content=b"{" + b" " * 70000 + b"}",
                                               headers={**h, "Content-Type": "application/json"}), 413),
        ("/v1/keys", "post", await client.post("/v1/keys", content=b"name=x",
                                               headers={**h, "Content-Type": "text/plain"}), 415),
        ("/v1/keys", "post", await client.post("/v1/keys", json={"scopes": "read"}, headers=h), 400),
        ("/v1/keys", "get", await client.get("/v1/keys?state=bogus", headers=h), 422),
        ("/t/{tenant_id}/.well-known/jwks.json", "get", await client.get("/t/nope/.well-known/jwks.json"), 404),
    ]
    for path, method, r, status in errors:
        assert r.status_code == status, (path, r.status_code, r.text)
        _conforms(doc, path, method, r)
    limited = await client_factory(rate_limit_admin_per_minute=1)
    await limited.get("/v1/keys", headers=h)
    r = await limited.get("/v1/keys", headers=h)
    assert r.status_code == 429
    _conforms(doc, "/v1/keys", "get", r)


async def test_the_docs_page_uses_same_origin_scripts_under_a_csp(client):
    r = await client.get("/schema")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    page = r.text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert len(scripts) >= 2
    for attrs, body in scripts:
        assert body.strip() == "", "no inline script"
        src = re.search(r'src="([^"]+)"', attrs).group(1)
        assert src.startswith("/") and not src.startswith("//"), src
        asset = await client.get(src)
        assert asset.status_code == 200 and "javascript" in asset.headers["content-type"] and asset.content
    for href in re.findall(r'(?:href|src)="([^"]+)"', page):
        assert not re.match(r"(?i)(https?:)?//", href), f"an outside URL on the page: {href}"
    assert "@latest" not in page and "cdn" not in page.lower()
    css = re.search(r'<link rel="stylesheet" href="([^"]+)"', page).group(1)
    assert (await client.get(css)).headers["content-type"].startswith("text/css")
    for bad in ("/schema/assets/nope.js", "/schema/assets/%00", "/schema/assets/" + "a" * 5000,
                "/schema/assets/..%2Fapp.py"):
        r = await client.get(bad)
        assert r.status_code in (400, 404), bad[:40]  # a name too long for any asset is a 400
        assert r.headers["content-type"].startswith("application/problem+json"), bad[:40]


def test_vendored_ui_is_pinned_and_licensed():
    from pathlib import Path

    from authserver.api.docspage import ASSETS_DIR, SWAGGER_UI_VERSION

    assert (ASSETS_DIR / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "swagger-ui" in (ASSETS_DIR / "NOTICE").read_text()
    assert SWAGGER_UI_VERSION in (ASSETS_DIR / "README.md").read_text()
    bundle = (ASSETS_DIR / "swagger-ui-bundle.js").read_bytes()
    assert len(bundle) > 1_000_000 and b"SwaggerUIBundle" in bundle
    assert Path(ASSETS_DIR / "docs.js").read_text().count("validatorUrl: null") == 1  # no outside validator


@pytest.fixture
def docs_server(tmp_path):
    from _proc import Server

    env = {"AUTHSERVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}", "AUTHSERVER_REDIS_URL": "",
           "AUTHSERVER_LOG_JSON": "false"}
    server = Server(env, log_dir=tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def test_the_docs_page_renders_offline_in_chromium(docs_server):
    """A real browser, every request to another origin refused: the page shows
    the operations and the browser reports no error (a CSP violation is one)."""
    import importlib.util
    import shutil
    from pathlib import Path

    from _env import IN_CI

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if importlib.util.find_spec("playwright") is None or not Path(exe).exists():
        if IN_CI:
            pytest.fail("playwright and chromium are needed for this test in CI")
        pytest.skip("playwright or chromium missing")
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)

            def only_same_origin(route):
                if route.request.url.startswith(docs_server.url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_same_origin)
            page.goto(f"{docs_server.url}/schema")
            page.wait_for_selector(".opblock-summary-path", timeout=20_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("/v1/keys" in t for t in paths) and any("jwks.json" in t for t in paths), paths
            assert page.locator(".scheme-container button.authorize").count() == 1  # the bearer scheme
        finally:
            browser.close()
    assert outside == [] and problems == [], (outside, problems)
