"""Reading traces back (tracing.traces): list, count, fetch, tree."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from opentelemetry.trace import Status, StatusCode
from tracing_testkit import Memory

import tracing
from tracing import conventions as c
from tracing.spanstore import SpanStore
from tracing.traces import count_traces, get_span, get_trace, list_traces, span_tree


def run_case(memory: Memory, run_id: str, case_id: str, verdict: str, fail_tool: bool) -> None:
    tracer = memory.tracer
    ids = {c.EVALS_RUN_ID: run_id, c.EVALS_CASE_ID: case_id}
    with tracing.step_span(tracer, f"case {case_id}", **ids) as root:
        with tracing.retrieval_span(tracer, "q", 1) as retrieval:
            retrieval.set_documents([{"id": "d", "content": "x", "score": 1.0}])
        with tracing.llm_span(tracer, "openai/gpt-4o-mini") as llm:
            llm.set_response("a", "stop", 10, 5, cost=0.25)
        if fail_tool:
            with pytest.raises(RuntimeError), tracing.tool_span(tracer, "t"):
                raise RuntimeError("tool down")
        with tracing.evaluator_span(tracer, "judge", "judge") as evaluation:
            with tracing.llm_span(tracer, "local/smollm2") as judge:
                judge.set_response("PASS", "stop", 4, 1, cost=0.0)
            evaluation.set_score(1.0, verdict == "pass")
        root.set_attribute(c.EVALS_VERDICT, verdict)
        # A total on the root must not be added to the LLM spans' costs.
        root.set_attribute(c.EVALS_COST_USD, 0.25)
        root.span.set_status(Status(StatusCode.OK))


@pytest.fixture
def store_path(memory: Memory, tmp_path: Path) -> Path:
    run_case(memory, "r1", "a", "pass", fail_tool=False)
    run_case(memory, "r1", "b", "fail", fail_tool=True)
    run_case(memory, "r2", "a", "pass", fail_tool=False)
    path = tmp_path / "runs.sqlite"
    store = SpanStore(path)
    store.write(memory.exporter.get_finished_spans())
    store.close()
    return path


def test_list_traces_summarises_each_trace(store_path: Path) -> None:
    rows = list_traces(store_path, run_id="r1", newest_first=False)
    assert [(r["root_name"], r["case_id"], r["verdict"]) for r in rows] == [
        ("case a", "a", "pass"),
        ("case b", "b", "fail"),
    ]
    first, second = rows
    assert first["run_id"] == "r1"
    assert first["cost_usd"] == pytest.approx(0.25)
    assert (first["input_tokens"], first["output_tokens"], first["total_tokens"]) == (14, 6, 20)
    assert first["span_count"] == 5
    assert (first["status"], first["error_count"]) == ("OK", 0)
    assert second["span_count"] == 6
    assert second["error_count"] == 1
    assert first["duration_ms"] > 0
    assert first["start_ns"] <= second["start_ns"]


def test_list_traces_filters_and_pages(store_path: Path) -> None:
    assert len(list_traces(store_path)) == 3
    assert count_traces(store_path) == 3
    assert count_traces(store_path, "r1") == 2
    assert count_traces(store_path, case_id="a") == 2
    newest = list_traces(store_path, limit=1)
    assert newest[0]["run_id"] == "r2"
    page = list_traces(store_path, limit=2, offset=2)
    assert len(page) == 1
    assert [r["case_id"] for r in list_traces(store_path, "r1", case_id="b")] == ["b"]
    assert list_traces(store_path, run_id="nope") == []


def test_get_trace_and_span_tree(store_path: Path) -> None:
    (summary,) = list_traces(store_path, run_id="r1", case_id="a")
    spans = get_trace(store_path, summary["trace_id"])
    assert [s["start_ns"] for s in spans] == sorted(s["start_ns"] for s in spans)
    (root,) = span_tree(spans)
    assert root["name"] == "case a"
    assert [child["name"] for child in root["children"]] == [
        "retrieval",
        "chat gpt-4o-mini",
        "score judge",
    ]
    evaluator = root["children"][2]
    assert [g["name"] for g in evaluator["children"]] == ["chat smollm2"]
    span = get_span(store_path, evaluator["trace_id"], evaluator["span_id"])
    assert span is not None and span["span_kind"] == "EVALUATOR"
    assert get_span(store_path, "f" * 32, evaluator["span_id"]) is None  # not in that trace


def test_span_tree_keeps_orphans_as_roots(store_path: Path) -> None:
    (summary,) = list_traces(store_path, run_id="r2")
    spans = [s for s in get_trace(store_path, summary["trace_id"]) if s["name"] != "case a"]
    assert sorted(node["name"] for node in span_tree(spans)) == [
        "chat gpt-4o-mini",
        "retrieval",
        "score judge",
    ]


def test_queries_accept_an_open_connection(store_path: Path) -> None:
    conn = sqlite3.connect(store_path)
    assert count_traces(conn) == 3
    assert len(list_traces(conn, "r2")) == 1
    conn.execute("SELECT 1")  # still open: the caller owns it


def test_unknown_and_missing_stores_read_as_empty(tmp_path: Path, store_path: Path) -> None:
    assert get_trace(store_path, "0" * 32) == []
    assert get_span(store_path, "0" * 32, "0" * 16) is None
    missing = tmp_path / "missing.sqlite"
    assert list_traces(missing) == []
    assert count_traces(missing) == 0
    assert get_trace(missing, "0" * 32) == []
    assert not missing.exists()
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE runs (id TEXT)")
    assert list_traces(other) == []
