"""`tracing.lean`: our pipeline's tracer records exactly what the SDK's tracer records.

Each scenario runs twice on the same `tracing.setup` pipeline: once with `handle.tracer()` (our
`LeanTracer`) and once with the provider's SDK tracer; the exported spans must be equal, field
by field (ids and times aside).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

import tracing
from tracing.lean import LeanSpan, LeanTracer
from tracing.setup import TracingHandle

Scenario = Callable[[Tracer], None]


def canonical(spans: tuple[ReadableSpan, ...]) -> list[dict[str, Any]]:
    """What a span records, with ids replaced by names and times by their order."""
    names = {span.context.span_id: span.name for span in spans if span.context is not None}
    out = []
    for span in spans:
        assert span.context is not None and span.start_time and span.end_time
        assert span.end_time >= span.start_time
        events = []
        for event in span.events:
            attributes = dict(event.attributes or {})
            stack = attributes.pop("exception.stacktrace", None)
            if stack is not None:  # frames differ between the two tracers' code, not the error
                assert attributes["exception.message"] in stack
            events.append((event.name, attributes, event.dropped_attributes))
        out.append(
            {
                "name": span.name,
                "kind": span.kind,
                "parent": None if span.parent is None else names.get(span.parent.span_id, "?"),
                "remote parent": span.parent is not None and span.parent.is_remote,
                "flags": int(span.context.trace_flags),
                "trace state": span.context.trace_state.to_header(),
                "attributes": dict(span.attributes or {}),
                "attribute order": list(span.attributes or {}),
                "dropped attributes": span.dropped_attributes,
                "events": events,
                "dropped events": span.dropped_events,
                "links": [
                    (
                        names.get(link.context.span_id, "?"),
                        dict(link.attributes or {}),
                        link.dropped_attributes,
                    )
                    for link in span.links
                ],
                "dropped links": span.dropped_links,
                "status": (span.status.status_code, span.status.description),
                "resource": dict(span.resource.attributes),
                "scope": span.instrumentation_scope and span.instrumentation_scope.name,
            }
        )
    return out


@pytest.fixture
def pipeline() -> Iterator[tuple[TracingHandle, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    handle = tracing.setup(exporters=[memory], service_name="lean-test", max_span_attributes=8)
    yield handle, memory
    handle.shutdown()


def run_both(
    pipeline: tuple[TracingHandle, InMemorySpanExporter], scenario: Scenario
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    handle, memory = pipeline
    results = []
    for tracer in (handle.tracer("t"), handle.provider.get_tracer("t")):
        memory.clear()
        scenario(tracer)
        assert handle.force_flush()
        results.append(canonical(memory.get_finished_spans()))
    lean, sdk = results
    return lean, sdk


def test_the_pipeline_tracer_is_ours_and_its_spans_reach_exporters_as_the_sdks(
    pipeline: tuple[TracingHandle, InMemorySpanExporter],
) -> None:
    handle, memory = pipeline
    tracer = handle.tracer("t")
    assert type(tracer) is LeanTracer
    assert handle.tracer("t") is tracer  # one per name
    with tracer.start_as_current_span("s") as span:
        assert type(span) is LeanSpan
    assert handle.force_flush()
    (exported,) = memory.get_finished_spans()
    assert type(exported) is ReadableSpan  # exporters other than our SQLite one: the SDK's type


def nested(tracer: Tracer) -> None:
    with tracer.start_as_current_span(
        "root", kind=SpanKind.SERVER, attributes={"a": 1, "list": [1, 2], "none": None}
    ) as root:
        root.set_attribute("b", "x")
        root.set_attributes({"a": 2, "mixed": [1, "x"], "c": True})  # mixed list: dropped
        root.update_name("root renamed")
        child = tracer.start_span(
            "child",
            kind=SpanKind.CLIENT,
            links=[trace.Link(root.get_span_context(), {"why": "see"})],
        )
        child.add_event("checkpoint", {"n": 3, "bad": {"no": "dicts"}})
        child.set_status(Status(StatusCode.OK))
        child.set_status(StatusCode.ERROR, "ignored: OK is final")
        child.end()
        child.end()  # a second end is ignored
        child.set_attribute("late", 1)  # after the end: ignored
        with tracer.start_as_current_span("grandchild") as grandchild:
            grandchild.set_attributes({"first": 1, "second": 2})
            grandchild.set_attribute("first", 3)  # set again: moves to the end
            grandchild.set_status(StatusCode.UNSET)
            grandchild.set_status(Status(StatusCode.ERROR, "kept"), "description ignored")
        for i in range(10):  # past the limit of 8: the oldest go
            root.set_attribute(f"k{i}", i)


def test_nested_spans_attributes_events_links_and_status_match_the_sdk(
    pipeline: tuple[TracingHandle, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        lean, sdk = run_both(pipeline, nested)
    assert lean == sdk
    root = lean[-1]
    assert root["name"] == "root renamed" and root["dropped attributes"] > 0
    assert list(root["attributes"]) == [f"k{i}" for i in range(2, 10)]
    assert lean[0]["links"] and lean[0]["status"] == (StatusCode.OK, None)
    assert lean[1]["status"] == (StatusCode.ERROR, "kept")
    assert lean[1]["attribute order"] == ["second", "first"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "tracing.lean"]
    assert any("ended span" in w for w in warnings) and any("ignored" in w for w in warnings)


def raising(tracer: Tracer) -> None:
    with pytest.raises(ValueError), tracer.start_as_current_span("current"):
        raise ValueError("boom")
    with pytest.raises(KeyError), tracer.start_span("plain") as span:
        span.set_attribute("x", 1)
        raise KeyError("missing")
    with (
        pytest.raises(RuntimeError),
        tracer.start_as_current_span(
            "quiet", record_exception=False, set_status_on_exception=False
        ),
    ):
        raise RuntimeError("not recorded")
    span = tracer.start_span("recorded by hand")
    span.record_exception(OSError("disk"), {"extra": "yes"})
    span.end()


def test_exceptions_are_recorded_as_the_sdk_records_them(
    pipeline: tuple[TracingHandle, InMemorySpanExporter],
) -> None:
    lean, sdk = run_both(pipeline, raising)
    assert lean == sdk
    current, plain, quiet, by_hand = lean
    assert current["status"] == (StatusCode.ERROR, "ValueError: boom")
    assert current["events"][0][1]["exception.type"] == "ValueError"
    assert plain["events"][0][1]["exception.escaped"] == "True"  # `with tracer.start_span()`
    assert quiet["events"] == [] and quiet["status"] == (StatusCode.UNSET, None)
    assert by_hand["events"][0][1]["extra"] == "yes"


def helpers(tracer: Tracer) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with tracing.step_span(tracer, "case", **{"evals.case.id": "c1"}) as step:
        with tracing.llm_span(
            tracer, "openai/m", params={"temperature": 0}, messages=messages
        ) as llm:
            llm.set_response(text="hello", finish_reason="stop", input_tokens=3, output_tokens=1)
        with pytest.raises(ZeroDivisionError), tracing.evaluator_span(tracer, "s", "equals"):
            raise ZeroDivisionError("x")
        step.set_attributes({"tags": ["a", "b"], "obj": {"k": 1}})


def test_the_helpers_spans_match_the_sdk(
    pipeline: tuple[TracingHandle, InMemorySpanExporter],
) -> None:
    lean, sdk = run_both(pipeline, helpers)
    assert lean == sdk
    assert lean[-1]["attributes"]["tags"] == ("a", "b")


def test_limits_from_the_environment_apply_on_every_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "2")
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "1")
    memory = InMemorySpanExporter()
    with tracing.setup(exporters=[memory]) as handle:

        def limited(tracer: Tracer) -> None:
            with tracing.step_span(tracer, "legal path") as step:
                step.set_attribute("long", "abcdefgh")
            span = tracer.start_span("api path", attributes={"long": "abcdefgh", "seq": ["abcdef"]})
            for i in range(3):
                span.add_event(f"e{i}")
                span.add_link(SpanContext(1, i + 1, is_remote=False))
            span.end()

        lean, sdk = run_both((handle, memory), limited)
    assert lean == sdk
    legal, api = lean
    assert legal["attributes"]["long"] == "abcd"
    assert api["attributes"] == {"long": "abcd", "seq": ("abcd",)}
    assert [e[0] for e in api["events"]] == ["e1", "e2"] and api["dropped events"] == 1
    assert len(api["links"]) == 1


def test_sampling_follows_the_parent_and_the_configured_sampler(
    pipeline: tuple[TracingHandle, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    def under_remote_parents(tracer: Tracer) -> None:
        for sampled in (True, False):
            flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
            parent = NonRecordingSpan(SpanContext(7, 9, is_remote=True, trace_flags=flags))
            context = trace.set_span_in_context(parent)
            span = tracer.start_span(f"sampled={sampled}", context=context)
            assert span.is_recording() is sampled
            assert span.get_span_context().trace_id == 7
            span.end()

    lean, sdk = run_both(pipeline, under_remote_parents)
    assert lean == sdk
    assert [s["name"] for s in lean] == ["sampled=True"] and lean[0]["remote parent"]

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")  # asked span by span
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1.0")
    memory = InMemorySpanExporter()
    with tracing.setup(exporters=[memory]) as ratio:
        lean, sdk = run_both((ratio, memory), helpers)
    assert lean == sdk and len(lean) == 3

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    memory = InMemorySpanExporter()
    with tracing.setup(exporters=[memory]) as handle:
        tracer = handle.tracer()
        assert type(tracer) is LeanTracer
        with tracing.step_span(tracer, "dropped") as step:
            assert not step.span.is_recording()
        assert handle.force_flush()
    assert memory.get_finished_spans() == ()


def test_a_processor_added_later_or_a_disabled_sdk_gets_the_sdks_tracer(
    pipeline: tuple[TracingHandle, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    handle, memory = pipeline
    earlier = handle.tracer("t")
    assert type(earlier) is LeanTracer
    extra = InMemorySpanExporter()
    handle.provider.add_span_processor(SimpleSpanProcessor(extra))
    tracer = handle.tracer("t")
    assert type(tracer) is not LeanTracer
    with tracing.step_span(tracer, "seen by every processor"):
        pass
    with tracing.step_span(earlier, "from a tracer taken before"), earlier.start_span("api"):
        pass
    assert handle.force_flush()
    names = ["seen by every processor", "api", "from a tracer taken before"]
    assert [s.name for s in extra.get_finished_spans()] == names
    assert [s.name for s in memory.get_finished_spans()] == names

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with tracing.setup() as disabled:
        assert isinstance(disabled.tracer(), trace.NoOpTracer)


def test_a_decorated_coroutine_is_spanned_while_it_runs(
    pipeline: tuple[TracingHandle, InMemorySpanExporter],
) -> None:
    handle, memory = pipeline
    tracer = handle.tracer("t")

    @tracer.start_as_current_span("work")
    async def work() -> int:
        await asyncio.sleep(0)
        return trace.get_current_span().get_span_context().span_id

    span_id = asyncio.run(work())
    assert handle.force_flush()
    (span,) = memory.get_finished_spans()
    assert span.context is not None and span.context.span_id == span_id


def test_a_span_ended_from_another_thread_is_exported_once(
    pipeline: tuple[TracingHandle, InMemorySpanExporter],
) -> None:
    handle, memory = pipeline
    span = handle.tracer("t").start_span("shared")
    threads = [threading.Thread(target=span.end) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert handle.force_flush()
    assert len(memory.get_finished_spans()) == 1


class TaggingSampler(Sampler):
    """Samples everything and adds an attribute, as a custom sampler may."""

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        tagged = {**(attributes or {}), "sampled.by": "tagger"}
        return SamplingResult(Decision.RECORD_AND_SAMPLE, tagged)

    def get_description(self) -> str:
        return "TaggingSampler"


def test_a_samplers_attributes_are_the_ones_a_span_starts_with() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=TaggingSampler())
    processor = tracing.CountingBatchSpanProcessor(tracing.ScrubbingExporter(memory))
    provider.add_span_processor(processor)
    handle = TracingHandle(provider, [processor], None, SpanLimits())
    assert type(handle.tracer("t")) is LeanTracer
    try:
        lean, sdk = run_both((handle, memory), helpers)
    finally:
        handle.shutdown()
    assert lean == sdk
    assert all(span["attributes"]["sampled.by"] == "tagger" for span in lean)


def odd_inputs(tracer: Tracer) -> None:
    span = tracer.start_span("odd", attributes={"": 1, "ok": 1}, links=[None])  # type: ignore[list-item]
    span.set_attribute("", 2)
    span.set_attributes({"": 3, "a": 1, "b": 2})  # past the limit of 2: the oldest go
    span.set_attributes({"c": 1, "a": 2})  # "a" was dropped: set again, it drops another
    span.set_status("ERROR")  # type: ignore[arg-type]  # not a status: ignored
    span.end()
    with tracing.step_span(tracer, "helper") as step:
        step.set_attribute("", "empty key")


def test_odd_inputs_are_dropped_and_counted_as_the_sdk_does() -> None:
    memory = InMemorySpanExporter()
    with tracing.setup(exporters=[memory], max_span_attributes=2) as handle:
        lean, sdk = run_both((handle, memory), odd_inputs)
    assert lean == sdk
    odd, helper = lean
    assert odd["attributes"] == {"c": 1, "a": 2} and odd["dropped attributes"] == 6
    assert odd["status"] == (StatusCode.UNSET, None) and odd["links"] == []
    assert "" not in helper["attributes"] and helper["dropped attributes"] == 1


def test_a_bad_status_does_not_cost_the_batch_its_place_in_the_store(tmp_path: Path) -> None:
    with tracing.setup(store=tmp_path / "spans.sqlite") as handle:
        tracer = handle.tracer()
        bad = tracer.start_span("bad status")
        bad.set_status("ERROR")  # type: ignore[arg-type]
        bad.end()
        tracer.start_span("good").end()
        assert handle.force_flush()
        assert handle.counts() == {"exported": 2, "dropped": 0, "failed": 0}


def test_an_ended_spans_attributes_cannot_be_changed(
    pipeline: tuple[TracingHandle, InMemorySpanExporter],
) -> None:
    handle, _ = pipeline
    span = handle.tracer("t").start_span("s", attributes={"a": 1})
    with pytest.raises(TypeError):
        span.attributes["late"] = 1  # type: ignore[attr-defined,index]
    span.end()
    assert dict(span.attributes) == {"a": 1}  # type: ignore[attr-defined]
