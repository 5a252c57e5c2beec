"""Apply Alembic migrations programmatically (`authserver db upgrade`, and on start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking; env.py runs its own event loop."""
    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    # env.py calls asyncio.run(), which cannot nest: run it in a thread.
    await asyncio.to_thread(upgrade, database_url, revision)


def check_revision(revision: str) -> None:
    """ValueError unless ``revision`` names a migration (or head/base), before
    anything connects (connecting to SQLite creates the file)."""
    import re

    from alembic.script import ScriptDirectory

    if re.fullmatch(r"[+-]\d{1,4}", revision):  # relative to the database's revision: resolved on upgrade
        return
    try:
        if not revision.strip():
            raise ValueError("empty")
        ScriptDirectory.from_config(alembic_config("sqlite://")).get_revisions(revision)
    except Exception as exc:  # alembic's CommandError, or its assertions on odd input
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"unknown revision {revision!r}: {reason} (try `authserver db upgrade head`)") from None
