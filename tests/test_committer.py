"""Tests for harness/committer.py (results committed on the loop without ever waiting for
SQLite's write lock; results that cost nothing to redo committed in batches) and
harness/gcpolicy.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import LoopTicker

import tracing
from harness import committer as committer_module
from harness import gcpolicy
from harness.committer import Committer
from harness.store import ResultRow, ScoreRow, Store


def result(run_id: str, case_id: str) -> ResultRow:
    return ResultRow(
        run_id=run_id, case_id=case_id, model="m", epoch=0, status="pass", score=1.0,
        output="out", error=None, error_kind=None, latency_ms=1.0, input_tokens=1,
        output_tokens=1, cost_usd=None, cached=False, attempts=1, trace_id=None,
        case_data={"fields": {}}, detail=None, scores=[ScoreRow("equals", "pass", 1.0, "ok")],
        created_at=time.time(),
    )  # fmt: skip


def stored(path: Path, run_id: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM results WHERE run_id = ?", (run_id,)).fetchone()[0]
        )


def hold_write_lock(path: Path, seconds: float, held: threading.Event) -> threading.Thread:
    """Another writer (a span export, another worker process) holding the lock a while."""

    def hold() -> None:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(seconds)
            conn.execute("COMMIT")

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


async def test_a_commit_waiting_for_the_lock_does_not_stall_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "evals.db"
    store = Store.open(path)
    store.create_run("r1", "suite", {})
    committer = Committer(store)
    held = threading.Event()
    holder = hold_write_lock(path, 0.6, held)
    await asyncio.to_thread(held.wait)
    ticker = LoopTicker()
    saves = [asyncio.create_task(committer.save(result("r1", f"c{i}"))) for i in range(5)]
    await asyncio.sleep(0.3)
    assert ticker.ticks >= 10  # the loop ran on while the commit waited
    assert not any(save.done() for save in saves)  # nothing reported before it is committed
    await asyncio.gather(*saves)
    assert stored(path, "r1") == 5  # every save returned only once its result was committed
    ticker.stop()
    await committer.drain()
    holder.join()
    store.close()


async def test_results_finishing_while_the_lock_is_held_share_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "evals.db"
    store = Store.open(path)
    store.create_run("r1", "suite", {})
    committer = Committer(store)
    commits = counting_writes(store)  # a write raises while another writer holds the lock
    held = threading.Event()
    holder = hold_write_lock(path, 0.3, held)
    await asyncio.to_thread(held.wait)

    async def finish(i: int) -> None:
        await asyncio.sleep(i * 0.005)  # finishing one after another while the lock is held
        await committer.save(result("r1", f"c{i}"))

    await asyncio.gather(*(finish(i) for i in range(40)))
    holder.join()
    assert sum(commits) == 40 and stored(path, "r1") == 40
    assert len(commits) <= 2  # all of them in the commit that got the lock, not 40 commits
    await committer.drain()
    store.close()


async def test_a_cache_entry_being_committed_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "evals.db"
    store = Store.open(path)
    store.cache_put("k", "m", {"text": "hi"})
    results, cache = store.take_pending()
    assert store.cache_get("k") == {"text": "hi"}  # handed to the writer, not yet committed
    with Store.open(path) as writer:
        writer.write(results, cache)
    store.written(cache)
    assert store.cache_get("k") == {"text": "hi"}  # now from the table
    store.close()


async def test_span_rows_are_committed_soon_with_no_result_to_ride_with(tmp_path: Path) -> None:
    # A long case saves no result for a while: the spans that ended meanwhile (handed to the
    # store by the span exporter's thread) are still committed within `BATCH_S`.
    path = tmp_path / "evals.db"
    store = Store.open(path)
    committer = Committer(store)
    with tracing.setup(store=path) as handle:
        handle.hand_span_rows_to(store.add_span_rows)
        with tracing.step_span(handle.tracer("t"), "retrieval", kind="RETRIEVER"):
            pass
        await asyncio.to_thread(handle.force_flush)
        await asyncio.sleep(committer_module.BATCH_S + 0.2)
        with contextlib.closing(sqlite3.connect(path)) as reader:
            assert reader.execute("SELECT name FROM spans").fetchall() == [("retrieval",)]
        handle.hand_span_rows_to(None)
    committer.detach()
    await committer.drain()
    store.close()


async def test_a_failed_commit_fails_the_saves_waiting_for_it(tmp_path: Path) -> None:
    path = tmp_path / "evals.db"
    store = Store.open(path)
    committer = Committer(store)  # no run row: the results' foreign key fails
    try:
        await committer.save(result("no-such-run", "c1"))
    except sqlite3.IntegrityError:
        pass
    else:
        raise AssertionError("a result that could not be committed was reported saved")
    store.close()


def counting_writes(store: Store) -> list[int]:
    """The results of each transaction `store.write` commits, in order."""
    commits: list[int] = []
    write = store.write

    def counting(results: list[ResultRow], cache: dict[str, Any], spans: Any = None) -> int:
        written = write(results, cache, spans)
        commits.append(written)
        return written

    store.write = counting  # type: ignore[method-assign]
    return commits


@pytest.fixture
def run_store(tmp_path: Path) -> Iterator[tuple[Path, Store]]:
    """A store holding run r1, and its path."""
    path = tmp_path / "evals.db"
    store = Store.open(path)
    store.create_run("r1", "suite", {})
    yield path, store
    store.close()


@pytest.fixture
def no_batch_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unwaited results are never committed for their delay alone (it is an hour)."""
    monkeypatch.setattr(committer_module, "BATCH_S", 3600.0)


async def test_unwaited_results_return_at_once_and_share_a_commit(
    run_store: tuple[Path, Store],
) -> None:
    path, store = run_store
    committer = Committer(store)
    commits = counting_writes(store)
    for i in range(100):
        await committer.save(result("r1", f"c{i}"), wait=False)
    assert stored(path, "r1") == 0  # returned before any commit
    await asyncio.sleep(committer_module.BATCH_S * 4)
    assert stored(path, "r1") == 100 and commits == [100]  # one commit, within BATCH_S
    await committer.drain()


@pytest.mark.usefixtures("no_batch_timer")
async def test_a_waited_save_brings_the_batched_commit_forward(
    run_store: tuple[Path, Store],
) -> None:
    path, store = run_store
    committer = Committer(store)
    commits = counting_writes(store)
    for i in range(5):
        await committer.save(result("r1", f"free{i}"), wait=False)
    await asyncio.wait_for(committer.save(result("r1", "paid")), timeout=10)
    assert stored(path, "r1") == 6 and commits == [6]
    await committer.drain()


@pytest.mark.usefixtures("no_batch_timer")
async def test_enough_unwaited_results_are_committed_without_delay(
    run_store: tuple[Path, Store],
) -> None:
    path, store = run_store
    committer = Committer(store)
    for i in range(committer_module.BATCH_RESULTS):
        await committer.save(result("r1", f"c{i}"), wait=False)
    await asyncio.sleep(0.05)
    assert stored(path, "r1") == committer_module.BATCH_RESULTS
    await committer.drain()


@pytest.mark.usefixtures("no_batch_timer")
async def test_drain_commits_unwaited_results_at_once(run_store: tuple[Path, Store]) -> None:
    path, store = run_store
    committer = Committer(store)
    await committer.save(result("r1", "c1"), wait=False)
    await asyncio.wait_for(committer.drain(), timeout=10)
    assert stored(path, "r1") == 1


async def test_a_failed_commit_nobody_waited_for_is_raised_by_the_next_save_and_drain(
    tmp_path: Path,
) -> None:
    path = tmp_path / "evals.db"
    store = Store.open(path)
    committer = Committer(store)  # no run row: the results' foreign key fails
    await committer.save(result("no-such-run", "c1"), wait=False)
    await asyncio.sleep(committer_module.BATCH_S * 4)
    with pytest.raises(sqlite3.IntegrityError):
        await committer.save(result("no-such-run", "c2"), wait=False)
    await committer.save(result("no-such-run", "c3"), wait=False)
    with pytest.raises(sqlite3.IntegrityError):
        await committer.drain()
    store.close()


def test_a_run_freezes_what_it_starts_with_and_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    with gcpolicy.for_run():
        assert gc.get_threshold()[0] >= gcpolicy.RUN_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before


def test_a_later_run_in_the_same_process_does_not_freeze_earlier_garbage() -> None:
    with gcpolicy.for_run():
        pass

    class Node:
        me: object = None

    node = Node()
    node.me = node  # a cycle: only the collector frees it
    alive = weakref.ref(node)
    del node
    with gcpolicy.for_run():
        pass
    assert alive() is None  # collected before the freeze, not kept forever
