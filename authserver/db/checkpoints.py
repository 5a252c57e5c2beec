"""SQLite WAL checkpoints in a thread of their own, off every commit.

By default SQLite checkpoints inside the commit that takes the WAL past 1000
pages: that commit (a mint, every ~110 of them) also copies the WAL into the
database file and waits for two more flushes, several times a normal commit.
The server's connections turn that off (``wal_autocheckpoint=0``) and this
thread checkpoints instead, every ``interval`` seconds, PASSIVE: it waits for
no reader or writer, and a commit never waits for it. Once a checkpoint has
copied every frame, the next writer starts the WAL again from its beginning,
so the WAL stays about one interval's writes long. Durability is unchanged: a
commit is on disk when its WAL frames are flushed, checkpointed or not.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from sqlalchemy import make_url

__all__ = ["WalCheckpointer", "checkpointed_file"]

log = logging.getLogger("authserver.db")


def checkpointed_file(url: str, interval: float) -> str | None:
    """The SQLite file a ``WalCheckpointer`` keeps for ``url``, or None: not
    SQLite, no file (in memory: no WAL) or ``interval`` 0 (commits checkpoint)."""
    if interval <= 0 or not url.startswith("sqlite"):
        return None
    path = make_url(url).database
    return path if path and path != ":memory:" else None


class WalCheckpointer:
    def __init__(self, path: str, interval: float) -> None:
        self.path = path
        self.interval = interval
        # checkpoints run, and those that copied every frame (the WAL can restart)
        self.runs = 0
        self.complete = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="db-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        failing = False
        try:
            while not self._stop.wait(self.interval):
                try:
                    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # e.g. the disk is full: the next round retries
                    if not failing:
                        log.warning("WAL checkpoint failed (%s); retrying", type(exc).__name__)
                    failing = True
                    continue
                failing = False
                self.runs += 1
                self.complete += int(not busy and frames == copied)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
