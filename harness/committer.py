"""Results committed without ever waiting for SQLite's write lock on the event loop.

Every result is committed before its worker takes more work (a kill -9 then loses only calls in
flight). The write lock is shared with the span exporter and with the run's other worker
processes; a commit that waited for it on the event loop stalled every case in flight, and one
made in a thread waited on the GIL instead, behind the busy loop (measured on a 10,000-case
run with two processes: 31-33 ms from finished to saved). Here a commit is tried on the loop,
on the store's own connection, with SQLite's busy wait off: it either takes the lock at once
and writes, or finds it held and is tried again a millisecond later, with whatever finished
meanwhile (12-13 ms from finished to saved on the same run).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from harness.store import LOCK_TIMEOUT_S, ResultRow, Store

RETRY_S = 0.001


class Committer:
    """Saves results (and the response-cache entries buffered with them) for one event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: asyncio.Future[None] | None = None  # settles with the next commit
        self._scheduled = False
        self._results: list[ResultRow] = []  # taken from the store, not yet committed
        self._cache: dict[str, Any] = {}
        self._busy_since: float | None = None

    async def save(self, result: ResultRow) -> None:
        """Return once `result` is committed (raise if its commit failed)."""
        self.store.add_result(result)
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
        waiting = self._waiting
        self._schedule(0.0)
        await asyncio.shield(waiting)

    def kick(self) -> None:
        """Commit whatever is buffered (e.g. cache entries of failed cases)."""
        if self.store.has_pending():
            self._schedule(0.0)

    async def drain(self) -> None:
        """Wait until nothing waits to be committed (then `store.flush` writes any rest). A
        failed commit was reported to the saves waiting for it, not again here."""
        while self._scheduled or self._results or self._cache:
            await asyncio.sleep(RETRY_S)

    def write_now(self) -> int:
        """Write everything buffered at once, waiting for the lock if need be (a second Ctrl-C,
        just before the process quits). Returns results written."""
        results, cache = self.store.take_pending()
        self._results += results
        self._cache.update(cache)
        written = self.store.write(self._results, self._cache)
        self._settle(None)
        return written

    def _schedule(self, delay: float) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        loop = asyncio.get_running_loop()
        if delay:
            loop.call_later(delay, self._commit)
        else:
            loop.call_soon(self._commit)

    def _commit(self) -> None:
        self._scheduled = False
        store = self.store
        results, cache = store.take_pending()
        self._results += results
        self._cache.update(cache)
        # The store's own connection (its cache reads then keep their page cache), with
        # SQLite's busy wait off for this one transaction only: never wait, try again.
        conn = store.conn
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                store.write(self._results, self._cache)
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(LOCK_TIMEOUT_S * 1000)}")
        except sqlite3.OperationalError as exc:
            if _busy(exc) and not self._timed_out():
                self._schedule(RETRY_S)  # held by another writer: again in a moment
                return
            self._settle(exc)
        except Exception as exc:
            self._settle(exc)
        else:
            self._settle(None)

    def _timed_out(self) -> bool:
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        return now - self._busy_since > LOCK_TIMEOUT_S

    def _settle(self, failure: BaseException | None) -> None:
        self.store.written(self._cache)
        self._results, self._cache, self._busy_since = [], {}, None
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            if failure is None:
                waiting.set_result(None)
            else:
                waiting.set_exception(failure)


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text
