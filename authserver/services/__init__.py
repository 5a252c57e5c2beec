"""Business logic, one module per job. ``Core.build`` makes one of each;
controllers (by dependency injection) and the CLI call them directly, and
nothing here knows HTTP.

    tenants        create a tenant, grow its shards
    lifecycle      mint, roll, revoke; audit records
    prepublish     instant activation: pre-published keypairs and their issue
    queries        get, list (cursors), audit trail
    introspection  RFC 7662 answers
    sync           the key cache: load, reread, catch up after Redis outages
    subjects       rate limits shared by all keys of a subject
    keygen         key generation off the event loop
    outbox         audited key actions become webhook deliveries (same transaction)
    webhooks       webhook endpoints, delivery log, replays, per-tenant settings
    webhook_sender delivers the outbox (leases, retries), scans for expiring keys
"""

from ..schemas import KeySpec
from .common import Actor, Publisher
from .introspection import Introspector
from .keygen import KeyGenerator
from .lifecycle import KeyLifecycle
from .prepublish import Prepublisher
from .queries import KeyQueries, Page
from .sync import CacheSync
from .tenants import TenantService

__all__ = [
    "Actor",
    "CacheSync",
    "Introspector",
    "KeyGenerator",
    "KeyLifecycle",
    "KeyQueries",
    "KeySpec",
    "Page",
    "Prepublisher",
    "Publisher",
    "TenantService",
]
