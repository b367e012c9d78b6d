"""The SQLite span store (tracing.spanstore): schema, round trip, run/case labelling."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Status, StatusCode
from tracing_testkit import Memory

import tracing
from tracing import conventions as c
from tracing import spanstore
from tracing.spanstore import SCHEMA_VERSION, SpanStore, SpanStoreError, schema_version
from tracing.traces import get_span, get_trace


def make_trace(memory: Memory) -> None:
    tracer = memory.tracer
    with tracing.step_span(tracer, "case", **{c.EVALS_RUN_ID: "r1", c.EVALS_CASE_ID: "k1"}) as root:
        with tracing.llm_span(
            tracer, "openai/gpt-4o-mini", messages=[{"role": "user", "content": "q"}]
        ) as llm:
            llm.span.add_event("retry", {"attempt": 1, "reason": "429"})
            llm.set_response("a", "stop", 7, 3, cost=0.5)
        with pytest.raises(KeyError), tracing.tool_span(tracer, "t", {"x": 1}):
            raise KeyError("missing")
        root.span.set_status(Status(StatusCode.OK))
        root.set_attribute(c.EVALS_VERDICT, "pass")


def root_and_children(spans: Sequence[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """A trace's root span and its other spans, in the order they ended."""
    root = next(s for s in spans if s.parent is None)
    return root, [s for s in spans if s.parent is not None]


def test_round_trip_keeps_ids_parents_attributes_events_status(
    memory: Memory, tmp_path: Path
) -> None:
    make_trace(memory)
    finished = memory.exporter.get_finished_spans()
    store = SpanStore(tmp_path / "runs.sqlite")
    assert store.write(finished) == 3
    store.close()

    root = next(s for s in finished if s.parent is None)
    trace_id = format(root.context.trace_id, "032x")
    spans = get_trace(tmp_path / "runs.sqlite", trace_id)
    assert [s["name"] for s in spans] == ["case", "chat gpt-4o-mini", "execute_tool t"]
    for original in finished:
        span_id = format(original.context.span_id, "016x")
        stored = get_span(tmp_path / "runs.sqlite", trace_id, span_id)
        assert stored is not None
        assert stored["trace_id"] == trace_id
        expected_parent = (
            format(original.parent.span_id, "016x") if original.parent is not None else None
        )
        assert stored["parent_span_id"] == expected_parent
        assert stored["start_ns"] == original.start_time
        assert stored["end_ns"] == original.end_time
        assert stored["kind"] == original.kind.name
        expected = json.loads(json.dumps(dict(original.attributes or {})))
        assert stored["attributes"] == expected
        assert stored["resource"]["service.name"] == original.resource.attributes["service.name"]
        assert stored["scope"] == "test"

    by_name = {s["name"]: s for s in spans}
    assert by_name["case"]["status_code"] == "OK"
    assert by_name["case"]["verdict"] == "pass"
    llm = by_name["chat gpt-4o-mini"]
    assert llm["events"][0]["name"] == "retry"
    assert llm["events"][0]["attributes"] == {"attempt": 1, "reason": "429"}
    assert (llm["span_kind"], llm["model"]) == ("LLM", "gpt-4o-mini")
    assert (llm["input_tokens"], llm["output_tokens"], llm["cost_usd"]) == (7, 3, 0.5)
    tool = by_name["execute_tool t"]
    assert tool["status_code"] == "ERROR"
    assert tool["status_message"] == "KeyError: 'missing'"
    assert tool["attributes"]["error.type"] == "KeyError"
    assert tool["events"][0]["name"] == "exception"
    # The trace's run and case ids reach every span, though only the root carries them.
    assert {(s["run_id"], s["case_id"]) for s in spans} == {("r1", "k1")}


def test_ids_reach_children_written_before_and_after_the_root(
    memory: Memory, tmp_path: Path
) -> None:
    make_trace(memory)
    root, children = root_and_children(memory.exporter.get_finished_spans())
    store = SpanStore(tmp_path / "s.sqlite")
    store.write(children[:1])  # children end first, in an earlier batch
    store.write([root])
    store.write(children[1:])  # a straggler ending after the root was written
    store.close()
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    rows = conn.execute("SELECT name, run_id, case_id FROM spans ORDER BY name").fetchall()
    assert rows == [
        ("case", "r1", "k1"),
        ("chat gpt-4o-mini", "r1", "k1"),
        ("execute_tool t", "r1", "k1"),
    ]


def test_labelling_spans_stored_earlier_is_atomic_with_the_batch_that_taught_the_ids(
    memory: Memory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_trace(memory)
    finished = list(memory.exporter.get_finished_spans())
    root, children = root_and_children(finished)
    store = SpanStore(tmp_path / "s.sqlite")
    store.write(children)  # stored unlabelled: the ids come with the root
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    store.write([root])
    kinds = [s.split()[0] for s in statements if not s.startswith("SELECT")]
    assert kinds == ["BEGIN", "INSERT", "UPDATE", "COMMIT"]
    # A failure inside that transaction leaves neither the batch nor the labels.
    make_trace(memory)
    second_root, second_children = root_and_children(
        [s for s in memory.exporter.get_finished_spans() if s not in finished]
    )
    store.write(second_children)
    real = store._conn

    class Failing:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def execute(self, sql: str, *args: object) -> object:
            if sql.startswith("UPDATE"):
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql, *args)

    monkeypatch.setattr(store, "_conn", Failing())
    with pytest.raises(sqlite3.OperationalError):
        store.write([second_root])
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 5  # 3 + 2 children
    unlabelled = conn.execute("SELECT count(*) FROM spans WHERE run_id IS NULL").fetchone()
    assert unlabelled[0] == 2
    # Written again once the file works, the root still brings its children their ids.
    monkeypatch.setattr(store, "_conn", real)
    store.write([second_root])
    store.close()
    assert conn.execute("SELECT count(*) FROM spans WHERE run_id IS NULL").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 6


def test_schema_is_versioned_and_reopening_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    SpanStore(path).close()
    SpanStore(path).close()
    conn = sqlite3.connect(path)
    assert schema_version(conn) == SCHEMA_VERSION == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"spans_trace", "spans_run"} <= indexes
    assert "spans_span" not in indexes  # dropped by version 2: random ids made writes costly


def test_version_1_stores_lose_the_span_id_index(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    SpanStore(path).close()
    conn = sqlite3.connect(path)  # as version 1 left it
    conn.execute("CREATE INDEX spans_span ON spans (span_id)")
    conn.execute("UPDATE tracing_meta SET value = '1' WHERE key = 'spans_schema_version'")
    conn.commit()
    SpanStore(path).close()
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "spans_span" not in indexes and "spans_trace" in indexes
    assert schema_version(conn) == 2
    conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    SpanStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE tracing_meta SET value = '99' WHERE key = 'spans_schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SpanStoreError, match="newer"):
        SpanStore(path)


def test_shares_a_file_with_other_tables(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")
    conn.execute("INSERT INTO runs VALUES ('r1')")
    conn.commit()
    SpanStore(path).close()
    assert conn.execute("SELECT id FROM runs").fetchall() == [("r1",)]


def test_concurrent_writers_are_serialised(memory: Memory, tmp_path: Path) -> None:
    for i in range(200):
        with tracing.step_span(memory.tracer, f"s{i}"):
            pass
    spans = list(memory.exporter.get_finished_spans())
    store = SpanStore(tmp_path / "s.sqlite")
    threads = [threading.Thread(target=store.write, args=(spans[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    count = sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT count(*) FROM spans")
    assert count.fetchone()[0] == 200


def test_writing_after_close_raises(memory: Memory, tmp_path: Path) -> None:
    with tracing.step_span(memory.tracer, "s"):
        pass
    store = SpanStore(tmp_path / "s.sqlite")
    store.close()
    with pytest.raises(SpanStoreError):
        store.write(memory.exporter.get_finished_spans())


def test_a_batch_is_labelled_whole_so_a_trace_split_across_its_transactions_needs_no_update(
    memory: Memory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spanstore, "TRANSACTION_SPANS", 2)
    make_trace(memory)
    finished = list(memory.exporter.get_finished_spans())  # the root ends last
    store = SpanStore(tmp_path / "s.sqlite")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    store.write(finished)  # two transactions: children first, then the root
    store.close()
    # Each is one INSERT statement, its own transaction (no BEGIN: the file's write lock is
    # never held while this thread waits for the GIL between statements).
    assert sum(s.startswith("INSERT INTO spans") for s in statements) == 2
    assert not [s for s in statements if s.startswith(("BEGIN", "UPDATE"))]
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    labels = conn.execute("SELECT DISTINCT run_id, case_id FROM spans").fetchall()
    assert labels == [("r1", "k1")]
