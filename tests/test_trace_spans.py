"""Golden span trees of the harness: what `evals run` traces for a chat, agent, judged, replay
and failing case, read through OpenTelemetry's InMemorySpanExporter.

Cases run through the real engine (`harness.execute.execute`) against the fake OpenAI server,
so litellm's HTTP path runs. The in-memory exporter is added to the run's own tracing pipeline
(`tracing.setup(exporters=[...])`), so it sees exactly what the SQLite store and an OTLP
endpoint see: scrubbed spans.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    FAKE_KEY,
    KEY_ENV,
    Project,
    make_project,
    model_entry,
    spawn,
    threaded_server,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tracing
from harness.execute import execute
from harness.fakeserver import Faults, Reply, echo_or_script
from harness.runner import RunOptions, RunOutcome
from harness.store import Store
from tracing import conventions as c

DEPRECATED = ("gen_ai.system", "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens")
PRICE = {"input_per_million": 1.0, "output_per_million": 2.0}
Shape = tuple[str, str, list[Any]]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


class KeptExporter(InMemorySpanExporter):
    """Keeps collecting after a run shuts its pipeline down, so a test can read several runs."""

    def shutdown(self) -> None:
        return None


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """An in-memory exporter added to every pipeline the engine sets up in this test."""
    exporter = KeptExporter()
    monkeypatch.setattr(tracing, "setup", functools.partial(tracing.setup, exporters=[exporter]))
    return exporter


def run(project: Project, **options: Any) -> RunOutcome:
    return execute(
        project.suite,
        project_dir=project.root,
        store_path=project.store,
        options=RunOptions(max_error_rate=1.0, **options),
    )


# --- reading spans ----------------------------------------------------------------------------


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def kind(span: ReadableSpan) -> str:
    return str(attrs(span).get(c.OPENINFERENCE_SPAN_KIND))


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan | None) -> list[ReadableSpan]:
    parent_id = parent.context.span_id if parent is not None and parent.context else None
    found = [s for s in spans if (s.parent.span_id if s.parent else None) == parent_id]
    return sorted(found, key=lambda s: (s.start_time or 0, s.name))


def shape(spans: Sequence[ReadableSpan], parent: ReadableSpan | None = None) -> list[Shape]:
    """The tree as nested (name, OpenInference kind, children), children by start time."""
    return [(s.name, kind(s), shape(spans, s)) for s in children(spans, parent)]


def traces(spans: Sequence[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    """Spans grouped by trace, in the order the traces started."""
    grouped: dict[int, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        assert span.context is not None
        grouped.setdefault(span.context.trace_id, []).append(span)
    return grouped


def only(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def assert_no_deprecated_names(spans: Sequence[ReadableSpan]) -> None:
    for span in spans:
        assert not set(attrs(span)) & set(DEPRECATED), span.name


def trace_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


# --- a chat case ------------------------------------------------------------------------------


def test_chat_case_tree_tokens_cost_and_cache(tmp_path: Path, memory: InMemorySpanExporter) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=1, model={"price": PRICE})
        first = run(project)
        first_spans = list(memory.get_finished_spans())
        memory.clear()
        second = run(project)  # same store: the answer now comes from the response cache
        second_spans = list(memory.get_finished_spans())

    assert shape(first_spans) == [
        ("case c000", "CHAIN", [("chat fake-model", "LLM", []), ("score equals", "EVALUATOR", [])])
    ]
    root = only(first_spans, "case c000")
    llm = only(first_spans, "chat fake-model")
    scorer = only(first_spans, "score equals")
    # System "Reply exactly as told." (4 words) + user "Case c000: question 0?\nREPLY: answer 0"
    # (7): the fake server counts words as tokens; the answer "answer 0" is 2.
    cost = (11 * 1.0 + 2 * 2.0) / 1e6
    assert llm.kind is SpanKind.CLIENT
    assert {
        k: v
        for k, v in attrs(llm).items()
        if not k.startswith(("llm.input", "llm.output"))
        and k not in (c.GEN_AI_INPUT_MESSAGES, c.GEN_AI_OUTPUT_MESSAGES, c.EVALS_LATENCY_MS)
    } == {
        # OpenTelemetry GenAI semantic conventions
        c.GEN_AI_OPERATION_NAME: "chat",
        c.GEN_AI_PROVIDER_NAME: "openai",
        c.GEN_AI_REQUEST_MODEL: "fake-model",
        c.GEN_AI_REQUEST_TEMPERATURE: 0,
        c.GEN_AI_REQUEST_MAX_TOKENS: 16,
        c.GEN_AI_RESPONSE_MODEL: "fake-model",
        c.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        c.GEN_AI_USAGE_INPUT_TOKENS: 11,
        c.GEN_AI_USAGE_OUTPUT_TOKENS: 2,
        # OpenInference, side by side
        c.OPENINFERENCE_SPAN_KIND: "LLM",
        c.LLM_MODEL_NAME: "fake-model",
        c.LLM_PROVIDER: "openai",
        c.LLM_INVOCATION_PARAMETERS: '{"temperature":0,"max_tokens":16}',
        c.LLM_TOKEN_COUNT_PROMPT: 11,
        c.LLM_TOKEN_COUNT_COMPLETION: 2,
        c.LLM_TOKEN_COUNT_TOTAL: 13,
        c.LLM_COST_TOTAL: pytest.approx(cost),
        c.INPUT_VALUE: "Case c000: question 0?\nREPLY: answer 0",
        c.INPUT_MIME_TYPE: "text/plain",
        c.OUTPUT_VALUE: "answer 0",
        c.OUTPUT_MIME_TYPE: "text/plain",
        # ours
        c.EVALS_MODEL: "openai/fake-model",
        c.EVALS_COST_USD: pytest.approx(cost),
        c.EVALS_CACHE_HIT: False,
        c.EVALS_RETRIES: 0,
    }
    llm_attrs = attrs(llm)
    assert llm_attrs[c.EVALS_LATENCY_MS] > 0
    assert json.loads(llm_attrs[c.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Reply exactly as told."}]},
        {"role": "user", "parts": [{"type": "text", "content": llm_attrs[c.INPUT_VALUE]}]},
    ]
    assert json.loads(llm_attrs[c.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "answer 0"}],
         "finish_reason": "stop"}
    ]  # fmt: skip
    assert llm_attrs["llm.input_messages.0.message.role"] == "system"
    assert llm_attrs["llm.input_messages.1.message.role"] == "user"
    assert llm_attrs["llm.output_messages.0.message.content"] == "answer 0"

    root_attrs = attrs(root)
    assert root.kind is SpanKind.INTERNAL and root.status.status_code is StatusCode.UNSET
    assert {k: root_attrs[k] for k in (c.EVALS_RUN_ID, c.EVALS_CASE_ID, c.EVALS_MODEL,
                                       c.EVALS_EPOCH, c.EVALS_VERDICT, c.EVALS_SCORE)} == {
        c.EVALS_RUN_ID: first.run_id, c.EVALS_CASE_ID: "c000", c.EVALS_MODEL: "openai/fake-model",
        c.EVALS_EPOCH: 0, c.EVALS_VERDICT: "pass", c.EVALS_SCORE: 1.0,
    }  # fmt: skip
    assert root_attrs[c.EVALS_COST_USD] == pytest.approx(cost)  # rolled up from the LLM span
    case_vars = json.loads(root_attrs[c.INPUT_VALUE])
    assert case_vars["case_id"] == "c000" and case_vars["question"] == "question 0?"
    assert root_attrs[c.OUTPUT_VALUE] == "answer 0"

    assert {k: v for k, v in attrs(scorer).items() if k != c.OUTPUT_VALUE} == {
        c.OPENINFERENCE_SPAN_KIND: "EVALUATOR",
        c.EVALS_SCORER_NAME: "equals",
        c.EVALS_SCORER_TYPE: "equals",
        c.EVALS_SCORE: 1.0,
        c.EVALS_PASSED: True,
        c.EVALS_REASON: attrs(scorer)[c.EVALS_REASON],
        c.OUTPUT_MIME_TYPE: "application/json",
    }

    # The result row points at its trace, and the store holds the same spans.
    with Store.open(project.store, create=False) as store:
        (result,) = store.results(first.run_id)
    assert result.trace_id == trace_hex(root)
    stored = tracing.get_trace(project.store, trace_hex(root))
    assert sorted(s["name"] for s in stored) == sorted(s.name for s in first_spans)

    # The re-run: same tree, answered by the cache.
    assert shape(second_spans) == shape(first_spans)
    cached = attrs(only(second_spans, "chat fake-model"))
    assert cached[c.EVALS_CACHE_HIT] is True and cached[c.EVALS_RETRIES] == 0
    assert cached[c.GEN_AI_USAGE_INPUT_TOKENS] == 11 and cached[c.EVALS_COST_USD] > 0
    again = only(second_spans, "case c000")
    assert attrs(again)[c.EVALS_RUN_ID] == second.run_id and trace_hex(again) != trace_hex(root)
    assert_no_deprecated_names(first_spans + second_spans)


def test_no_content_keeps_metadata_only(tmp_path: Path, memory: InMemorySpanExporter) -> None:
    with threaded_server() as server:
        run(make_project(tmp_path, server.url, n=1), capture_content=False)
    spans = memory.get_finished_spans()
    llm = attrs(only(spans, "chat fake-model"))
    assert llm[c.GEN_AI_USAGE_INPUT_TOKENS] == 11 and llm[c.GEN_AI_REQUEST_MODEL] == "fake-model"
    dropped = (c.INPUT_VALUE, c.OUTPUT_VALUE, c.GEN_AI_INPUT_MESSAGES, c.GEN_AI_OUTPUT_MESSAGES)
    for span in spans:
        assert not set(attrs(span)) & set(dropped), span.name
        assert not any(k.startswith(("llm.input_messages.", "llm.output_messages.")) for k in
                       attrs(span))  # fmt: skip


# --- an agent case with two tool calls --------------------------------------------------------

TOOLS = '''
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


def get_time(city: str, zone: str = "local") -> dict:
    """The time in a city."""
    return {"city": city, "time": "12:00", "zone": zone}
'''


def test_agent_case_with_two_tool_calls(tmp_path: Path, memory: InMemorySpanExporter) -> None:
    module = "golden_agent_tools"
    (tmp_path / f"{module}.py").write_text(TOOLS, encoding="utf-8")
    script = [
        Reply(
            tool_calls=[
                {"name": "get_weather", "arguments": {"city": "Paris"}},
                {"name": "get_time", "arguments": {"city": "Paris"}},
            ],
            finish_reason="tool_calls",
        ),
        Reply(content="Sunny in Paris at noon."),
    ]
    with threaded_server(tool_script=script) as server:
        project = make_project(
            tmp_path, server.url, n=1, model={"price": PRICE},
            target={"type": "agent", "tools": [f"{module}:get_weather", f"{module}:get_time"],
                    "max_steps": 4},
            scorers=[{"type": "tool-order", "tools": ["get_weather", "get_time"]},
                     {"type": "icontains", "value": "sunny"}],
            thresholds={},
        )  # fmt: skip
        outcome = run(project)
    spans = memory.get_finished_spans()
    assert shape(spans) == [
        ("case c000", "CHAIN", [
            ("agent", "AGENT", [
                ("chat fake-model", "LLM", []),
                ("execute_tool get_weather", "TOOL", []),
                ("execute_tool get_time", "TOOL", []),
                ("chat fake-model", "LLM", []),
            ]),
            ("score tool-order", "EVALUATOR", []),
            ("score icontains", "EVALUATOR", []),
        ])
    ]  # fmt: skip
    root = only(spans, "case c000")
    assert attrs(root)[c.EVALS_VERDICT] == "pass" and outcome.summary["results"] == 1
    agent = attrs(only(spans, "agent"))
    assert agent[c.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert agent["evals.agent.steps"] == 2 and agent[c.OUTPUT_VALUE] == "Sunny in Paris at noon."

    first_llm, last_llm = (attrs(s) for s in children(spans, only(spans, "agent")) if kind(s) ==
                           "LLM")  # fmt: skip
    assert first_llm[c.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    assert json.loads(first_llm[c.LLM_INVOCATION_PARAMETERS])["tools"] == [
        "get_weather",
        "get_time",
    ]
    requested = "llm.output_messages.0.message.tool_calls.{j}.tool_call.function.name"
    assert [first_llm[requested.format(j=j)] for j in (0, 1)] == ["get_weather", "get_time"]
    assert last_llm[c.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    # system, user, the assistant's two tool calls, then one tool message per call
    assert [last_llm[f"llm.input_messages.{i}.message.role"] for i in range(5)] == [
        "system", "user", "assistant", "tool", "tool"
    ]  # fmt: skip
    assert last_llm["llm.input_messages.3.message.content"] == "sunny in Paris"

    weather = attrs(only(spans, "execute_tool get_weather"))
    call_id = first_llm["llm.output_messages.0.message.tool_calls.0.tool_call.id"]
    assert weather == {
        c.GEN_AI_OPERATION_NAME: "execute_tool",
        c.GEN_AI_TOOL_NAME: "get_weather",
        c.GEN_AI_TOOL_CALL_ID: call_id,
        c.GEN_AI_TOOL_CALL_ARGUMENTS: '{"city": "Paris"}',
        c.GEN_AI_TOOL_CALL_RESULT: "sunny in Paris",
        c.OPENINFERENCE_SPAN_KIND: "TOOL",
        c.TOOL_NAME: "get_weather",
        c.INPUT_VALUE: '{"city": "Paris"}',
        c.INPUT_MIME_TYPE: "application/json",
        c.OUTPUT_VALUE: "sunny in Paris",
        c.OUTPUT_MIME_TYPE: "text/plain",
    }
    clock = attrs(only(spans, "execute_tool get_time"))
    assert json.loads(clock[c.GEN_AI_TOOL_CALL_RESULT]) == {
        "city": "Paris", "time": "12:00", "zone": "local"
    }  # fmt: skip
    # Tokens and cost: per LLM span, and the case's total rolled up on the root.
    llm_costs = [attrs(s)[c.EVALS_COST_USD] for s in spans if kind(s) == "LLM"]
    assert attrs(root)[c.EVALS_COST_USD] == pytest.approx(sum(llm_costs))
    assert_no_deprecated_names(spans)


# --- a judged case ----------------------------------------------------------------------------


def judge_or_echo(body: dict[str, Any]) -> Reply:
    """The judge model says pass when the output names Paris; other models echo as usual."""
    if body.get("model") != "fake-judge":
        return echo_or_script(body)
    prompt = next(str(m["content"]) for m in body["messages"] if m["role"] == "user")
    section = re.search(r"<output id=[0-9a-f]+>\n(.*?)</output", prompt, re.DOTALL)
    verdict = section is not None and "Paris" in section.group(1)
    return Reply(json.dumps({"reason": "names Paris" if verdict else "no", "score": int(verdict)}))


def test_judge_call_nests_under_its_evaluator(tmp_path: Path, memory: InMemorySpanExporter) -> None:
    rows = [{"id": "fr", "question": "Capital of France?", "reply": "Paris", "expected": "Paris"}]
    with threaded_server(responder=judge_or_echo) as server:
        judge = {**model_entry(server.url), "id": "openai/fake-judge", "price": PRICE}
        project = make_project(
            tmp_path, server.url, rows=rows, model={"price": PRICE},
            scorers=[{"type": "judge", "rubric": "correctness", "judge": judge}],
            thresholds={},
        )  # fmt: skip
        run(project)
    spans = memory.get_finished_spans()
    assert shape(spans) == [
        ("case fr", "CHAIN", [
            ("chat fake-model", "LLM", []),
            ("score judge", "EVALUATOR", [("chat fake-judge", "LLM", [])]),
        ])
    ]  # fmt: skip
    evaluator = attrs(only(spans, "score judge"))
    assert evaluator[c.EVALS_SCORER_TYPE] == "judge"
    assert evaluator[c.EVALS_PASSED] is True and evaluator[c.EVALS_SCORE] == 1.0
    assert "names Paris" in evaluator[c.EVALS_REASON]
    judge_call = attrs(only(spans, "chat fake-judge"))
    assert judge_call[c.GEN_AI_REQUEST_MODEL] == "fake-judge"
    assert judge_call[c.GEN_AI_USAGE_INPUT_TOKENS] > 0 and judge_call[c.EVALS_COST_USD] > 0
    # The case's cost is the system under test's; the judge's stays on its own LLM span.
    target_cost = attrs(only(spans, "chat fake-model"))[c.EVALS_COST_USD]
    assert attrs(only(spans, "case fr"))[c.EVALS_COST_USD] == pytest.approx(target_cost)
    assert_no_deprecated_names(spans)


# --- a replay case ----------------------------------------------------------------------------


def test_replay_case_has_no_llm_span(tmp_path: Path, memory: InMemorySpanExporter) -> None:
    rows = [{"id": "r1", "output": "Paris", "expected": "Paris"}]
    project = make_project(tmp_path, None, rows=rows, models=[], target="replay")
    outcome = run(project)
    spans = memory.get_finished_spans()
    assert shape(spans) == [("case r1", "CHAIN", [("score equals", "EVALUATOR", [])])]
    root = attrs(only(spans, "case r1"))
    assert root[c.EVALS_RUN_ID] == outcome.run_id and root[c.EVALS_VERDICT] == "pass"
    assert root[c.EVALS_MODEL] == "-" and root[c.EVALS_COST_USD] == 0.0  # no call, no cost
    assert root[c.OUTPUT_VALUE] == "Paris"


# --- provider failures ------------------------------------------------------------------------


def test_provider_failure_marks_the_case_and_records_retries(
    tmp_path: Path, memory: InMemorySpanExporter
) -> None:
    with threaded_server() as server:
        model = {"id": "openai/fake-500", "max_attempts": 3, "backoff_s": 0.001}
        outcome = run(make_project(tmp_path, server.url, n=1, model=model))
    assert outcome.summary["errors"] == 1
    spans = memory.get_finished_spans()
    assert shape(spans) == [("case c000", "CHAIN", [("chat fake-500", "LLM", [])])]
    root, llm = only(spans, "case c000"), only(spans, "chat fake-500")
    assert root.status.status_code is StatusCode.ERROR
    assert attrs(root)[c.ERROR_TYPE] == "server_error"
    assert attrs(root)[c.EVALS_VERDICT] == "error"
    assert "after 3 attempt(s)" in (root.status.description or "")
    assert llm.status.status_code is StatusCode.ERROR
    assert attrs(llm)[c.ERROR_TYPE] == "ProviderCallError"
    assert attrs(llm)[c.EVALS_RETRIES] == 2 and attrs(llm)[c.EVALS_CACHE_HIT] is False
    assert [event.name for event in llm.events] == ["exception"]
    assert_no_deprecated_names(spans)


def test_a_retried_call_that_succeeds_records_its_retries(
    tmp_path: Path, memory: InMemorySpanExporter
) -> None:
    with threaded_server(faults=Faults(fail_first_n=2, fail_first_outcome="500")) as server:
        model = {"max_attempts": 3, "backoff_s": 0.001}
        run(make_project(tmp_path, server.url, n=1, model=model))
    spans = memory.get_finished_spans()
    llm = only(spans, "chat fake-model")
    assert llm.status.status_code is StatusCode.UNSET
    assert attrs(llm)[c.EVALS_RETRIES] == 2
    assert attrs(only(spans, "case c000"))[c.EVALS_VERDICT] == "pass"


def test_tracing_off_records_nothing(tmp_path: Path, memory: InMemorySpanExporter) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=2)
        run(project, trace=False)
    assert memory.get_finished_spans() == ()
    assert tracing.count_traces(project.store) == 0


def test_summary_counts_the_spans_of_every_worker_process(tmp_path: Path) -> None:
    # Slow calls, so the worker process (seconds to start) still finds work to take.
    with threaded_server(latency_ms=300) as server:
        project = make_project(tmp_path, server.url, n=40, model={"concurrency": 4})
        proc = spawn(project, project.run_args("--workers", "2", "--cache", "off", "--json"))
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["processes"] == 2
    with Store.open(project.store) as db:
        stored = db.conn.execute(
            "SELECT count(*) FROM spans WHERE run_id = ?", (summary["run_id"],)
        ).fetchone()[0]
    assert stored == 40 * 3  # case, LLM call, one scorer
    assert summary["tracing"] == {"exported": stored, "dropped": 0, "failed": 0}
