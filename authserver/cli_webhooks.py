"""``authserver webhooks ...``: endpoints, the delivery log and replays, on the
database like the other management commands (the running server's sender
delivers what they queue)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from .cli import _add_json, _deliver, _fmt_time, _group, _print_json
from .settings import Settings

if TYPE_CHECKING:
    from .cli import _Subparsers

__all__ = ["add_webhooks"]


def _actor() -> Any:
    from .services import Actor

    return Actor("cli")


def _cmd_new_key(settings: Settings, args: argparse.Namespace) -> int:
    import keys.webhooks as wh

    _deliver(wh.new_box_key() + "\n")
    return 0


async def _cmd_add(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import webhook_view
    from .offline import open_core

    async with open_core(settings) as core:
        row, secret = await core.webhooks.create(args.tenant, args.url, args.event, args.description, _actor())
    if args.json:
        _deliver(json.dumps(webhook_view(row) | {"secret": secret}, indent=2) + "\n")
    else:
        _deliver(f"added webhook {row.id} -> {row.url} ({', '.join(row.event_types)}); its signing secret, "
                 f"shown once:\n{secret}\n")
    return 0


async def _cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import webhook_view
    from .offline import open_core

    async with open_core(settings) as core:
        rows = [webhook_view(r) for r in await core.webhooks.endpoints(args.tenant)]
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['id']}  {r['url']}  {','.join(r['event_types'])}  {r['description'] or ''}".rstrip())
    return 0


async def _cmd_remove(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import webhook_view
    from .offline import open_core

    async with open_core(settings) as core:
        row = await core.webhooks.delete(args.tenant, args.endpoint_id, _actor())
    _print_json(webhook_view(row)) if args.json else print(f"removed webhook {row.id}")
    return 0


def _print_deliveries(rows: list[dict[str, Any]]) -> None:
    for d in rows:
        when = _fmt_time(d["next_attempt_at"]) if d["status"] == "pending" else _fmt_time(d["last_attempt_at"])
        print(f"{d['id']}  {d['event_type']:<16} {d['status']:<9} attempts={d['attempts']} "
              f"code={d['last_status_code'] or '-'} {when} webhook-id={d['webhook_id']}"
              + (f"  ({d['last_error']})" if d["last_error"] else ""))


async def _cmd_deliveries(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import delivery_view
    from .offline import open_core

    async with open_core(settings) as core:
        rows = [delivery_view(d, t) for d, t in
                await core.webhooks.deliveries(args.tenant, args.endpoint_id, limit=args.limit)]
    _print_json(rows) if args.json else _print_deliveries(rows)
    return 0


async def _cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from .api.views import delivery_view
    from .offline import open_core

    async with open_core(settings) as core:
        row, event_type = await core.webhooks.replay(args.tenant, args.delivery_id, _actor())
    view = delivery_view(row, event_type)
    _print_json(view) if args.json else print(f"queued {row.id} (webhook-id {row.event_id}, again)")
    return 0


async def _cmd_expiring_days(settings: Settings, args: argparse.Namespace) -> int:
    from .offline import open_core

    async with open_core(settings) as core:
        if args.days is None:
            days = await core.webhooks.expiring_days(args.tenant)
        else:
            days = await core.webhooks.set_expiring_days(args.tenant, args.days, _actor())
    _print_json({"expiring_days": days}) if args.json else print(f"key.expiring fires {days} days before expiry")
    return 0


async def _cmd_reseal(settings: Settings, args: argparse.Namespace) -> int:
    from .offline import open_core

    async with open_core(settings) as core:
        resealed, current, lost = await core.webhooks.reseal_all()
    if args.json:
        _print_json({"resealed": resealed, "already_current": current, "unopenable": lost})
    else:
        print(f"resealed {resealed} signing secret(s) under the current key; {current} already were")
        if lost:
            print(f"no key opens {len(lost)} endpoint(s): {', '.join(lost)}; register them again "
                  "(or add the key that sealed them to AUTHSERVER_WEBHOOK_PREVIOUS_KEYS)", file=sys.stderr)
        elif settings.webhook_previous_keys:
            print("every secret is sealed under the current key: AUTHSERVER_WEBHOOK_PREVIOUS_KEYS can go")
    return 1 if lost else 0


def add_webhooks(sub: _Subparsers) -> None:
    from .services.outbox import EVENT_TYPES

    wsub = _group(sub, "webhooks", "webhooks: key events signed per Standard Webhooks, delivered by `serve`",
                  "webhooks_cmd")
    nk = wsub.add_parser("new-key", help="print a new AUTHSERVER_WEBHOOK_KEY (seals the signing secrets; keep it "
                                         "out of the database)")
    nk.set_defaults(func=_cmd_new_key, no_database=True)
    rs = wsub.add_parser("reseal", help="after rotating AUTHSERVER_WEBHOOK_KEY (the old key in "
                                        "AUTHSERVER_WEBHOOK_PREVIOUS_KEYS): seal every secret under the new one")
    rs.set_defaults(func=_cmd_reseal)
    _add_json(rs)
    commands: dict[str, tuple[Any, str]] = {
        "add": (_cmd_add, "register an endpoint; prints its signing secret once"),
        "list": (_cmd_list, "the tenant's endpoints"),
        "remove": (_cmd_remove, "remove an endpoint (pending deliveries are cancelled)"),
        "deliveries": (_cmd_deliveries, "the delivery log, newest first"),
        "replay": (_cmd_replay, "send a delivery's event again, with the same webhook-id"),
        "expiring-days": (_cmd_expiring_days, "show or set how many days before expiry key.expiring fires"),
    }
    for name, (func, help_) in commands.items():
        p = wsub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        p.add_argument("--tenant", default=None, help="tenant id (default: the default tenant)")
        _add_json(p)
        if name == "add":
            p.add_argument("url", help="https:// URL (http:// only to loopback with "
                                       "AUTHSERVER_WEBHOOK_ALLOW_HTTP_LOOPBACK)")
            p.add_argument("--event", action="append", choices=EVENT_TYPES, metavar="TYPE",
                           help=f"an event type to send; repeat for several (default: all: {', '.join(EVENT_TYPES)})")
            p.add_argument("--description", default=None, help="a label for people")
        if name == "remove":
            p.add_argument("endpoint_id", help="the endpoint id (ep_...)")
        if name == "deliveries":
            p.add_argument("endpoint_id", nargs="?", default=None, help="only this endpoint's (default: all)")
            p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        if name == "replay":
            p.add_argument("delivery_id", help="the delivery id (dlv_...)")
        if name == "expiring-days":
            p.add_argument("days", nargs="?", type=int, default=None, help="set it (1-365); omit to show it")
