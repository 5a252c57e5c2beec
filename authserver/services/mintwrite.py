"""A mint's writes as Core statements: the cap, the key row, the audit row and
its webhook deliveries in one short transaction (authserver.db.writes).

The ORM's unit of work cost more than the statements themselves (state
tracking, a flush plan, the before_flush hook's scan of the session): a mint
is append-only and needs none of it. The rows are still built as ORM objects
(the cache and the response read them) but never enter a session.

SQLite: four statements (six with webhooks to queue) in one hop to the writer
thread, one commit; the four as SQL text straight on the driver's connection
(``_SqliteMint``): through Core they cost ~0.4 ms of the writer thread's CPU
per mint, the driver ~0.1 ms. PostgreSQL: one statement (data-modifying CTEs), atomic by
itself, so a durable mint is one round trip without BEGIN/COMMIT (9 before,
with the pool's ping); its result says whether the tenant was below its cap.
"""

from __future__ import annotations

from typing import Any
from typing import cast as typed
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Connection,
    String,
    Table,
    exists,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from ..db.models import ApiKey, AuditEvent, Tenant, WebhookDelivery, WebhookEndpoint, WebhookEvent
from ..settings import Settings
from .outbox import AUDIT_TO_EVENT, delivery_values, event_values, subscribed

__all__ = ["rehearse_mint", "write_mint"]

# the tables (typed for mypy)
_KEYS = typed(Table, ApiKey.__table__)
_AUDIT = typed(Table, AuditEvent.__table__)
_EVENTS = typed(Table, WebhookEvent.__table__)
_DELIVERIES = typed(Table, WebhookDelivery.__table__)

# attribute -> column, once (ApiKey.meta is the column "metadata")
_KEY_COLUMNS = {p.key: p.columns[0] for p in inspect(ApiKey).column_attrs}
_AUDIT_COLUMNS = {p.key: p.columns[0] for p in inspect(AuditEvent).column_attrs if p.key != "id"}

def _values(row: Any, columns: dict[str, Any]) -> dict[str, Any]:
    return {col.key: getattr(row, attr) for attr, col in columns.items()}


def write_mint(s: Session, row: ApiKey, audit: AuditEvent, settings: Settings) -> bool:
    """Add the key, its audit event and the event's webhook deliveries if the
    tenant is below its cap of live API keys (admin keys do not count); False
    (nothing written): it is not, and the caller takes the full path."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        return _one_statement(conn, row, audit, settings)
    plain = _sqlite_mint(conn)
    if row.kind == "api" and not plain.reserved(conn, row.tenant_id, settings.max_live_keys_per_tenant):
        return False
    plain.insert(conn, row, audit)
    return True


def rehearse_mint(s: Session, row: ApiKey, audit: AuditEvent, settings: Settings) -> None:
    """Every statement of ``write_mint`` once, for a tenant that does not exist
    (``row.tenant_id``), in a transaction the caller rolls back
    (``Transactions.rehearse``): SQLAlchemy compiles and caches them now, not
    in the first mint (where it took several milliseconds of its ``db`` stage)."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        _one_statement(conn, row, audit, settings)  # the cap's gate finds no tenant: nothing is written
        return
    plain = _sqlite_mint(conn)
    plain.reserved(conn, row.tenant_id, settings.max_live_keys_per_tenant)
    plain.insert(conn, row, audit)


# --- SQLite: SQL text on the driver ----------------------------------------------

def _column_list(columns: dict[str, Any]) -> str:
    return ", ".join(f'"{col.name}"' for col in columns.values())


class _SqliteMint:
    """``write_mint``'s statements as SQL text run on the driver's connection,
    inside the transaction SQLAlchemy began (BEGIN IMMEDIATE; a savepoint in a
    group commit). Values pass through their columns' own bind processors
    (JSON is serialized as Core would), so the rows are the same; only the
    rare webhook rows still go through Core."""

    def __init__(self, dialect: Any) -> None:
        def processors(columns: dict[str, Any]) -> list[Any]:
            return [col.type.dialect_impl(dialect).bind_processor(dialect) for col in columns.values()]

        # The common case of quota.reserve_live_key in one statement: while the
        # tenant is below its cap, a conditional UPDATE takes the tenant's row
        # lock (first, as lock_tenant does) and adds one; no row changed: the
        # tenant is at its cap (or gone), and reserve_live_key decides, with the
        # exact recount, in the full transaction. The same on PostgreSQL below.
        tenants = typed(Table, Tenant.__table__)
        cap = f"coalesce({tenants.c.max_live_keys.name}, ?)"
        self.reserve_sql = (f"UPDATE {tenants.name} SET live_keys_bound = live_keys_bound + 1 "
                            f"WHERE id = ? AND ({cap} = 0 OR live_keys_bound < {cap})")
        self.key_sql = (f"INSERT INTO {_KEYS.name} ({_column_list(_KEY_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_KEY_COLUMNS))})")
        self.audit_sql = (f"INSERT INTO {_AUDIT.name} ({_column_list(_AUDIT_COLUMNS)}) "
                          f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})")
        endpoints = typed(Table, WebhookEndpoint.__table__)
        self.endpoints_sql = (f"SELECT id, event_types FROM {endpoints.name} "
                              "WHERE tenant_id = ? AND deleted_at IS NULL")
        self.event_types = endpoints.c.event_types.type.dialect_impl(dialect).result_processor(dialect, None)
        self.key_procs = list(zip(_KEY_COLUMNS, processors(_KEY_COLUMNS), strict=True))
        self.audit_procs = list(zip(_AUDIT_COLUMNS, processors(_AUDIT_COLUMNS), strict=True))

    @staticmethod
    def _bound(obj: Any, procs: list[tuple[str, Any]]) -> list[Any]:
        values = [getattr(obj, attr) for attr, _ in procs]
        return [v if p is None else p(v) for v, (_, p) in zip(values, procs, strict=True)]

    def reserved(self, conn: Connection, tenant_id: str, default_cap: int) -> bool:
        driver: Any = conn.connection.driver_connection
        return bool(driver.execute(self.reserve_sql, (tenant_id, default_cap, default_cap)).rowcount)

    def insert(self, conn: Connection, row: ApiKey, audit: AuditEvent) -> None:
        driver: Any = conn.connection.driver_connection
        driver.execute(self.key_sql, self._bound(row, self.key_procs))
        driver.execute(self.audit_sql, self._bound(audit, self.audit_procs))
        event_type = AUDIT_TO_EVENT.get(audit.action)
        if event_type is None:
            return
        found = driver.execute(self.endpoints_sql, (audit.tenant_id,)).fetchall()
        if not found:
            return
        endpoints = subscribed([(i, self.event_types(types) if self.event_types else types) for i, types in found],
                               event_type)
        if endpoints:
            event = event_values(event_type, audit, row)
            conn.execute(insert(_EVENTS), event)
            conn.execute(insert(_DELIVERIES), [delivery_values(event, e, audit.at * 1000) for e in endpoints])


_PLAIN: WeakKeyDictionary[Any, _SqliteMint] = WeakKeyDictionary()  # per dialect (one per engine)


def _sqlite_mint(conn: Connection) -> _SqliteMint:
    plain = _PLAIN.get(conn.dialect)
    if plain is None:
        plain = _PLAIN[conn.dialect] = _SqliteMint(conn.dialect)
    return plain


# --- PostgreSQL: one statement -------------------------------------------------

def _typed(values: dict[str, Any], table: Any) -> list[Any]:
    """Bound values with their columns' types (asyncpg wants them typed)."""
    return [literal(v, table.c[k].type).label(k) for k, v in values.items()]


def _one_statement(conn: Connection, row: ApiKey, audit: AuditEvent, settings: Settings) -> bool:
    """The cap's UPDATE, both INSERTs and the webhook rows as CTEs of one
    statement, each step selecting from the one before: no row from the cap,
    nothing is written (a statement is atomic either way)."""
    key = _values(row, _KEY_COLUMNS)
    gate: Any = None
    if row.kind == "api":
        gate = (update(Tenant)
                .where(Tenant.id == row.tenant_id,
                       or_(func.coalesce(Tenant.max_live_keys, settings.max_live_keys_per_tenant) == 0,
                           Tenant.live_keys_bound < func.coalesce(Tenant.max_live_keys,
                                                                  settings.max_live_keys_per_tenant)))
                .values(live_keys_bound=Tenant.live_keys_bound + 1)
                .returning(Tenant.id).cte("reserved"))
    key_select = select(*_typed(key, _KEYS))
    if gate is not None:
        key_select = key_select.select_from(gate)
    key_cte = insert(_KEYS).from_select(list(key), key_select).returning(ApiKey.id).cte("new_key")
    audit_vals = _values(audit, _AUDIT_COLUMNS)
    audit_cte = (insert(_AUDIT)
                 .from_select(list(audit_vals), select(*_typed(audit_vals, _AUDIT)).select_from(key_cte))
                 .returning(AuditEvent.id).cte("new_audit"))
    ctes: list[Any] = [c for c in (gate, key_cte, audit_cte) if c is not None]
    event_type = AUDIT_TO_EVENT.get(audit.action)
    if event_type is not None:
        event = event_values(event_type, audit, row)
        endpoints = (select(WebhookEndpoint.id)
                     .where(WebhookEndpoint.tenant_id == audit.tenant_id, WebhookEndpoint.deleted_at.is_(None),
                            WebhookEndpoint.event_types.op("@>")(literal([event_type], JSONB)),
                            exists(select(audit_cte.c.id)))
                     .cte("endpoints"))
        event_cte = (insert(_EVENTS)
                     .from_select(list(event), select(*_typed(event, _EVENTS))
                                  .where(exists(select(endpoints.c.id))))
                     .returning(WebhookEvent.id).cte("new_event"))
        now_ms = audit.at * 1000
        first = delivery_values(event, "", now_ms)
        delivery_id = func.concat(first["id"][:16], func.substr(func.md5(func.gen_random_uuid().cast(String)), 1, 16))
        cols = {"id": delivery_id, "endpoint_id": endpoints.c.id, "event_id": event_cte.c.id}
        rest = {k: v for k, v in first.items() if k not in cols}
        deliveries = (insert(_DELIVERIES)
                      .from_select([*cols, *rest], select(*cols.values(), *_typed(rest, _DELIVERIES))
                                   .select_from(endpoints.join(event_cte, true())))
                      .returning(WebhookDelivery.id).cte("new_deliveries"))
        ctes += [endpoints, event_cte, deliveries]
    written = select(exists(select(key_cte.c.id))).add_cte(*ctes)
    return bool(conn.execute(written).scalar())

