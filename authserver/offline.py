"""The service layer straight on the database, without the HTTP server: what
the CLI's management commands, ``quickstart`` and tests use (like an admin
shell; a running server picks the changes up)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .settings import Settings

if TYPE_CHECKING:  # the service stack is imported when a command opens it, not by `authserver --help`
    from .core import Core

__all__ = ["check_sqlite_path", "open_core", "require_database"]


def check_sqlite_path(settings: Settings) -> None:
    """A missing directory would surface as a driver error from a worker thread."""
    if not settings.is_sqlite:
        return
    from sqlalchemy.engine import make_url

    path = make_url(settings.database_url).database
    if path and path != ":memory:" and not path.startswith("file:") and not Path(path).resolve().parent.is_dir():
        raise ValueError(f"the directory of the SQLite database {path!r} does not exist")


@asynccontextmanager
async def open_core(settings: Settings) -> AsyncIterator[Core]:
    """A Core on migrated, loaded data; released on exit."""
    from .core import Core

    check_sqlite_path(settings)
    core = Core.build(settings)
    try:  # a failed migration or load still releases the engine and threads
        if settings.run_migrations:
            from .db.migrate import upgrade_async

            await upgrade_async(settings.database_url)
        await core.sync.load()
        yield core
    finally:
        await core.close_database()


def require_database(settings: Settings) -> None:
    """Commands that only read or change existing data never create a
    database: connecting to a missing SQLite file would make an empty one
    (e.g. when run from another folder). ValueError naming the path."""
    check_sqlite_path(settings)
    if not settings.is_sqlite:
        return
    from sqlalchemy.engine import make_url

    path = make_url(settings.database_url).database
    if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
        raise ValueError(
            f"no database at {Path(path).resolve()} (AUTHSERVER_DATABASE_URL={settings.database_url}); "
            "create one with `authserver db upgrade` or `authserver quickstart`, or set AUTHSERVER_DATABASE_URL"
        )
