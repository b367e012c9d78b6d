"""Golden span attributes of every helper in tracing.helpers, asserted in memory."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from tracing_testkit import Memory

import tracing
from tracing import conventions as c

MESSAGES = [
    {"role": "system", "content": "Answer with the city name only."},
    {"role": "user", "content": "What is the capital of France?"},
]


def by_name(memory: Memory) -> dict[str, ReadableSpan]:
    return {span.name: span for span in memory.exporter.get_finished_spans()}


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def run_case(tracer: Any) -> None:
    """A CHAIN root with LLM, RETRIEVER, TOOL and EVALUATOR children (the judge's LLM below)."""
    with tracing.step_span(tracer, "case c1", **{c.EVALS_RUN_ID: "run-1", c.EVALS_CASE_ID: "c1"}):
        with tracing.retrieval_span(tracer, "capital of France", 2, data_source="docs@3f2a") as r:
            r.set_documents(
                [
                    {"id": "d1", "content": "Paris is the capital.", "score": 0.91, "metadata": {}},
                    {"id": "d2", "content": "Lyon is a city.", "score": 0.5, "metadata": {"p": 2}},
                ]
            )
        params = {"temperature": 0, "max_tokens": 32, "top_p": 1.0, "seed": 7}
        with tracing.llm_span(tracer, "openai/gpt-4o-mini", None, params, MESSAGES) as llm:
            llm.set_response(
                "Paris",
                "stop",
                input_tokens=21,
                output_tokens=2,
                cost=0.00042,
                response_model="gpt-4o-mini-2024-07-18",
                cache_hit=False,
                retries=1,
                response_id="chatcmpl-1",
            )
        with tracing.tool_span(tracer, "lookup", {"city": "Paris"}, "call_1") as tool:
            tool.set_result({"population": 2_100_000})
        with tracing.evaluator_span(tracer, "correctness", "judge") as judge:
            judge_messages = [{"role": "user", "content": "?"}]
            with tracing.llm_span(tracer, "local/smollm2", messages=judge_messages):
                pass
            judge.set_score(1.0, True, "Same fact as the reference.")


def test_nested_tree_has_the_expected_shape(memory: Memory) -> None:
    run_case(memory.tracer)
    spans = by_name(memory)
    assert set(spans) == {
        "case c1",
        "retrieval docs@3f2a",
        "chat gpt-4o-mini",
        "execute_tool lookup",
        "score correctness",
        "chat smollm2",
    }
    root = spans["case c1"]
    assert root.parent is None
    root_id = root.context.span_id
    for child in ("retrieval docs@3f2a", "chat gpt-4o-mini", "execute_tool lookup"):
        assert spans[child].parent.span_id == root_id  # type: ignore[union-attr]
    assert spans["score correctness"].parent.span_id == root_id  # type: ignore[union-attr]
    judge_id = spans["score correctness"].context.span_id
    assert spans["chat smollm2"].parent.span_id == judge_id  # type: ignore[union-attr]
    trace_ids = {span.context.trace_id for span in spans.values()}
    assert len(trace_ids) == 1
    kinds = {name: attrs(span)[c.OPENINFERENCE_SPAN_KIND] for name, span in spans.items()}
    assert kinds == {
        "case c1": "CHAIN",
        "retrieval docs@3f2a": "RETRIEVER",
        "chat gpt-4o-mini": "LLM",
        "execute_tool lookup": "TOOL",
        "score correctness": "EVALUATOR",
        "chat smollm2": "LLM",
    }


def test_llm_span_golden_attributes(memory: Memory) -> None:
    run_case(memory.tracer)
    span = by_name(memory)["chat gpt-4o-mini"]
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert attrs(span) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0,
        "gen_ai.request.max_tokens": 32,
        "gen_ai.request.top_p": 1.0,
        "gen_ai.request.seed": 7,
        "gen_ai.input.messages": json.dumps(
            [
                {
                    "role": "system",
                    "parts": [{"type": "text", "content": "Answer with the city name only."}],
                },
                {
                    "role": "user",
                    "parts": [{"type": "text", "content": "What is the capital of France?"}],
                },
            ],
            separators=(",", ":"),
        ),
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 21,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.output.messages": (
            '[{"role":"assistant","parts":[{"type":"text","content":"Paris"}],'
            '"finish_reason":"stop"}]'
        ),
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.provider": "openai",
        "llm.invocation_parameters": '{"temperature":0,"max_tokens":32,"top_p":1.0,"seed":7}',
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "Answer with the city name only.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "What is the capital of France?",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Paris",
        "llm.token_count.prompt": 21,
        "llm.token_count.completion": 2,
        "llm.token_count.total": 23,
        "llm.cost.total": 0.00042,
        "input.value": "What is the capital of France?",
        "input.mime_type": "text/plain",
        "output.value": "Paris",
        "output.mime_type": "text/plain",
        "evals.model": "openai/gpt-4o-mini",
        "evals.cost_usd": 0.00042,
        "evals.cache_hit": False,
        "evals.retries": 1,
    }


def test_retrieval_span_golden_attributes(memory: Memory) -> None:
    run_case(memory.tracer)
    span = by_name(memory)["retrieval docs@3f2a"]
    assert attrs(span) == {
        "gen_ai.operation.name": "retrieval",
        "gen_ai.data_source.id": "docs@3f2a",
        "openinference.span.kind": "RETRIEVER",
        "input.value": "capital of France",
        "input.mime_type": "text/plain",
        "evals.retrieval.query": "capital of France",
        "evals.retrieval.top_k": 2,
        "retrieval.documents.0.document.id": "d1",
        "retrieval.documents.0.document.content": "Paris is the capital.",
        "retrieval.documents.0.document.score": 0.91,
        "retrieval.documents.1.document.id": "d2",
        "retrieval.documents.1.document.content": "Lyon is a city.",
        "retrieval.documents.1.document.score": 0.5,
        "retrieval.documents.1.document.metadata": '{"p":2}',
    }


def test_tool_span_golden_attributes(memory: Memory) -> None:
    run_case(memory.tracer)
    span = by_name(memory)["execute_tool lookup"]
    assert span.kind is SpanKind.INTERNAL
    assert attrs(span) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.call.arguments": '{"city":"Paris"}',
        "gen_ai.tool.call.result": '{"population":2100000}',
        "openinference.span.kind": "TOOL",
        "tool.name": "lookup",
        "input.value": '{"city":"Paris"}',
        "input.mime_type": "application/json",
        "output.value": '{"population":2100000}',
        "output.mime_type": "application/json",
    }


def test_evaluator_span_golden_attributes(memory: Memory) -> None:
    run_case(memory.tracer)
    span = by_name(memory)["score correctness"]
    assert attrs(span) == {
        "openinference.span.kind": "EVALUATOR",
        "evals.scorer.name": "correctness",
        "evals.scorer.type": "judge",
        "evals.score": 1.0,
        "evals.passed": True,
        "evals.reason": "Same fact as the reference.",
        "output.value": '{"score":1.0,"passed":true,"reason":"Same fact as the reference."}',
        "output.mime_type": "application/json",
    }


def test_step_span_golden_attributes(memory: Memory) -> None:
    run_case(memory.tracer)
    assert attrs(by_name(memory)["case c1"]) == {
        "openinference.span.kind": "CHAIN",
        "evals.run.id": "run-1",
        "evals.case.id": "c1",
    }


def test_agent_step_sets_invoke_agent(memory: Memory) -> None:
    with tracing.step_span(memory.tracer, "planner", kind="AGENT", **{"evals.epoch": 2}) as step:
        step.set_input({"goal": "x"})
        step.set_output("done")
    assert attrs(by_name(memory)["planner"]) == {
        "openinference.span.kind": "AGENT",
        "gen_ai.operation.name": "invoke_agent",
        "evals.epoch": 2,
        "input.value": '{"goal":"x"}',
        "input.mime_type": "application/json",
        "output.value": "done",
        "output.mime_type": "text/plain",
    }


def test_embedding_span_golden_attributes(memory: Memory) -> None:
    with tracing.embedding_span(
        memory.tracer, "all-MiniLM-L6-v2", 2, provider="sentence-transformers", texts=["a", "b"]
    ) as span:
        span.set_usage(input_tokens=9, cost=0.0)
    assert attrs(by_name(memory)["embeddings all-MiniLM-L6-v2"]) == {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "sentence-transformers",
        "gen_ai.request.model": "all-MiniLM-L6-v2",
        "gen_ai.usage.input_tokens": 9,
        "openinference.span.kind": "EMBEDDING",
        "embedding.model_name": "all-MiniLM-L6-v2",
        "embedding.embeddings.0.embedding.text": "a",
        "embedding.embeddings.1.embedding.text": "b",
        "llm.token_count.prompt": 9,
        "evals.embedding.inputs": 2,
        "evals.cost_usd": 0.0,
    }


def test_exception_sets_error_status_and_type_and_reraises(memory: Memory) -> None:
    with pytest.raises(TimeoutError), tracing.llm_span(memory.tracer, "openai/gpt-4o-mini"):
        raise TimeoutError("provider timed out")
    (span,) = memory.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "TimeoutError: provider timed out"
    assert attrs(span)["error.type"] == "TimeoutError"
    assert [event.name for event in span.events] == ["exception"]


def test_tool_error_without_exception(memory: Memory) -> None:
    with tracing.tool_span(memory.tracer, "search", "not json", call_id=None) as tool:
        tool.set_error("index unavailable", "ToolError")
    (span,) = memory.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "ToolError"
    assert attrs(span)["gen_ai.tool.call.arguments"] == "not json"
    assert "gen_ai.tool.call.id" not in attrs(span)


def test_no_deprecated_gen_ai_names_are_emitted(memory: Memory) -> None:
    run_case(memory.tracer)
    emitted = {key for span in memory.exporter.get_finished_spans() for key in attrs(span)}
    assert not emitted & {
        "gen_ai.system",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
    }


def test_tool_calls_in_messages_and_response(memory: Memory) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "18C"},
    ]
    with tracing.llm_span(memory.tracer, "gpt-4o", "openai", messages=messages) as llm:
        llm.set_response(
            None, "tool_calls", tool_calls=[{"id": "call_10", "name": "time", "arguments": {}}]
        )
    got = attrs(memory.exporter.get_finished_spans()[0])
    assert json.loads(got["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_9",
                    "name": "weather",
                    "arguments": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_9", "response": "18C"}],
        },
    ]
    prefix = "llm.input_messages.1.message.tool_calls.0.tool_call"
    assert got[f"{prefix}.id"] == "call_9"
    assert got[f"{prefix}.function.name"] == "weather"
    assert got[f"{prefix}.function.arguments"] == '{"city":"Paris"}'
    assert got["llm.input_messages.2.message.tool_call_id"] == "call_9"
    assert got["llm.output_messages.0.message.tool_calls.0.tool_call.function.name"] == "time"
    assert "output.value" not in got
    assert json.loads(got["gen_ai.output.messages"])[0]["parts"] == [
        {"type": "tool_call", "id": "call_10", "name": "time", "arguments": {}}
    ]


def test_record_completion_from_openai_dict(memory: Memory) -> None:
    response = {
        "id": "chatcmpl-42",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4"}}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }
    with tracing.llm_span(memory.tracer, "openai/gpt-4o-mini") as llm:
        tracing.record_completion(llm, response, cost=0.001, cache_hit=True, retries=0)
    got = attrs(memory.exporter.get_finished_spans()[0])
    assert got["gen_ai.response.id"] == "chatcmpl-42"
    assert got["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert got["gen_ai.response.finish_reasons"] == ("stop",)
    assert got["gen_ai.usage.input_tokens"] == 10
    assert got["gen_ai.usage.output_tokens"] == 1
    assert got["llm.token_count.total"] == 11
    assert got["output.value"] == "4"
    assert got["evals.cache_hit"] is True
    assert got["evals.cost_usd"] == 0.001


def test_record_completion_accepts_pydantic_like_objects(memory: Memory) -> None:
    class Response:
        def model_dump(self) -> dict[str, Any]:
            return {"choices": [{"message": {"content": "hi"}, "finish_reason": "length"}]}

    with tracing.llm_span(memory.tracer, "m", "p") as llm:
        tracing.record_completion(llm, Response())
    got = attrs(memory.exporter.get_finished_spans()[0])
    assert got["output.value"] == "hi"
    assert got["gen_ai.response.finish_reasons"] == ("length",)


def test_traced_sync_and_async(memory: Memory) -> None:
    @tracing.traced()
    def add(a: int, b: int = 2) -> int:
        return a + b

    @tracing.traced(kind="TOOL", name="fetch", tracer=memory.tracer)
    async def fetch(url: str) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"url": url}

    # `add` uses the global tracer: a no-op unless a global provider is set.
    assert add(1) == 3
    assert asyncio.run(fetch("http://x")) == {"url": "http://x"}
    (span,) = memory.exporter.get_finished_spans()
    assert span.name == "fetch"
    assert attrs(span) == {
        "openinference.span.kind": "TOOL",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "fetch",
        "tool.name": "fetch",
        "input.value": '{"url":"http://x"}',
        "input.mime_type": "application/json",
        "output.value": '{"url":"http://x"}',
        "output.mime_type": "application/json",
    }


def test_traced_records_errors(memory: Memory) -> None:
    @tracing.traced(name="boom", tracer=memory.tracer)
    def boom() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        boom()
    (span,) = memory.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "ValueError"


def test_attribute_values_are_made_legal(memory: Memory) -> None:
    values: dict[str, Any] = {"metadata": {"a": 1}, "mixed": [1, "a"], "ok": [1, 2], "none": None}
    with tracing.step_span(memory.tracer, "s", **values):
        pass
    got = attrs(memory.exporter.get_finished_spans()[0])
    assert got["metadata"] == '{"a":1}'
    assert got["mixed"] == '[1,"a"]'
    assert got["ok"] == (1, 2)
    assert "none" not in got


def test_without_a_recording_tracer_helpers_build_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    monkeypatch.setattr(tracing.helpers, "gen_ai_messages", lambda m: built.append(m) or [])
    with tracing.use_tracer(trace.NoOpTracer()):
        with tracing.llm_span(None, "openai/gpt-4o-mini", messages=MESSAGES) as llm:
            llm.set_response("Paris", "stop", input_tokens=3, output_tokens=1)
            assert not llm.span.is_recording()
            assert trace.get_current_span() is trace.INVALID_SPAN
        with pytest.raises(ValueError), tracing.step_span(None, "boom"):
            raise ValueError("propagates")
    assert built == []


def test_a_sampled_out_span_is_current_so_its_children_share_its_trace() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracing.step_span(tracer, "root") as root:
        assert not root.span.is_recording()
        root.set_output("ignored")
        assert trace.get_current_span() is root.span
        with tracing.llm_span(tracer, "m", messages=MESSAGES) as llm:
            assert llm.span.get_span_context().trace_id == root.span.get_span_context().trace_id
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert memory.get_finished_spans() == ()


def test_setters_apply_when_the_span_ends_and_a_plain_handle_writes_through(
    memory: Memory,
) -> None:
    with tracing.step_span(memory.tracer, "s", **{c.EVALS_CASE_ID: "c1"}) as step:
        step.set_output("later")
        assert "output.value" not in (step.span.attributes or {})  # type: ignore[attr-defined]
    assert attrs(memory.exporter.get_finished_spans()[0])["output.value"] == "later"
    with memory.tracer.start_as_current_span("plain") as span:
        tracing.LLMSpan(span).set_response("now", "stop")
        written = dict(span.attributes)  # type: ignore[attr-defined]
        assert json.loads(written["gen_ai.output.messages"])[0]["parts"][0]["content"] == "now"
        assert written["gen_ai.response.finish_reasons"] == ("stop",)
        assert written["output.value"] == "now"  # OpenInference's form too, at once
    assert attrs(memory.exporter.get_finished_spans()[-1])["output.value"] == "now"


def test_an_error_after_set_error_keeps_the_exception_type(memory: Memory) -> None:
    with pytest.raises(KeyError), tracing.tool_span(memory.tracer, "t") as tool:
        tool.set_error("tool said no", "ToolError")
        raise KeyError("then crashed")
    got = attrs(memory.exporter.get_finished_spans()[0])
    assert got["error.type"] == "KeyError"
