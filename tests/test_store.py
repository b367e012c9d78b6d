"""Tests for harness/store.py: migrations and schema version, WAL, results written as they
finish, the response cache table, run lookup and import."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers import FAKE_KEY, KEY_ENV, connect_ro, make_project, threaded_server

import tracing
from harness import store as store_module
from harness.errors import StoreError
from harness.execute import execute
from harness.runner import RunOptions
from harness.store import SCHEMA_VERSION, ResultRow, ScoreRow, Store


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def result(run_id: str, case_id: str, status: str = "pass") -> ResultRow:
    return ResultRow(
        run_id=run_id, case_id=case_id, model="m", epoch=0, status=status, score=1.0,
        output="out", error=None, error_kind=None, latency_ms=1.0, input_tokens=1,
        output_tokens=1, cost_usd=None, cached=False, attempts=1, trace_id=None,
        case_data={"fields": {}}, detail=None, scores=[ScoreRow("equals", status, 1.0, "ok")],
        created_at=time.time(),
    )  # fmt: skip


# --- schema ----------------------------------------------------------------------------------


def test_migrations_set_user_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "evals.db"
    with Store.open(path) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert user_version(path) == SCHEMA_VERSION == len(store_module.MIGRATIONS)


def test_migrations_run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = "CREATE TABLE probe (n INTEGER); INSERT INTO probe VALUES (1);"
    migrations = [*store_module.MIGRATIONS, probe]
    monkeypatch.setattr(store_module, "MIGRATIONS", migrations)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(migrations))
    path = tmp_path / "evals.db"
    for _ in range(3):
        Store.open(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM probe").fetchone()[0] == 1
    assert user_version(path) == len(migrations)


def test_an_old_store_is_upgraded_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "evals.db"
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
        patch.setattr(store_module, "SCHEMA_VERSION", 1)
        with Store.open(path) as store:
            store.create_run("r1", "s", {"schema": 1})
        assert user_version(path) == 1
    with Store.open(path) as store:
        assert store.get_run("r1")["suite"] == "s"
    assert user_version(path) == SCHEMA_VERSION


def test_a_failing_migration_applies_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "evals.db"
    Store.open(path).close()
    broken = "CREATE TABLE half_done (n INTEGER); THIS IS NOT SQL;"
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, broken])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError):
        Store.open(path)
    assert user_version(path) == SCHEMA_VERSION
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in tables


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evals.db"
    Store.open(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError) as info:
        Store.open(path)
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this harness understands" in message
    assert "upgrade evals-harness" in message
    assert user_version(path) == SCHEMA_VERSION + 1


def test_concurrent_first_opens_all_succeed(tmp_path: Path) -> None:
    # Two `evals` processes starting on a fresh checkout race to create the store.
    for attempt in range(5):
        path = tmp_path / f"race{attempt}" / "evals.db"
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_store(
            path: Path = path,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                Store.open(path).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert user_version(path) == SCHEMA_VERSION


def test_open_without_create_does_not_create(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "evals.db"
    with pytest.raises(StoreError, match="no run store at"):
        Store.open(path, create=False)
    assert not path.parent.exists()


def test_corrupt_file_message_says_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "evals.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        Store.open(path)
    assert f"mv {path} {path}.bad" in str(info.value)
    assert path.read_bytes() == b"this is not sqlite" * 100


# --- results and cache -----------------------------------------------------------------------


def test_flush_writes_results_and_cache_atomically(tmp_path: Path) -> None:
    path = tmp_path / "evals.db"
    with Store.open(path) as store:
        store.create_run("r1", "s", {})
        store.add_result(result("r1", "a"))
        store.cache_put("k1", "m", {"text": "hi"})
        assert store.cache_get("k1") == {"text": "hi"}  # pending entries are visible
        with contextlib.closing(connect_ro(path)) as reader:
            assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
        assert store.flush() == 1
        with contextlib.closing(connect_ro(path)) as reader:
            assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
            assert reader.execute("SELECT COUNT(*) FROM response_cache").fetchone()[0] == 1
        assert store.completed_keys("r1") == {("a", "m", 0)}
        (row,) = store.results("r1")
        assert row.scores == [ScoreRow("equals", "pass", 1.0, "ok", None)]


def test_span_rows_handed_over_are_written_with_the_results_in_one_transaction(
    tmp_path: Path,
) -> None:
    # A traced run's spans are written by the process's result commits (one writer): the
    # span store hands its rows over, and a failing write stores neither.
    path = tmp_path / "evals.db"
    with Store.open(path) as store, tracing.setup(store=path) as handle:
        assert handle.hand_span_rows_to(store.add_span_rows)
        with tracing.step_span(handle.tracer("t"), "case", **{"evals.case.id": "a"}):
            pass
        assert handle.force_flush()
        store.create_run("r1", "s", {})
        assert store.flush() == 0  # the span alone
        store.add_result(result("r1", "a"))
        with tracing.step_span(handle.tracer("t"), "case", **{"evals.case.id": "b"}):
            pass
        assert handle.force_flush()
        (batch,) = store.take_span_rows()
        broken = tracing.spanstore.SpanRows([[None] * len(batch.rows[0])], [])  # no ids
        with pytest.raises(sqlite3.IntegrityError):
            store.write(*store.take_pending(), [batch, broken])
        with contextlib.closing(connect_ro(path)) as reader:
            assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
            assert reader.execute("SELECT case_id FROM spans").fetchall() == [("a",)]
        store.add_result(result("r1", "a"))
        store.add_span_rows(batch)
        assert store.flush() == 1
        with contextlib.closing(connect_ro(path)) as reader:
            assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
            cases = reader.execute("SELECT case_id FROM spans ORDER BY rowid").fetchall()
            assert cases == [("a",), ("b",)]
        assert handle.hand_span_rows_to(None)
        with tracing.step_span(handle.tracer("t"), "case", **{"evals.case.id": "c"}):
            pass
        assert handle.force_flush()  # written by the span store itself again
        assert store.take_span_rows() == []
        with contextlib.closing(connect_ro(path)) as reader:
            assert reader.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 3


def stored_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the result tables, in write order (without the time of superseding)."""
    tables = ("results", "scores", "superseded_results", "superseded_scores")
    with contextlib.closing(connect_ro(path)) as reader:
        rows = {t: reader.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    for table in ("superseded_results", "superseded_scores"):
        rows[table] = [row[:-1] for row in rows[table]]
    return rows


def test_batches_without_secrets_are_stored_as_redacted_ones_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch is scanned for secrets at once and written as it is when it holds none: what
    # is stored must be exactly what redacting every value would have stored.
    key = "sk-proj-" + "a1b2c3d4e5" * 3

    def item(case_id: str, status: str = "pass") -> ResultRow:
        return replace(result("r1", case_id, status), created_at=1.0)

    def write(path: Path) -> None:
        with Store.open(path) as store:
            store.create_run("r1", "s", {})
            clean = [item(f"c{i}") for i in range(3)]
            clean[1].detail = {"messages": [{"role": "user", "content": "hi é"}], "calls": ({},)}
            clean[2].scores = [ScoreRow("judge", "pass", 1.0, "fine", {"raw": ["a", 1, None]})]
            for row in clean:
                store.add_result(row)
            store.flush()
            dirty = item("c3")
            dirty.case_data = {"fields": {"note": f"use {key}"}}
            store.add_result(item("c4"))
            store.add_result(dirty)
            store.add_result(item("c0", "fail"))  # written again
            store.flush()

    write(tmp_path / "scanned.db")
    monkeypatch.setattr(store_module, "needs_redaction", lambda values: True)
    write(tmp_path / "redacted.db")
    scanned = stored_rows(tmp_path / "scanned.db")
    assert scanned == stored_rows(tmp_path / "redacted.db")
    assert len(scanned["results"]) == 5 and key not in str(scanned)
    assert '{"fields": {"note": "use [REDACTED]"}}' in str(scanned["results"])


def test_writing_items_again_supersedes_exactly_the_stored_ones(tmp_path: Path) -> None:
    path = tmp_path / "evals.db"
    with Store.open(path) as store:
        for run_id in ("r1", "r2"):
            store.create_run(run_id, "s", {})
        for i in range(3):
            store.add_result(result("r1", f"c{i:03d}", "fail"))
        store.add_result(result("r2", "c005", "fail"))
        store.flush()
        # One batch: more new case ids than one lookup takes, two stored items of r1, and
        # items sharing a stored one's case id but not its run or its epoch.
        for i in range(1, 80):
            store.add_result(result("r1", f"c{i:03d}"))
        store.add_result(result("r2", "c001"))
        store.add_result(replace(result("r1", "c000"), epoch=1))
        assert store.flush() == 81
        assert {(r.case_id, r.epoch): r.status for r in store.results("r1")}[("c000", 0)] == "fail"
    rows = stored_rows(path)
    assert [row[:5] for row in rows["superseded_results"]] == [
        ("r1", "c001", "m", 0, "fail"),
        ("r1", "c002", "m", 0, "fail"),
    ]
    assert [row[:6] for row in rows["superseded_scores"]] == [
        ("r1", "c001", "m", 0, "equals", "fail"),
        ("r1", "c002", "m", 0, "equals", "fail"),
    ]
    current = {row[:4]: row[4] for row in rows["results"]}
    assert len(current) == 83 and current[("r1", "c002", "m", 0)] == "pass"
    assert current[("r2", "c005", "m", 0)] == "fail"
    assert len(rows["scores"]) == 83


def test_get_run_by_prefix_and_last(tmp_path: Path) -> None:
    with Store.open(tmp_path / "evals.db") as store:
        store.create_run("20260101-000000-aaaaaa", "s", {})
        time.sleep(0.01)
        store.create_run("20260101-000000-aabbbb", "s", {})
        assert store.get_run("last")["id"] == "20260101-000000-aabbbb"
        assert store.get_run("20260101-000000-aaa")["id"] == "20260101-000000-aaaaaa"
        with pytest.raises(StoreError, match="ambiguous"):
            store.get_run("20260101-000000-aa")
        with pytest.raises(StoreError, match="no run"):
            store.get_run("zzz")
        # LIKE wildcards in a ref are never patterns.
        store.create_run("my_run_1", "s", {})
        store.create_run("myXrunX2", "s", {})
        assert store.get_run("my_r")["id"] == "my_run_1"
        with pytest.raises(StoreError, match="no run"):
            store.get_run("my%1")


def test_import_run_refuses_a_duplicate_id(tmp_path: Path) -> None:
    with Store.open(tmp_path / "evals.db") as store:
        store.create_run("r1", "s", {})
        record = store.get_run("r1")
        with pytest.raises(StoreError, match="already in"):
            store.import_run(record, [result("r1", "a")])
        assert store.results("r1") == []


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_run_file_carries_the_runs_superseded_results(tmp_path: Path, suffix: str) -> None:
    from harness.runfile import import_run_file, write_run_file

    with Store.open(tmp_path / "a.db") as store:
        store.create_run("r1", "s", {})
        for attempt in ("error", "fail", "pass"):  # a resume ran c1 again, twice
            first = replace(result("r1", "c1", attempt), created_at=1.0)
            first.scores = [ScoreRow("equals", attempt, None, f"attempt {attempt}")]
            store.add_result(first)
            store.add_result(replace(result("r1", f"other-{attempt}"), created_at=1.0))
            store.flush()
        history = store.superseded("r1")
        path = tmp_path / f"run{suffix}"
        write_run_file(store, "r1", path)
        current = store.results("r1")
    assert [(r.case_id, r.status, r.scores[0].reason) for r, _ in history] == [
        ("c1", "error", "attempt error"),
        ("c1", "fail", "attempt fail"),
    ]
    with Store.open(tmp_path / "b.db") as other:
        _, imported = import_run_file(other, path)
        assert imported == 4
        assert other.superseded("r1") == history  # results, scores and when, all kept
        assert other.results("r1") == current


def test_a_schema_1_run_file_still_imports(tmp_path: Path) -> None:
    import json

    from harness.runfile import import_run_file, write_run_file

    with Store.open(tmp_path / "a.db") as store:
        store.create_run("r1", "s", {})
        store.add_result(result("r1", "c1"))
        store.flush()
        write_run_file(store, "r1", tmp_path / "run.jsonl")
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    header["schema"] = 1  # as files were written before superseded results were exported
    (tmp_path / "old.jsonl").write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with Store.open(tmp_path / "b.db") as other:
        assert import_run_file(other, tmp_path / "old.jsonl")[1] == 1
        assert other.superseded("r1") == []


def test_results_are_visible_while_the_run_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    with threaded_server(latency_ms=150) as server:
        project = make_project(tmp_path, server.url, n=6, concurrency=1)
        done: dict[str, Any] = {}

        def run() -> None:
            done["outcome"] = execute(
                project.suite,
                project_dir=project.root,
                store_path=project.store,
                options=RunOptions(),
            )

        thread = threading.Thread(target=run)
        thread.start()
        seen: list[tuple[int, str]] = []
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            if project.store.exists():
                with (
                    contextlib.suppress(sqlite3.OperationalError),
                    contextlib.closing(connect_ro(project.store)) as reader,
                ):
                    count = reader.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                    status = reader.execute("SELECT status FROM runs").fetchone()
                    if status is not None:
                        seen.append((count, status[0]))
            time.sleep(0.02)
        thread.join()
    assert done["outcome"].status == "completed"
    partial = {count for count, status in seen if status == "running"}
    # A reader saw results before the run ended, one by one as they finished.
    assert any(0 < count < 6 for count in partial), seen[-5:]
    assert len(partial) >= 3
