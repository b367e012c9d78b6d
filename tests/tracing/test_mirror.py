"""LLM spans of our pipeline are stored in GenAI form once; their OpenInference twins are derived
on the way out (exporters) and on the way back (reading the store), and match what any other
tracer records at once."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, Tracer

import tracing
from tracing import conventions as c
from tracing.mirror import llm_mirror, mirror

PROMPT = "What is the capital of the Kingdom of Zorblax?"
REPLY = "Zorbton, on the Zorb river."
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": [{"type": "text", "text": PROMPT}, {"type": "image_url"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "atlas", "arguments": '{"country": "Zorblax"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "capital: Zorbton"},
]


def llm_call(tracer: Tracer, **attributes: Any) -> None:
    ids = {c.EVALS_RUN_ID: "r1", c.EVALS_CASE_ID: "c1"}
    model, params = "openai/gpt-4o-mini", {"temperature": 0}
    with (
        tracing.step_span(tracer, "case", **ids),
        tracing.llm_span(tracer, model, None, params, MESSAGES, attributes=attributes) as llm,
    ):
        llm.set_response(
            REPLY,
            "stop",
            input_tokens=40,
            output_tokens=7,
            cost=0.0001,
            tool_calls=[{"id": "call_2", "name": "atlas", "arguments": {"q": 1}}],
        )


def plain(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as JSON keeps them (the SDK holds sequences as tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attributes.items()}


def llm_attributes(spans: Any) -> dict[str, Any]:
    (span,) = [s for s in spans if s.name.startswith("chat ")]
    return plain(span.attributes)


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[tuple[tracing.TracingHandle, InMemorySpanExporter, Path]]:
    exported = InMemorySpanExporter()
    store = tmp_path / "evals.db"
    handle = tracing.setup(store=store, exporters=[exported])
    yield handle, exported, store
    handle.shutdown()


def read_back(store: Path) -> dict[str, Any]:
    (trace_id,) = {t["trace_id"] for t in tracing.list_traces(store)}
    (span,) = [s for s in tracing.get_trace(store, trace_id) if s["name"].startswith("chat ")]
    return span["attributes"]


def stored_json(store: Path) -> str:
    with sqlite3.connect(store) as conn:
        (row,) = conn.execute("SELECT attributes FROM spans WHERE name LIKE 'chat %'").fetchall()
    return str(row[0])


def test_the_prompt_and_reply_are_stored_once_and_read_back_as_any_tracer_records_them(
    ours: tuple[tracing.TracingHandle, InMemorySpanExporter, Path], tmp_path: Path
) -> None:
    handle, exported, store = ours
    llm_call(handle.tracer("t"))
    assert handle.force_flush()

    raw = stored_json(store)
    assert raw.count("Zorbton, on the Zorb river") == 1 and raw.count("Kingdom of Zorblax") == 1
    stored = set(json.loads(raw)) - {c.LLM_INVOCATION_PARAMETERS}  # recorded: no GenAI twin
    assert not any(key.startswith(("llm.", "input.", "output.")) for key in stored)

    # Any other tracer (a production app's own set-up) records both forms at once, and our
    # span store keeps such spans whole.
    sdk_exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(sdk_exported))
    sdk_store = tmp_path / "sdk.db"
    provider.add_span_processor(SimpleSpanProcessor(tracing.SQLiteSpanExporter(sdk_store)))
    llm_call(provider.get_tracer("t"))
    provider.shutdown()
    expected = llm_attributes(sdk_exported.get_finished_spans())

    assert llm_attributes(exported.get_finished_spans()) == expected
    assert read_back(store) == expected
    assert read_back(sdk_store) == expected
    twins = {k: v for k, v in expected.items() if k.startswith(("llm.", "input.", "output."))}
    assert twins == {
        "llm.model_name": "gpt-4o-mini",
        "llm.provider": "openai",
        "llm.invocation_parameters": '{"temperature":0}',  # recorded, not derived
        "llm.token_count.prompt": 40,
        "llm.token_count.completion": 7,
        "llm.token_count.total": 47,
        "llm.cost.total": 0.0001,
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "Answer briefly.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": PROMPT,
        "llm.input_messages.2.message.role": "assistant",
        "llm.input_messages.2.message.tool_calls.0.tool_call.id": "call_1",
        "llm.input_messages.2.message.tool_calls.0.tool_call.function.name": "atlas",
        # JSON arguments come back compact (the GenAI form holds them parsed)
        "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments": (
            '{"country":"Zorblax"}'
        ),
        "llm.input_messages.3.message.role": "tool",
        "llm.input_messages.3.message.content": "capital: Zorbton",
        "llm.input_messages.3.message.tool_call_id": "call_1",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": REPLY,
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_2",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "atlas",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"q":1}',
        "input.value": PROMPT,
        "input.mime_type": "text/plain",
        "output.value": REPLY,
        "output.mime_type": "text/plain",
    }


def test_what_a_span_set_itself_wins_over_its_twins(
    ours: tuple[tracing.TracingHandle, InMemorySpanExporter, Path],
) -> None:
    handle, exported, store = ours
    llm_call(handle.tracer("t"), **{c.INPUT_VALUE: "as the app put it", c.LLM_PROVIDER: "azure"})
    assert handle.force_flush()
    for attributes in (llm_attributes(exported.get_finished_spans()), read_back(store)):
        assert attributes[c.INPUT_VALUE] == "as the app put it"
        assert attributes[c.LLM_PROVIDER] == "azure"
        assert attributes[c.LLM_MODEL_NAME] == "gpt-4o-mini"


def test_without_content_capture_no_content_twin_appears(tmp_path: Path) -> None:
    exported = InMemorySpanExporter()
    store = tmp_path / "evals.db"
    with tracing.setup(store=store, exporters=[exported], capture_content=False) as handle:
        llm_call(handle.tracer("t"))
        assert handle.force_flush()
        for attributes in (llm_attributes(exported.get_finished_spans()), read_back(store)):
            assert not any(
                k.startswith(("llm.input_messages", "llm.output_messages")) for k in attributes
            )
            assert not {c.INPUT_VALUE, c.OUTPUT_VALUE} & set(attributes)
            assert attributes[c.LLM_TOKEN_COUNT_TOTAL] == 47  # metadata stays
            assert attributes[c.LLM_MODEL_NAME] == "gpt-4o-mini"


def test_a_secret_in_a_prompt_is_redacted_in_the_twins_too(tmp_path: Path) -> None:
    secret = "sk-canary-0123456789abcdef0123"
    tracing.refresh_secrets(environ={"CANARY_API_KEY": secret})
    try:
        exported = InMemorySpanExporter()
        store = tmp_path / "evals.db"
        with tracing.setup(store=store, exporters=[exported]) as handle:
            with tracing.llm_span(
                handle.tracer("t"), "openai/m", messages=[{"role": "user", "content": secret}]
            ):
                pass
            assert handle.force_flush()
            for attributes in (llm_attributes(exported.get_finished_spans()), read_back(store)):
                assert attributes[c.INPUT_VALUE] == tracing.REDACTED
                assert secret not in json.dumps(attributes)
    finally:
        tracing.refresh_secrets()


def test_twins_come_only_from_an_llm_spans_readable_genai_attributes() -> None:
    genai = {c.GEN_AI_REQUEST_MODEL: "m", c.GEN_AI_USAGE_INPUT_TOKENS: 3}
    assert mirror({**genai, c.OPENINFERENCE_SPAN_KIND: c.KIND_CHAIN}) == {}
    assert mirror(genai) == {}
    broken = {
        **genai,
        c.OPENINFERENCE_SPAN_KIND: c.KIND_LLM,
        c.GEN_AI_INPUT_MESSAGES: '[{"role": "user", "parts": [{"type": "te',  # cut short
        c.GEN_AI_OUTPUT_MESSAGES: '{"not": "a list"}',
    }
    assert mirror(broken) == {c.LLM_MODEL_NAME: "m", c.LLM_TOKEN_COUNT_PROMPT: 3}
    assert llm_mirror({c.GEN_AI_USAGE_INPUT_TOKENS: 3, c.GEN_AI_USAGE_OUTPUT_TOKENS: True}) == {
        c.LLM_TOKEN_COUNT_PROMPT: 3,
        c.LLM_TOKEN_COUNT_COMPLETION: True,
    }  # no total of a non-count


def test_under_a_value_length_limit_the_twins_are_cut_from_the_whole_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cut-short messages JSON cannot be read back: the twins are made before the cut.
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "40")
    exported = InMemorySpanExporter()
    store = tmp_path / "evals.db"
    sdk_exported = InMemorySpanExporter()
    provider = TracerProvider()  # reads the same limit
    provider.add_span_processor(SimpleSpanProcessor(sdk_exported))
    with tracing.setup(store=store, exporters=[exported]) as handle:
        llm_call(handle.tracer("t"))
        llm_call(provider.get_tracer("t"))
        assert handle.force_flush()
        ours = (llm_attributes(exported.get_finished_spans()), read_back(store))
    provider.shutdown()
    for attributes in (*ours, llm_attributes(sdk_exported.get_finished_spans())):
        assert len(attributes[c.GEN_AI_INPUT_MESSAGES]) == 40  # cut short
        assert attributes[c.INPUT_VALUE] == PROMPT[:40]
        assert attributes["llm.input_messages.1.message.content"] == PROMPT[:40]
        assert attributes[c.OUTPUT_VALUE] == REPLY
        assert attributes[c.LLM_TOKEN_COUNT_TOTAL] == 47


def test_twins_never_push_out_what_a_span_recorded(tmp_path: Path) -> None:
    # Past the attribute count limit the oldest attributes go: the twins take only the room
    # left, so a long conversation keeps its usage and cost (recorded last).
    chat = [{"role": "user", "content": f"message {i}"} for i in range(40)]
    exported = InMemorySpanExporter()
    sdk_exported = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=20))
    provider.add_span_processor(SimpleSpanProcessor(sdk_exported))
    with tracing.setup(exporters=[exported], max_span_attributes=20) as handle:
        for tracer in (handle.tracer("t"), provider.get_tracer("t")):
            with tracing.llm_span(tracer, "openai/m", messages=chat) as llm:
                llm.set_response("ok", "stop", input_tokens=400, output_tokens=1, cost=0.5)
        assert handle.force_flush()
        ours = llm_attributes(exported.get_finished_spans())
    provider.shutdown()
    for attributes in (ours, llm_attributes(sdk_exported.get_finished_spans())):
        assert len(attributes) == 20
        assert attributes[c.GEN_AI_USAGE_INPUT_TOKENS] == 400
        assert attributes[c.EVALS_COST_USD] == 0.5
        assert c.GEN_AI_OUTPUT_MESSAGES in attributes


class ApiOnlySpan(NonRecordingSpan):
    """A span of another OpenTelemetry implementation: it records, but has no `attributes`."""

    def __init__(self, attributes: Mapping[str, Any] | None) -> None:
        super().__init__(SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1)))
        self.recorded = dict(attributes or {})

    def is_recording(self) -> bool:
        return True

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.recorded.update(attributes)


class ApiOnlyTracer(Tracer):
    def __init__(self) -> None:
        self.spans: list[ApiOnlySpan] = []

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> ApiOnlySpan:
        self.spans.append(ApiOnlySpan(kwargs.get("attributes")))
        return self.spans[-1]

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def test_a_span_of_another_implementation_gets_its_twins() -> None:
    tracer = ApiOnlyTracer()
    with tracing.llm_span(tracer, "openai/gpt-4o-mini", messages=[MESSAGES[0]]) as llm:
        llm.set_response("Paris", "stop", input_tokens=3, output_tokens=1)
    (span,) = tracer.spans
    assert span.recorded[c.LLM_MODEL_NAME] == "gpt-4o-mini"
    assert span.recorded[c.LLM_TOKEN_COUNT_TOTAL] == 4
    assert span.recorded["llm.input_messages.0.message.content"] == "Answer briefly."
    assert span.recorded[c.OUTPUT_VALUE] == "Paris"
