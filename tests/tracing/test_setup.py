"""The tracing pipeline (tracing.setup): batching with exact drop counts, scrubbing, exporters."""

from __future__ import annotations

import importlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, StatusCode, Tracer
from opentelemetry.util.types import Attributes
from tracing_testkit import Receiver

import tracing
from tracing import conventions as c
from tracing.setup import _attributes_unseen_at_start, add_legal_attributes
from tracing.traces import get_trace, list_traces


class SlowExporter(SpanExporter):
    def __init__(self, delay_s: float, gate: threading.Event | None = None) -> None:
        self.delay_s = delay_s
        self.gate = gate
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.gate is not None:
            self.gate.wait(timeout=30)
        time.sleep(self.delay_s)
        self.received += len(spans)
        return SpanExportResult.SUCCESS


class FailingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector down")


# The module (`tracing.setup` is also the name of its `setup` function).
PIPELINE = importlib.import_module("tracing.setup")


def span_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])


def test_burst_with_a_large_queue_drops_nothing(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    handle = tracing.setup(store=store, max_queue_size=65_536, max_export_batch_size=2_048)
    tracer = handle.tracer()
    for i in range(20_000):
        with tracer.start_as_current_span("burst") as span:
            span.set_attribute(c.EVALS_CASE_ID, f"case-{i}")
            span.set_attribute(c.GEN_AI_USAGE_INPUT_TOKENS, i)
    assert handle.force_flush()
    assert handle.dropped_spans == 0
    assert handle.exported_spans == 20_000
    assert span_count(store) == 20_000
    handle.shutdown()


def test_tiny_queue_counts_every_drop() -> None:
    gate = threading.Event()
    slow = SlowExporter(delay_s=0.001, gate=gate)  # blocks until the gate opens
    handle = tracing.setup(
        exporters=[slow], max_queue_size=16, max_export_batch_size=8, schedule_delay_ms=1
    )
    tracer = handle.tracer()
    created = 2_000
    for _ in range(created):
        with tracer.start_as_current_span("s"):
            pass
    # At most one batch is in the exporter and 16 spans wait in the queue: the rest dropped.
    assert handle.dropped_spans >= created - 16 - 8
    gate.set()
    assert handle.force_flush()
    (stats,) = handle.stats()
    assert stats.exporter == "SlowExporter"
    assert stats.queued == 0
    assert stats.exported + stats.dropped == created
    assert slow.received == stats.exported
    handle.shutdown()
    with tracer.start_as_current_span("after shutdown"):
        pass
    assert handle.exported_spans + handle.dropped_spans == created + 1


def test_exporter_failures_are_counted_not_raised() -> None:
    handle = tracing.setup(exporters=[FailingExporter()], schedule_delay_ms=1)
    with handle.tracer().start_as_current_span("s"):
        pass
    handle.force_flush()
    assert (handle.exported_spans, handle.failed_spans, handle.dropped_spans) == (0, 1, 0)
    handle.shutdown()


def test_shutdown_exports_what_is_queued(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    handle = tracing.setup(store=store, schedule_delay_ms=60_000)
    for _ in range(10):
        with handle.tracer().start_as_current_span("s"):
            pass
    handle.shutdown()
    handle.shutdown()  # idempotent
    assert span_count(store) == 10


def test_handle_is_not_global_unless_asked(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    with tracing.setup(exporters=[memory], schedule_delay_ms=1) as handle:
        with tracing.step_span(None, "global"):  # the global tracer: not this pipeline
            pass
        with tracing.step_span(handle.tracer(), "mine"):
            pass
        handle.force_flush()
        assert [span.name for span in memory.get_finished_spans()] == ["mine"]


def test_resource_names_service_and_project(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    with (
        tracing.setup(store=store, service_name="svc", project_name="proj") as handle,
        handle.tracer().start_as_current_span("s"),
    ):
        pass
    (summary,) = list_traces(store)
    (span,) = get_trace(store, summary["trace_id"])
    assert span["resource"]["service.name"] == "svc"
    assert span["resource"]["openinference.project.name"] == "proj"


def traced_case(tracer: Tracer, secret: str = "") -> None:
    """One case: LLM call, retrieval and tool, carrying content (and a secret if given)."""
    messages = [{"role": "user", "content": f"the prompt text {secret}"}]
    with tracing.step_span(tracer, "case", **{c.EVALS_RUN_ID: "r1"}):
        with tracing.llm_span(tracer, "openai/gpt-4o-mini", messages=messages) as llm:
            llm.set_response("the completion text", "stop", input_tokens=11, output_tokens=4)
        with tracing.retrieval_span(tracer, "the query text", 1) as retrieval:
            retrieval.set_documents([{"id": "doc-1", "content": "the document text", "score": 0.7}])
        with tracing.tool_span(tracer, "lookup", {"q": "the tool args"}, "call-1") as tool:
            tool.set_result("the tool result")


def test_capture_content_false_keeps_metadata_only(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    with tracing.setup(store=store, capture_content=False) as handle:
        traced_case(handle.tracer())
    (summary,) = list_traces(store)
    spans = {s["name"]: s for s in get_trace(store, summary["trace_id"])}
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("s.sqlite*"))
    for content in ("prompt", "completion", "query", "document", "tool args", "tool result"):
        assert f"the {content}".encode() not in stored
    llm = spans["chat gpt-4o-mini"]["attributes"]
    assert llm["gen_ai.usage.input_tokens"] == 11
    assert llm["llm.token_count.completion"] == 4
    assert llm["gen_ai.request.model"] == "gpt-4o-mini"
    assert not any(key.startswith(("llm.input_messages", "llm.output_messages")) for key in llm)
    assert not {"gen_ai.input.messages", "gen_ai.output.messages", "input.value"} & set(llm)
    retrieval = spans["retrieval"]["attributes"]
    assert retrieval["retrieval.documents.0.document.id"] == "doc-1"
    assert retrieval["retrieval.documents.0.document.score"] == 0.7
    assert "retrieval.documents.0.document.content" not in retrieval
    tool = spans["execute_tool lookup"]["attributes"]
    assert tool["gen_ai.tool.name"] == "lookup"
    assert tool["gen_ai.tool.call.id"] == "call-1"
    assert not {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "output.value"} & set(tool)
    assert summary["input_tokens"] == 11


def test_otlp_http_export_reaches_a_receiver(tmp_path: Path, otlp_receiver: Receiver) -> None:
    with tracing.setup(otlp_endpoint=otlp_receiver.url, project_name="evals-test") as handle:
        traced_case(handle.tracer())
    assert set(otlp_receiver.paths) == {"/v1/traces"}
    assert set(otlp_receiver.content_types) == {"application/x-protobuf"}
    spans = dict(otlp_receiver.spans())
    assert set(spans) == {"case", "chat gpt-4o-mini", "retrieval", "execute_tool lookup"}
    llm = spans["chat gpt-4o-mini"]
    assert llm["openinference.span.kind"] == "LLM"
    assert llm["gen_ai.operation.name"] == "chat"
    assert llm["gen_ai.usage.input_tokens"] == 11
    assert llm["gen_ai.response.finish_reasons"] == ["stop"]
    assert llm["output.value"] == "the completion text"
    assert otlp_receiver.resource_attributes()["openinference.project.name"] == "evals-test"


def test_otlp_endpoint_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: Receiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    with tracing.setup() as handle, handle.tracer().start_as_current_span("from env"):
        pass
    assert [name for name, _ in otlp_receiver.spans()] == ["from env"]


def test_canary_secret_never_leaves_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, otlp_receiver: Receiver
) -> None:
    canary = "canary-Zx81Qp0042-do-not-leak"  # caught because of its variable's name
    shaped = "sk-proj-CANARYabcdefghijklmnop0123"  # caught by its shape alone
    monkeypatch.setenv("CANARY_API_KEY", canary)
    store = tmp_path / "runs.sqlite"
    handle = tracing.setup(
        store=store,
        otlp_endpoint=otlp_receiver.url,
        resource_attributes={"deployment.note": f"built with {canary}"},
    )
    tracer = handle.tracer()
    traced_case(tracer, secret=f"{canary} {shaped}")
    with (
        pytest.raises(PermissionError),
        tracing.step_span(tracer, f"step {canary}", note=[canary, "ok"]) as step,
    ):
        step.span.add_event(f"auth {canary}", {"header": f"Bearer {canary}", "key": shaped})
        raise PermissionError(f"bad key {canary}")
    handle.shutdown()

    stored = b"".join(path.read_bytes() for path in tmp_path.glob("runs.sqlite*"))
    sent = b"".join(otlp_receiver.bodies)
    assert len(otlp_receiver.spans()) == 5
    assert span_count(store) == 5
    for leaked in (canary.encode(), shaped.encode(), b"Zx81Qp0042", b"CANARYabc"):
        assert leaked not in stored
        assert leaked not in sent
    assert b"[REDACTED]" in stored
    assert b"[REDACTED]" in sent
    assert b"the prompt text" in stored  # content itself is kept (capture_content=True)


def test_set_global_installs_the_provider_once() -> None:
    from opentelemetry import trace

    memory = InMemorySpanExporter()
    handle = tracing.setup(exporters=[memory], set_global=True, schedule_delay_ms=1)
    try:
        if trace.get_tracer_provider() is not handle.provider:
            pytest.skip("another test already set the process-wide provider")
        with tracing.step_span(None, "via global"):
            pass
        handle.force_flush()
        assert [s.name for s in memory.get_finished_spans()] == ["via global"]
    finally:
        handle.shutdown()


def test_spans_from_many_threads_are_all_counted(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    handle = tracing.setup(store=store, schedule_delay_ms=5)
    tracer = handle.tracer()

    def work() -> None:
        for _ in range(500):
            with tracer.start_as_current_span("t"):
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handle.shutdown()
    assert handle.exported_spans == span_count(store) == 2_000


def test_legal_attributes_are_stored_as_set_attributes_stores_them() -> None:
    tracer = TracerProvider().get_tracer("t")
    values: dict[str, Any] = {"s": "x", "i": 1, "f": 0.5, "b": True, "l": ["a", "b"], "again": 2}
    fast = tracer.start_span("fast", attributes={"again": 1, "first": "y"})
    slow = tracer.start_span("slow", attributes={"again": 1, "first": "y"})
    add_legal_attributes(fast, values)
    slow.set_attributes(values)
    assert list((fast.attributes or {}).items()) == list((slow.attributes or {}).items())
    assert dict(fast.attributes or {})["l"] == ("a", "b")
    fast.end()
    add_legal_attributes(fast, {"late": 1})  # an ended span takes nothing more
    assert "late" not in (fast.attributes or {})


@pytest.mark.parametrize(
    "limits",
    [SpanLimits(max_span_attributes=3), SpanLimits(max_span_attribute_length=4)],
    ids=["count", "length"],
)
def test_legal_attributes_respect_span_limits(limits: SpanLimits) -> None:
    tracer = TracerProvider(span_limits=limits).get_tracer("t")
    values = {"a": "long value", "b": "x", "c": 3, "d": ["four", "fives"]}
    fast, slow = tracer.start_span("fast"), tracer.start_span("slow")
    add_legal_attributes(fast, values)
    slow.set_attributes(values)
    assert dict(fast.attributes or {}) == dict(slow.attributes or {})
    assert fast.dropped_attributes == slow.dropped_attributes  # type: ignore[attr-defined]


def finished_span(name: str, **attributes: Any) -> ReadableSpan:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with tracing.step_span(provider.get_tracer("t"), name, **attributes) as step:
        step.set_output("the answer")
    (span,) = memory.get_finished_spans()
    return span


def test_a_clean_span_leaves_as_it_is_and_a_dirty_one_as_a_copy() -> None:
    scrubber = tracing.ScrubbingExporter(InMemorySpanExporter())
    clean = finished_span("clean", note="nothing to hide")
    assert scrubber.scrub(clean) is clean
    dirty = finished_span("dirty", note="key sk-proj-abcdefghijklmnopqrstuvwx")
    scrubbed = scrubber.scrub(dirty)
    assert scrubbed is not dirty
    assert dict(scrubbed.attributes or {})["note"] == "key [REDACTED]"
    no_content = tracing.ScrubbingExporter(InMemorySpanExporter(), capture_content=False)
    assert "output.value" not in (no_content.scrub(clean).attributes or {})


def test_queued_spans_keep_every_field_and_drop_counts() -> None:
    memory = InMemorySpanExporter()
    handle = tracing.setup(exporters=[memory], max_span_attributes=2, schedule_delay_ms=1)
    tracer = handle.tracer()
    with tracer.start_as_current_span("plain", attributes={"a": 1}) as plain:
        plain.set_status(StatusCode.OK)
    with tracer.start_as_current_span("full", attributes={"a": 1, "b": 2, "c": 3}):
        pass
    with tracer.start_as_current_span("event") as evented:
        evented.add_event("retry", {"attempt": 1})
    handle.shutdown()
    spans = {span.name: span for span in memory.get_finished_spans()}
    assert dict(spans["plain"].attributes or {}) == {"a": 1}
    assert spans["plain"].status.status_code is StatusCode.OK
    assert spans["plain"].instrumentation_scope.name == "evals-harness"  # type: ignore[union-attr]
    assert spans["plain"].end_time and spans["plain"].start_time
    assert spans["full"].dropped_attributes == 1
    assert [event.name for event in spans["event"].events] == ["retry"]


def one_case(tracer: Tracer) -> None:
    """What the runner and the provider layer trace for one case (every start attribute kind)."""
    messages = [
        {"role": "system", "content": "Answer."},
        {"role": "user", "content": "Capital of France?"},
    ]
    ids = {c.EVALS_RUN_ID: "r1", c.EVALS_CASE_ID: "c1", c.EVALS_EPOCH: 0}
    with tracing.step_span(tracer, "case c1", **ids) as case:
        params = {"temperature": 0, "max_tokens": 16, "tools": ["lookup"]}
        with tracing.llm_span(tracer, "openai/gpt-4o-mini", None, params, messages) as llm:
            llm.set_response("Paris", "stop", input_tokens=5, output_tokens=1, cache_hit=True)
        with tracing.evaluator_span(tracer, "equals", "equals") as score:
            score.set_score(1.0, True, None)
        case.set_input({"country": "France"})


def finished(tracer_provider: TracerProvider) -> list[tuple[str, list[tuple[str, Any]], int]]:
    memory = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    one_case(tracer_provider.get_tracer("t"))
    return [
        (span.name, list((span.attributes or {}).items()), span.dropped_attributes)
        for span in memory.get_finished_spans()
    ]


@pytest.mark.parametrize(
    "limits", [SpanLimits(), SpanLimits(max_span_attributes=5)], ids=["default", "count"]
)
def test_spans_start_with_the_same_attributes_with_or_without_the_shortcut(
    limits: SpanLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampler = ParentBased(TraceIdRatioBased(1.0))
    shortcut = finished(TracerProvider(sampler=sampler, span_limits=limits))
    assert _attributes_unseen_at_start(TracerProvider().get_tracer("t"))
    monkeypatch.setattr(PIPELINE, "_attributes_unseen_at_start", lambda tracer: False)
    plain = finished(TracerProvider(sampler=sampler, span_limits=limits))
    assert shortcut == plain
    assert [name for name, _, _ in plain] == ["chat gpt-4o-mini", "score equals", "case c1"]
    _, llm_attributes, dropped = plain[0]
    if limits.max_span_attributes == 5:
        assert len(llm_attributes) == 5 and dropped > 0
    else:
        assert ("gen_ai.request.model", "gpt-4o-mini") in llm_attributes and dropped == 0


class AttributeSampler(Sampler):
    """Samples on an attribute (so it must see them as the span starts)."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Attributes = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if not attributes or attributes.get(c.EVALS_CASE_ID) == "skip":
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "by case id"


class StartProcessor(SpanProcessor):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.seen.append(dict(span.attributes or {}))


def test_who_looks_at_attributes_as_a_span_starts_sees_them() -> None:
    sampled = TracerProvider(sampler=AttributeSampler())
    memory = InMemorySpanExporter()
    sampled.add_span_processor(SimpleSpanProcessor(memory))
    for case_id in ("keep", "skip"):
        with tracing.step_span(sampled.get_tracer("t"), "case", **{c.EVALS_CASE_ID: case_id}):
            pass
    (kept,) = memory.get_finished_spans()
    assert dict(kept.attributes or {})[c.EVALS_CASE_ID] == "keep"

    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    assert _attributes_unseen_at_start(tracer)
    processor = StartProcessor()
    provider.add_span_processor(processor)  # checked again: it reads them
    assert not _attributes_unseen_at_start(tracer)
    with tracing.step_span(tracer, "case", **{c.EVALS_CASE_ID: "c1"}):
        pass
    assert processor.seen == [{c.OPENINFERENCE_SPAN_KIND: c.KIND_CHAIN, c.EVALS_CASE_ID: "c1"}]


class KeepBatches(SpanExporter):
    def __init__(self) -> None:
        self.batches: list[Sequence[ReadableSpan]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(spans)
        return SpanExportResult.SUCCESS


def test_a_batch_leaves_as_it_is_unless_a_span_of_it_needs_scrubbing() -> None:
    inner = KeepBatches()
    scrubber = tracing.ScrubbingExporter(inner)
    clean = [finished_span("a", note="nothing to hide"), finished_span("b")]
    dirty = finished_span("dirty", note="key sk-proj-abcdefghijklmnopqrstuvwx")
    scrubber.export(clean)
    scrubber.export([*clean, dirty])
    assert inner.batches[0] is clean
    *kept, scrubbed = inner.batches[1]
    assert kept == clean and all(a is b for a, b in zip(kept, clean, strict=True))
    assert scrubbed is not dirty and dict(scrubbed.attributes or {})["note"] == "key [REDACTED]"
    # A secret only in an event, a link or a status message is found too.
    key = "sk-proj-abcdefghijklmnopqrstuvwx"
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("evented") as span:
        span.add_event(f"retry {key}", {"why": "flaky"})
    with tracer.start_as_current_span("event attribute") as span:
        span.add_event("retry", {"why": [f"key {key}"]})
    with tracer.start_as_current_span("linked", links=[Link(span.get_span_context(), {"k": key})]):
        pass
    with tracer.start_as_current_span("failed") as span:
        span.set_status(StatusCode.ERROR, f"bad key {key}")
    for secretive in memory.get_finished_spans():
        scrubber.export([*clean, secretive])
        *kept, scrubbed = inner.batches[-1]
        assert all(a is b for a, b in zip(kept, clean, strict=True)) and scrubbed is not secretive
        assert key not in repr(
            (scrubbed.name, scrubbed.status.description, dict(scrubbed.attributes or {}))
        ) + repr([(e.name, dict(e.attributes or {})) for e in scrubbed.events])
        assert key not in repr([dict(link.attributes or {}) for link in scrubbed.links])
    without_content = tracing.ScrubbingExporter(inner, capture_content=False)
    without_content.export(clean)
    assert inner.batches[-1] is not clean and "output.value" not in (
        inner.batches[-1][0].attributes or {}
    )


def test_an_otlp_endpoint_that_is_not_an_http_url_is_refused_up_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match=r"^otlp_endpoint: 'localhost:4318' is not an http"):
        tracing.setup(otlp_endpoint="localhost:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://collector:4317")
    with pytest.raises(ValueError, match=r"^OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "):
        tracing.setup()
    tracing.setup(otlp_endpoint="https://collector.example:4318/v1/traces").shutdown()
