"""The reconcile loop's reread (CacheSync.reconcile): keys minted by this
process, loaded at its start or already reread are not reloaded (the cache has
them as of that change); a change another writer made is, once. SQLite and
PostgreSQL, two Cores on one database as two replicas."""

from __future__ import annotations

from sqlalchemy import event

from authserver.db.models import ApiKey
from authserver.offline import open_core
from authserver.services.common import Actor


async def test_the_reread_skips_keys_minted_here_but_not_changes_made_elsewhere(make_settings) -> None:
    settings = make_settings(default_algorithm="EdDSA")
    loaded: list[str] = []

    def on_load(row: ApiKey, _context: object) -> None:
        loaded.append(row.id)

    event.listen(ApiKey, "load", on_load)
    try:
        async with open_core(settings) as here, open_core(settings) as there:
            _, admin = await here.tenants.create_tenant("t1")
            minted = [(await here.lifecycle.mint("t1", {}, Actor("cli")))[0].id for _ in range(3)]
            await there.reconcile_once()  # new to the other replica: all read
            assert sorted(loaded) == sorted([admin.kid, *minted])
            loaded.clear()
            await there.reconcile_once()  # the window overlaps: the same rows, already reread
            await here.reconcile_once()
            assert loaded == []
            async with open_core(settings) as third:  # loaded at its start: nothing to reread
                loaded.clear()
                await third.reconcile_once()
                assert loaded == []
            await there.lifecycle.revoke("t1", minted[0], Actor("cli"))
            loaded.clear()
            await here.reconcile_once()
            assert loaded == [minted[0]]
            loaded.clear()
            await here.reconcile_once()
            assert loaded == []
            tk = here.cache.get("t1")
            assert tk is not None and tk.count() == 2
    finally:
        event.remove(ApiKey, "load", on_load)
