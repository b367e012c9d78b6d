"""Tests of harness/cli_traces.py and harness/trace_dataset.py: `evals traces`, `evals trace`
and `evals dataset from-traces`, over runs of the real engine and over production traces
recorded with the `tracing` helpers."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Project, case_rows, invoke, make_project, threaded_server
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from rich.console import Console

import tracing
from harness.datasets import DatasetSpec, load_dataset
from harness.errors import StoreError
from harness.render_traces import money, traces_table
from harness.trace_dataset import case_row, resolve_trace_id
from tracing import conventions as c

PRICE = {"input_per_million": 1.0, "output_per_million": 2.0}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A run of four cases (c001 fails) with a priced model, traced into the store."""
    root = tmp_path_factory.mktemp("traces")
    with threaded_server() as server:
        project = make_project(root, server.url, rows=case_rows(4, fail={1}),
                               model={"price": PRICE})  # fmt: skip
        result = invoke(project, project.run_args())
        assert result.exit_code == 0, result.stderr
        yield project


def traces_json(project: Project, *args: str) -> dict[str, Any]:
    result = invoke(project, ["traces", "last", "--store", str(project.store), "--json", *args])
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


# --- evals traces ----------------------------------------------------------------------------


def test_traces_lists_every_case_with_its_figures(project: Project) -> None:
    listed = traces_json(project)
    assert listed["total"] == 4
    rows = listed["traces"]
    assert [r["case_id"] for r in rows] == ["c000", "c001", "c002", "c003"]
    assert [r["verdict"] for r in rows] == ["pass", "fail", "pass", "pass"]
    for row in rows:
        assert row["run_id"] == listed["run_id"] and row["model"] == "openai/fake-model"
        assert row["epoch"] == 0 and row["span_count"] == 3 and row["duration_ms"] > 0
        assert row["input_tokens"] > 0 and row["output_tokens"] == 2 and row["cost_usd"] > 0
        assert len(row["trace_id"]) == 32


def test_traces_filters_by_verdict_and_limits(project: Project) -> None:
    failing = traces_json(project, "--verdict", "fail")
    assert failing["total"] == 1 and [r["case_id"] for r in failing["traces"]] == ["c001"]
    assert traces_json(project, "--verdict", "error")["traces"] == []
    limited = traces_json(project, "--limit", "2")
    assert limited["total"] == 4 and len(limited["traces"]) == 2


def test_traces_table(project: Project) -> None:
    result = invoke(project, ["traces", "last", "--store", str(project.store)])
    assert result.exit_code == 0
    first = traces_json(project)["traces"][0]
    for text in ("c000", "c001", "fail", "pass", "openai/fake-model", first["trace_id"][:12]):
        assert text in result.stdout
    assert "4 of 4 traces" in result.stdout
    assert "evals trace " in result.stderr


@pytest.mark.parametrize("width", [80, 100])
def test_traces_table_shows_whole_trace_ids_in_a_narrow_terminal(
    project: Project, width: int
) -> None:
    # The id prefix is what `evals trace` takes: names give way, never the id or a figure.
    rows = tracing.list_traces(project.store, traces_json(project)["traces"][0]["run_id"])
    rows = [{**row, "case_id": "a-long-case-name-" * 3, "duration_ms": 12_345.0} for row in rows]
    console = Console(file=io.StringIO(), width=width)
    console.print(traces_table(rows, "run r", console.width))
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert max(len(line.rstrip()) for line in lines) <= width
    for row in rows:
        (line,) = [line for line in lines if row["trace_id"][:12] in line]
        assert "12.3 s" in line and money(row["cost_usd"]) in line


def test_a_run_without_traces_says_so(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=2)
        assert invoke(project, project.run_args("--no-trace")).exit_code == 0
    result = invoke(project, ["traces", "last", "--store", str(project.store)])
    assert result.exit_code == 0
    assert "recorded no traces" in result.stderr and "--no-trace" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["traces", "nope"], "no run 'nope'"),
        (["traces", "last", "--verdict", "bad"], "--verdict must be one of"),
        (["trace", "ffffffffffff"], "no trace 'ffffffffffff'"),
        (["trace", "not-hex"], "no trace 'not-hex'"),
        (["dataset", "from-traces", "--run", "nope", "-o", "x.jsonl"], "no run 'nope'"),
        (["dataset", "from-traces", "--trace", "abc", "--run", "last", "-o", "x.jsonl"],
         "not both"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_exit_2(project: Project, args: list[str], message: str) -> None:
    result = invoke(project, [*args, "--store", str(project.store)])
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (project.root / "x.jsonl").exists()


@pytest.mark.parametrize("command", [["traces", "last"], ["trace", "abc"]])
def test_a_missing_store_is_an_error(tmp_path: Path, command: list[str]) -> None:
    result = invoke(tmp_path, [*command, "--store", str(tmp_path / "none.db")])
    assert result.exit_code == 2
    assert "no run store at" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "none.db").exists()


# --- evals trace -----------------------------------------------------------------------------


def test_trace_prints_the_span_tree(project: Project) -> None:
    failing = traces_json(project, "--verdict", "fail")["traces"][0]
    result = invoke(project, ["trace", failing["trace_id"][:10], "--store", str(project.store)])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"trace {failing['trace_id']}  3 spans")
    tree = "\n".join(lines)
    for text in (
        "case c001  CHAIN", "fail",  # the root and its verdict
        "chat fake-model  LLM", "→2 tok", "$0.0000",  # tokens and cost per span
        "gen_ai.request.model = fake-model", 'gen_ai.response.finish_reasons = ["stop"]',
        "evals.cache_hit = false",
        "score equals  EVALUATOR", "evals.passed = false", "evals.score = 0.0",
    ):  # fmt: skip
        assert text in tree, text
    assert "gen_ai.input.messages" not in tree  # only key attributes by default
    assert tree.index("case c001") < tree.index("chat fake-model") < tree.index("score equals")


def test_trace_attributes_and_json(project: Project) -> None:
    trace_id = traces_json(project)["traces"][0]["trace_id"]
    full = invoke(project, ["trace", trace_id, "--attributes", "--store", str(project.store)])
    assert "gen_ai.input.messages = " in full.stdout and "llm.token_count.total" in full.stdout
    result = invoke(project, ["trace", trace_id, "--json", "--store", str(project.store)])
    data = json.loads(result.stdout)
    assert data["trace_id"] == trace_id and data["spans"] == 3 and data["cost_usd"] > 0
    (root,) = data["roots"]
    assert root["name"] == "case c000" and root["verdict"] == "pass"
    assert [child["span_kind"] for child in root["children"]] == ["LLM", "EVALUATOR"]
    assert root["children"][0]["attributes"][c.GEN_AI_USAGE_INPUT_TOKENS] > 0


class CountingIds(IdGenerator):
    """Trace ids 0xabc0...01, 0xabc0...02, ...: two share any prefix up to 30 digits."""

    def __init__(self) -> None:
        self.count = 0

    def generate_span_id(self) -> int:
        self.count += 1
        return self.count

    def generate_trace_id(self) -> int:
        self.count += 1
        return (0xABC << 116) + self.count


def record_with_ids(store: Path, names: list[str]) -> list[str]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=CountingIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for name in names:
        with tracing.step_span(tracer, name):
            pass
    spans = exporter.get_finished_spans()
    span_store = tracing.SpanStore(store)
    span_store.write(spans)
    span_store.close()
    return [format(s.context.trace_id, "032x") for s in spans if s.context]


def test_trace_prefixes_must_be_unique(tmp_path: Path) -> None:
    store = tmp_path / "spans.db"
    first, second = record_with_ids(store, ["one", "two"])
    assert first[:8] == second[:8] == "abc00000"
    with pytest.raises(StoreError, match="ambiguous"):
        resolve_trace_id(store, "abc0")
    assert resolve_trace_id(store, second.upper()) == second
    result = invoke(tmp_path, ["trace", "abc", "--store", str(store)])
    assert result.exit_code == 2 and "ambiguous" in result.stderr


def test_trace_content_cannot_drive_the_terminal(tmp_path: Path) -> None:
    store = tmp_path / "spans.db"
    handle = tracing.setup(store=store)
    with tracing.step_span(handle.tracer(), "evil \x1b[2J\x1b]0;title\x07name") as span:
        span.set_output("line one\nline two \x1b[31mred[/]")
    handle.shutdown()
    (summary,) = tracing.list_traces(store)
    result = invoke(tmp_path, ["trace", summary["trace_id"], "--attributes", "--store",
                               str(store)])  # fmt: skip
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "evil \\x1b[2J" in result.stdout and "line one\\nline two" in result.stdout


# --- evals dataset from-traces ---------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_failing_traces_become_cases_the_next_suite_runs(project: Project) -> None:
    out = project.root / "failures.jsonl"
    result = invoke(project, ["dataset", "from-traces", "--run", "last", "--verdict", "fail",
                              "-o", str(out), "--store", str(project.store)])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "wrote 1 case(s)" in result.stderr
    (row,) = read_jsonl(out)
    failing = traces_json(project, "--verdict", "fail")
    assert row == {
        "id": "c001",
        "question": "question 1?",
        "reply": "answer 1",
        "tags": ["odd"],
        "expected": "wrong 1",
        "metadata": {
            "tags": ["odd"],
            "source_trace_id": failing["traces"][0]["trace_id"],
            "source_run_id": failing["run_id"],
            "source_case_id": "c001",
            "source_verdict": "fail",
            "source_output": "answer 1",
        },
    }
    (case,) = load_dataset(DatasetSpec(path=str(out)), project.root).cases
    assert (case.id, case.expected, case.fields["question"]) == ("c001", "wrong 1", "question 1?")

    # The next suite runs on it: same prompt, the same case fails the same way.
    with threaded_server() as server:
        rerun = make_project(project.root / "next", server.url, rows=read_jsonl(out))
        result = invoke(rerun, rerun.run_args("--json"))
    summary = json.loads(result.stdout)
    assert summary["models"]["openai/fake-model"]["failed"] == 1


def test_repeated_cases_get_distinct_ids(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=2)
        assert invoke(project, project.run_args("--repeat", "2")).exit_code == 0
    out = tmp_path / "all.jsonl"
    result = invoke(project, ["dataset", "from-traces", "--run", "last", "--limit", "10",
                              "-o", str(out), "--store", str(project.store)])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = read_jsonl(out)
    assert len(rows) == 4 and len({row["id"] for row in rows}) == 4
    assert sorted(row["metadata"]["source_case_id"] for row in rows) == [
        "c000", "c000", "c001", "c001"
    ]  # fmt: skip
    assert len(load_dataset(DatasetSpec(path=str(out)), tmp_path).cases) == 4


def record_production_traces(store: Path) -> dict[str, str]:
    """What an app would record with the tracing helpers: no harness root, no run."""
    handle = tracing.setup(store=store, project_name="support-bot")
    tracer = handle.tracer("support-bot")
    messages = [
        {"role": "system", "content": "You answer support questions."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is the refund policy?"},
    ]
    with tracing.step_span(tracer, "handle_request", kind=c.KIND_AGENT) as root:
        with tracing.llm_span(tracer, "openai/gpt-4o-mini", messages=messages) as llm:
            tracing.record_completion(llm, {
                "model": "gpt-4o-mini",
                "choices": [{"message": {"content": "30 days."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 3},
            })  # fmt: skip
        root.set_output("30 days.")

    @tracing.traced(tracer=tracer)
    def lookup_order(order_id: str, verbose: bool = False) -> str:
        return "shipped"

    lookup_order("A-17")
    handle.shutdown()
    blind = tracing.setup(store=store, capture_content=False)
    with tracing.step_span(blind.tracer(), "private_request") as span:
        span.set_input("secret stuff")
    blind.shutdown()
    return {s["root_name"] or "": s["trace_id"] for s in tracing.list_traces(store)}


def test_production_traces_become_cases(tmp_path: Path) -> None:
    store = tmp_path / "app.sqlite"
    ids = record_production_traces(store)
    out = tmp_path / "prod.jsonl"
    result = invoke(tmp_path, ["dataset", "from-traces", "-o", str(out), "--store", str(store)])
    assert result.exit_code == 0, result.stderr
    assert f"skipped trace {ids['private_request']}: no input recorded" in result.stderr
    agent, traced = read_jsonl(out)
    provenance = {"source_run_id": None, "source_case_id": None, "source_verdict": None}
    assert agent == {
        "id": f"trace-{ids['handle_request'][:12]}",
        "input": "What is the refund policy?",  # the first LLM call's last user message
        "expected": None,
        "metadata": {"source_trace_id": ids["handle_request"], **provenance,
                     "source_output": "30 days."},
    }  # fmt: skip
    # A @traced root with no LLM call: its recorded arguments are the fields.
    name = next(n for n in ids if n.endswith("lookup_order"))
    assert traced["order_id"] == "A-17" and traced["expected"] is None
    assert traced["metadata"]["source_trace_id"] == ids[name]
    cases = load_dataset(DatasetSpec(path=str(out)), tmp_path).cases
    assert [case.fields.get("input") for case in cases] == ["What is the refund policy?", None]

    # One trace by id prefix.
    one = tmp_path / "one.jsonl"
    result = invoke(tmp_path, ["dataset", "from-traces", "--trace", ids["handle_request"][:8],
                               "-o", str(one), "--store", str(store)])  # fmt: skip
    assert result.exit_code == 0 and len(read_jsonl(one)) == 1


def test_nothing_selected_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "app.sqlite"
    record_production_traces(store)
    out = tmp_path / "none.jsonl"
    result = invoke(tmp_path, ["dataset", "from-traces", "--verdict", "fail", "-o", str(out),
                               "--store", str(store)])  # fmt: skip
    assert result.exit_code == 1 and "no traces matched" in result.stderr
    assert not out.exists()


def test_an_llm_span_with_openinference_content_parts() -> None:
    """Traces from other instrumentations (OpenInference) may carry message parts."""
    span: Any = {
        "trace_id": "ab" * 16, "span_id": "01" * 8, "parent_span_id": None, "name": "chat",
        "start_ns": 1, "span_kind": "LLM", "run_id": None, "case_id": None, "verdict": None,
        "attributes": {
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.contents.0.message_content.text": "Describe this",
            "llm.input_messages.0.message.contents.1.message_content.text": "image",
        },
    }  # fmt: skip
    row = case_row([span])
    assert isinstance(row, dict) and row["input"] == "Describe this\nimage"
