"""SQLite WAL checkpoints in a thread of their own, off every commit.

By default SQLite checkpoints inside the commit that takes the WAL past 1000
pages: that commit (a mint, every ~110 of them) also copies the WAL into the
database file and waits for two more flushes, several times a normal commit.
The server's connections turn that off (``wal_autocheckpoint=0``) and this
thread checkpoints instead, every ``interval`` seconds, PASSIVE: it waits for
no reader or writer, and a commit never waits for it. It starts right after
one of the writer's commits (``committed``; or one more interval without any):
its copying and flushes then have the disk while no commit waits for it,
where at a random moment they could share it with a mint's flush. Once a checkpoint has
copied every frame, the next writer starts the WAL again from its beginning,
so the WAL stays about one interval's writes long (``on_complete``: told when
a checkpoint after a commit copied every frame, so the writer can restart it
while no mint waits). Durability is unchanged: a
commit is on disk when its WAL frames are flushed, checkpointed or not.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

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
    def __init__(self, path: str, interval: float, *, on_complete: Callable[[], None] | None = None) -> None:
        self.path = path
        self.interval = interval
        self.on_complete = on_complete
        # checkpoints run, and those that copied every frame (the WAL can restart)
        self.runs = 0
        self.complete = 0
        self.commits = 0  # the writer's (``committed``)
        self._stop = threading.Event()
        self._commit = threading.Event()  # the writer committed since the last wait
        self._thread = threading.Thread(target=self._run, name="db-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        failing = False
        seen = self.commits
        try:
            while not self._stop.wait(self.interval):
                self._commit.clear()
                self._commit.wait(self.interval)  # the next commit ends: the disk is free for a while
                if self._stop.is_set():
                    break
                # restart only after the writer's commits: an idle server would
                # otherwise restart the WAL for its own restart's frame, round after round
                committed, seen = self.commits != seen, self.commits
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
                if not busy and frames == copied and frames and committed and self.on_complete is not None:
                    self.on_complete()
        finally:
            conn.close()

    def committed(self) -> None:
        """The writer thread committed (called after each of its transactions)."""
        self.commits += 1
        self._commit.set()

    def close(self) -> None:
        self._stop.set()
        self._commit.set()
        self._thread.join()
