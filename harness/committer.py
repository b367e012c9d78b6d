"""Results committed without ever waiting for SQLite's write lock on the event loop.

Every result is committed before its worker takes more work (a kill -9 then loses only calls in
flight). The write lock is shared with the span exporter and with the run's other worker
processes; a commit that waited for it on the event loop stalled every case in flight, and one
made in a thread waited on the GIL instead, behind the busy loop (measured on a 10,000-case
run with two processes: 31-33 ms from finished to saved). Here a commit is tried on the loop,
on the store's own connection, with SQLite's busy wait off: it either takes the lock at once
and writes, or finds it held and is tried again a millisecond later, with whatever finished
meanwhile (12-13 ms from finished to saved on the same run).

Results that cost nothing to redo (every model call answered from the response cache) do not
wait for their commit: they are committed together, at most `BATCH_S` later. A cached re-run
of 10,000 cases made ~3,700 commits of ~3 results each; committed in batches, ~400.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import Any

from harness.store import LOCK_TIMEOUT_S, ResultRow, Store
from tracing.spanstore import SpanRows

RETRY_S = 0.001
BATCH_S = 0.05  # a result saved without waiting is committed at most this much later...
BATCH_RESULTS = 256  # ...or as soon as this many wait


class Committer:
    """Saves results (and the response-cache entries buffered with them) for one event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: asyncio.Future[None] | None = None  # settles with the next commit
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None  # a commit scheduled for later
        self._unwaited = 0  # results saved without waiting, not yet taken for a commit
        self._failure: BaseException | None = None  # a failed commit nobody waited for
        self._results: list[ResultRow] = []  # taken from the store, not yet committed
        self._cache: dict[str, Any] = {}
        self._spans: list[SpanRows] = []  # span rows riding with them (see Store.add_span_rows)
        self._busy_since: float | None = None
        # Span rows arriving while no result is saved are committed within `BATCH_S` too.
        self._loop = asyncio.get_running_loop()
        store.on_span_rows = self._span_rows_arrived

    def _span_rows_arrived(self) -> None:
        """Called from the span exporter's thread when it hands the store span rows."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: `Store.flush` writes them
            self._loop.call_soon_threadsafe(self._schedule, BATCH_S)

    def detach(self) -> None:
        """Stop committing span rows as they arrive (the loop is about to end)."""
        if self.store.on_span_rows == self._span_rows_arrived:
            self.store.on_span_rows = None

    async def save(self, result: ResultRow, wait: bool = True) -> None:
        """Return once `result` is committed (raise if its commit failed); with `wait=False`
        at once, the commit following within `BATCH_S` (raise if an earlier commit failed)."""
        self._raise_failure()
        self.store.add_result(result)
        if not wait:
            self._unwaited += 1
            self._schedule(0.0 if self._unwaited >= BATCH_RESULTS else BATCH_S)
            return
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
        failed commit was reported to the saves waiting for it, and is raised here only if
        none did."""
        self.kick()
        while self._scheduled or self._results or self._cache:
            await asyncio.sleep(RETRY_S)
        self._raise_failure()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def write_now(self) -> int:
        """Write everything buffered at once, waiting for the lock if need be (a second Ctrl-C,
        just before the process quits). Returns results written."""
        self._take()
        written = self.store.write(self._results, self._cache, self._spans)
        self._settle(None)
        return written

    def _take(self) -> None:
        """Take what the store buffers, adding it to what waits for a commit already."""
        results, cache = self.store.take_pending()
        self._results += results
        self._cache.update(cache)
        self._spans += self.store.take_span_rows()

    def _schedule(self, delay: float) -> None:
        """Commit after `delay`, or sooner if a commit is already due sooner."""
        loop = asyncio.get_running_loop()
        if self._scheduled:
            timer = self._timer
            if timer is None or timer.when() <= loop.time() + max(delay, RETRY_S):
                return  # due about as soon (a retry while the lock is held: let it be)
            timer.cancel()  # due later than this: bring it forward
        self._scheduled = True
        if delay:
            self._timer = loop.call_later(delay, self._commit)
        else:
            self._timer = None
            loop.call_soon(self._commit)

    def _commit(self) -> None:
        self._scheduled, self._timer, self._unwaited = False, None, 0
        store = self.store
        self._take()
        # The store's own connection (its cache reads then keep their page cache), with
        # SQLite's busy wait off for this one transaction only: never wait, try again.
        conn = store.conn
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                store.write(self._results, self._cache, self._spans)
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
        self._results, self._cache, self._spans, self._busy_since = [], {}, [], None
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            if failure is None:
                waiting.set_result(None)
            else:
                waiting.set_exception(failure)
        elif failure is not None:
            self._failure = failure  # only unwaited results were lost: the next save raises


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text
