"""Configure OpenTelemetry tracing for a process: provider, batching, SQLite and OTLP exporters.

With `tracing.lean` (the pipeline's own tracer), the only module that touches the OpenTelemetry
SDK. `setup()` builds a `TracerProvider` and,
per exporter, a `CountingBatchSpanProcessor`: a bounded queue drained by one worker thread that
counts every span it drops when the queue is full (the SDK's batch processor drops silently in
bursts). Each exporter is wrapped in a `ScrubbingExporter`, so secrets are redacted, and content
removed when `capture_content=False`, before spans reach SQLite or the network.

`setup()` does not install a global provider unless asked (`set_global=True`): tests and
libraries can build as many independent pipelines as they like.

Shortcuts past SDK internals keep tracing cheap, each checked and with the public path as
fallback: `add_legal_attributes` stores attributes the helpers already validated without the
SDK validating them again (`start_span` gives a new span its attributes that way when nothing
looks at them as the span starts), and queued spans are compacted (`_compact`) so the garbage
collector has fewer objects to traverse.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, Tracer

from tracing.conventions import OPENINFERENCE_PROJECT_NAME, SERVICE_NAME
from tracing.lean import LeanSpan, LeanTracer, readable
from tracing.redact import refresh_secrets
from tracing.scrub import may_hold_secret, scrub_attributes, scrub_parts
from tracing.spanstore import SpanRows, SpanStore

_logger = logging.getLogger(__name__)

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


_PLAIN_SDK_SPAN_TYPES: dict[type, bool] = {}


def _is_plain_sdk_span(span_type: type) -> bool:
    """An SDK span class whose attribute handling is the SDK's own (not overridden)."""
    plain = _PLAIN_SDK_SPAN_TYPES.get(span_type)
    if plain is None:
        plain = _PLAIN_SDK_SPAN_TYPES[span_type] = (
            issubclass(span_type, SdkSpan)
            and span_type.set_attributes is SdkSpan.set_attributes
            and span_type.set_attribute is SdkSpan.set_attribute
        )
    return plain


_STR = frozenset({str})


def add_legal_attributes(span: trace.Span, attributes: Mapping[str, Any]) -> None:
    """Add attributes already made OTel-legal (`tracing.handles.legal_attributes`: str keys,
    scalars and lists of one scalar type) to `span`, exactly as `span.set_attributes` would.

    On the SDK's own spans this skips the SDK validating every value again (about 1 µs an
    attribute; a traced eval case sets some 60) when no limit is in play: no value length
    limit and room under the attribute count limit. Any other span, and one that has ended,
    goes through `set_attributes`. A `LeanSpan` (our own tracer's) takes them as they are."""
    if type(span) is LeanSpan:
        span.add_legal(attributes)
        return
    if _is_plain_sdk_span(type(span)):
        sdk_span: Any = span
        bounded = sdk_span._attributes
        if (
            type(bounded) is BoundedAttributes
            and bounded.max_value_len is None
            and (bounded.maxlen is None or len(bounded._dict) + len(attributes) <= bounded.maxlen)
            and set(map(type, attributes)) <= _STR  # checked at C speed, as is the next
            and "" not in attributes
        ):
            values = attributes
            if list in set(map(type, attributes.values())):  # the SDK keeps sequences as tuples
                values = {k: tuple(v) if type(v) is list else v for k, v in attributes.items()}
            with sdk_span._lock:
                if sdk_span._end_time is None:
                    with bounded._lock:
                        stored = bounded._dict
                        if stored:  # a key set again moves to the end, as in the SDK
                            for key in values.keys() & stored.keys():
                                del stored[key]
                        stored.update(values)
                    return
    span.set_attributes(attributes)


def attribute_room(span: trace.Span) -> int | None:
    """How many more attributes `span` can take before its count limit drops the oldest
    (None when that is not known, or there is no limit)."""
    if type(span) is LeanSpan:
        return span.attribute_room()
    if isinstance(span, SdkSpan):
        bounded: Any = getattr(span, "_attributes", None)
        if type(bounded) is BoundedAttributes and bounded.maxlen is not None:
            return max(bounded.maxlen - len(bounded), 0)
    return None


def start_span(
    tracer: Tracer, name: str, kind: SpanKind, attributes: Mapping[str, Any]
) -> trace.Span:
    """`tracer.start_span(name, kind=kind, attributes=attributes)`, not recording exceptions
    (the caller does), for attributes already made legal (as `add_legal_attributes` takes).

    When no one looks at a span's attributes as it starts (an SDK tracer whose sampler and
    span processors are the SDK's own, or ours, which ignore them), the span starts without
    them and gets them through `add_legal_attributes` at once: the same attributes, in the
    same order, without the SDK validating each value again. Our own tracer (`LeanTracer`)
    starts its span with them, unvalidated."""
    if type(tracer) is LeanTracer:
        return tracer.start_legal_span(name, kind, attributes)
    if attributes and _attributes_unseen_at_start(tracer):
        span = tracer.start_span(
            name, kind=kind, record_exception=False, set_status_on_exception=False
        )
        add_legal_attributes(span, attributes)
        return span
    return tracer.start_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )


# SDK tracer -> (its span processors when checked, whether they and its sampler ignore a
# starting span's attributes). Processors can be added to a provider later: checked again then.
_UNSEEN_AT_START: weakref.WeakKeyDictionary[Any, tuple[object, bool]] = weakref.WeakKeyDictionary()
# `on_start` implementations that do nothing with the span.
_BLIND_ON_START = frozenset(
    {
        SpanProcessor.on_start,
        SimpleSpanProcessor.on_start,
        BatchSpanProcessor.on_start,
    }
)


def _attributes_unseen_at_start(tracer: Tracer) -> bool:
    if type(tracer) is not SdkTracer:
        return False
    processor: Any = tracer.span_processor
    processors = getattr(processor, "_span_processors", None)
    known = _UNSEEN_AT_START.get(tracer)
    if known is not None and known[0] is processors:
        return known[1]
    unseen = (
        type(processor) is SynchronousMultiSpanProcessor
        and isinstance(processors, tuple)
        and all(
            type(each).on_start in _BLIND_ON_START
            or type(each).on_start is CountingBatchSpanProcessor.on_start
            for each in processors
        )
        and _sampler_ignores_attributes(tracer.sampler)
    )
    _UNSEEN_AT_START[tracer] = (processors, unseen)
    return unseen


def _sampler_ignores_attributes(sampler: Any) -> bool:
    """The SDK's own samplers decide on trace ids and parents alone, and pass the attributes
    through unchanged when they sample."""
    should_sample = type(sampler).should_sample
    if should_sample in (StaticSampler.should_sample, TraceIdRatioBased.should_sample):
        return True
    if should_sample is not ParentBased.should_sample:
        return False
    delegates = [
        getattr(sampler, name, None)
        for name in (
            "_root",
            "_remote_parent_sampled",
            "_remote_parent_not_sampled",
            "_local_parent_sampled",
            "_local_parent_not_sampled",
        )
    ]
    return all(
        delegate is not None and _sampler_ignores_attributes(delegate) for delegate in delegates
    )


class ScrubbingExporter(SpanExporter):
    """Redact secrets (and drop content unless `capture_content`) before the wrapped exporter."""

    def __init__(self, inner: SpanExporter, capture_content: bool = True) -> None:
        self.inner = inner
        self.capture_content = capture_content
        self._resources: dict[int, tuple[Resource, Resource]] = {}
        # Our SQLite exporter stores our own tracer's spans (`LeanSpan`) as they are; any
        # other exporter gets the SDK's `ReadableSpan`.
        self._needs_readable = not isinstance(inner, SQLiteSpanExporter)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # Our SQLite store keeps our spans as recorded (GenAI only; `tracing.traces` adds the
        # OpenInference twins as it reads them); any other exporter gets them whole, before
        # scrubbing, so that the twins are scrubbed as well.
        if self._needs_readable and any(type(span) is LeanSpan for span in spans):
            spans = [readable(span) for span in spans]
        if not self._all_clean(spans):
            spans = [self.scrub(span) for span in spans]
        return self.inner.export(spans)

    def _all_clean(self, spans: Sequence[ReadableSpan]) -> bool:
        """True when every span may leave as it is (what `scrub` would find span by span, the
        common case), checked for secrets in one pass over the whole batch."""
        if not self.capture_content:
            return False
        attribute_maps: list[Mapping[str, Any] | None] = []
        texts: list[str | None] = []
        for span in spans:
            if self._scrub_resource(span.resource) is not span.resource:
                return False
            attribute_maps.append(span.attributes)
            texts.append(span.name)
            texts.append(span.status.description)
            for event in span.events:
                attribute_maps.append(event.attributes)
                texts.append(event.name)
            attribute_maps.extend(link.attributes for link in span.links)
        return not may_hold_secret(attribute_maps, texts)

    def scrub(self, span: ReadableSpan) -> ReadableSpan:
        """`span` if it is safe to leave the process as it is (most spans), else a safe copy."""
        events, links, status = span.events, span.links, span.status
        attribute_maps = [
            span.attributes,
            *(e.attributes for e in events),
            *(k.attributes for k in links),
        ]
        texts = [span.name, status.description, *(e.name for e in events)]
        resource = self._scrub_resource(span.resource)
        if (
            self.capture_content
            and resource is span.resource
            and not may_hold_secret(attribute_maps, texts)
        ):
            return span  # nothing to drop or redact: no copy
        maps, texts = scrub_parts(attribute_maps, texts, self.capture_content)
        name, description, *event_names = texts
        n_events = len(events)
        return ReadableSpan(
            name=name or "",
            context=span.context,
            parent=span.parent,
            resource=resource,
            attributes=maps[0],
            events=[
                Event(event_name or "", attributes, event.timestamp)
                for event, event_name, attributes in zip(
                    events, event_names, maps[1 : 1 + n_events], strict=True
                )
            ],
            links=[
                Link(link.context, attributes)
                for link, attributes in zip(links, maps[1 + n_events :], strict=True)
            ],
            kind=span.kind,
            status=status
            if description == status.description
            else Status(status.status_code, description),
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _scrub_resource(self, resource: Resource) -> Resource:
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1]
        attributes = scrub_attributes(resource.attributes)
        clean = (
            resource
            if attributes == dict(resource.attributes)
            else Resource(attributes, resource.schema_url)
        )
        self._resources[id(resource)] = (resource, clean)
        return clean

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class SQLiteSpanExporter(SpanExporter):
    """OTel `SpanExporter` writing into a `SpanStore` (the `spans` table of a SQLite file)."""

    def __init__(self, store: SpanStore | str | Path) -> None:
        self.store = store if isinstance(store, SpanStore) else SpanStore(store)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.store.write(spans)
        except Exception:
            _logger.exception("could not write %d spans to %s", len(spans), self.store.path)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.store.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass(frozen=True)
class ExportStats:
    """Counts of one exporter's pipeline: every ended span is exactly one of these, or queued."""

    exporter: str
    exported: int
    dropped: int  # the queue was full (or the pipeline already shut down)
    failed: int  # the exporter returned FAILURE or raised
    queued: int


# The fields of the SDK's ReadableSpan that `_compact` copies; with any other (a later SDK
# version), spans are queued as they are.
_READABLE_SPAN_FIELDS = frozenset(
    {
        "_name",
        "_context",
        "_kind",
        "_instrumentation_info",
        "_instrumentation_scope",
        "_parent",
        "_start_time",
        "_end_time",
        "_attributes",
        "_events",
        "_links",
        "_resource",
        "_status",
    }
)
_compactable: bool | None = None  # whether this SDK's ReadableSpan has exactly those fields


def _compact(span: ReadableSpan) -> ReadableSpan:
    """`span` as it waits in a queue: the same data in fewer objects the garbage collector
    tracks. The SDK's finished span holds eleven (an attribute container with its lock, an
    event list and a link list with a deque and a lock each, ...). Queued spans live long
    enough to reach the oldest generation and to trigger full collections, which traverse
    them again: measured, that cost about as much as creating the spans. Without events,
    links or dropped attributes, the copy keeps a plain attribute dict and no lists: three
    tracked objects."""
    global _compactable
    if type(span) is not ReadableSpan:
        return span
    if _compactable is None:
        _compactable = set(vars(span)) == _READABLE_SPAN_FIELDS
    if not _compactable:
        return span
    fields: Any = span
    attributes = fields._attributes
    if (
        fields._events
        or fields._links
        or type(attributes) is not BoundedAttributes
        or attributes.dropped
    ):
        return span
    return ReadableSpan(
        name=fields._name,
        context=fields._context,
        parent=fields._parent,
        resource=fields._resource,
        attributes=attributes._dict,  # immutable once the span has ended
        kind=fields._kind,
        instrumentation_info=fields._instrumentation_info,
        status=fields._status,
        start_time=fields._start_time,
        end_time=fields._end_time,
        instrumentation_scope=fields._instrumentation_scope,
    )


class CountingBatchSpanProcessor(SpanProcessor):
    """Batch ended spans to an exporter from one worker thread, counting each dropped span.

    A span that finds the queue full is dropped and counted, never blocked on: tracing must not
    slow the traced code. Counting is exact: `exported + dropped + failed + queued` equals the
    number of spans ended. Not fork-safe: call `setup()` in the process that traces.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        max_queue_size: int = 65_536,
        max_export_batch_size: int = 2_048,
        schedule_delay_ms: int = 200,
        name: str | None = None,
    ) -> None:
        if max_queue_size < 1 or max_export_batch_size < 1 or schedule_delay_ms < 0:
            raise ValueError("queue size and batch size must be >= 1, delay >= 0")
        self.exporter = exporter
        self.name = name or type(exporter).__name__
        self._max_queue = max_queue_size
        self._batch_size = min(max_export_batch_size, max_queue_size)
        self._delay_s = schedule_delay_ms / 1000
        self._queue: deque[ReadableSpan] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._in_flight = 0
        self._flushers = 0
        self._shutdown = False
        self.exported = 0
        self.dropped = 0
        self.failed = 0
        self._worker = threading.Thread(target=self._run, name="tracing-export", daemon=True)
        self._worker.start()

    def on_start(self, span: SdkSpan, parent_context: otel_context.Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        span = _compact(span)
        with self._cond:
            if self._shutdown or len(self._queue) >= self._max_queue:
                self.dropped += 1
                dropped = self.dropped
            else:
                self._queue.append(span)
                size = len(self._queue)
                if size == 1 or size == self._batch_size:
                    self._cond.notify_all()  # flushers wait on it too: wake the worker surely
                return
        if dropped == 1 or dropped % 10_000 == 0:
            _logger.warning("span queue full: %d spans dropped so far", dropped)

    def stats(self) -> ExportStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            return ExportStats(
                exporter=self.name,
                exported=self.exported,
                dropped=self.dropped,
                failed=self.failed,
                queued=len(self._queue) + self._in_flight,
            )

    def _urgent(self) -> bool:
        return self._shutdown or self._flushers > 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._urgent():
                    self._cond.wait()
                if len(self._queue) < self._batch_size and not self._urgent():
                    self._cond.wait(self._delay_s)  # let a batch build up, unless it fills
                count = min(len(self._queue), self._batch_size)
                batch = [self._queue.popleft() for _ in range(count)]
                self._in_flight = count
                if not batch:
                    self._cond.notify_all()  # idle: wake flushers
                    if self._shutdown:
                        return
                    self._cond.wait(self._delay_s)
                    continue
            self._export(batch)

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            ok = self.exporter.export(batch) is SpanExportResult.SUCCESS
        except Exception:
            _logger.exception("span exporter %s raised", type(self.exporter).__name__)
            ok = False
        with self._cond:
            if ok:
                self.exported += len(batch)
            else:
                self.failed += len(batch)
            self._in_flight = 0
            self._cond.notify_all()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything queued now; False if that took longer than the timeout."""
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            try:
                done = self._cond.wait_for(
                    lambda: not self._queue and self._in_flight == 0, timeout_millis / 1000
                )
            finally:
                self._flushers -= 1
        return done and self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Export what is queued, stop the worker, shut the exporter down (idempotent)."""
        with self._cond:
            if self._shutdown:
                return
            self._shutdown = True
            self._cond.notify_all()
        self._worker.join()
        self.exporter.shutdown()


class TracingHandle:
    """A configured tracing pipeline: get tracers from it, flush it, read its counters."""

    def __init__(
        self,
        provider: TracerProvider,
        processors: Sequence[CountingBatchSpanProcessor],
        store_path: Path | None,
        span_limits: SpanLimits | None = None,
    ) -> None:
        self.provider = provider
        self.processors = tuple(processors)
        self.store_path = store_path
        self.span_limits = span_limits
        self._lean_tracers: dict[tuple[str, str | None], LeanTracer] = {}

    def tracer(self, name: str = "evals-harness", version: str | None = None) -> Tracer:
        """A tracer of this pipeline (not the global one).

        Our own `LeanTracer` (`tracing.lean`) while the provider's span processors are the ones
        `setup()` gave it and its span limits are known; otherwise (a processor added to
        `provider` since, say) the SDK's tracer, so every processor sees every span. A
        `LeanTracer` also starts its spans on the SDK's tracer once a processor is added."""
        sdk_tracer = self.provider.get_tracer(name, version)
        active: Any = getattr(self.provider, "_active_span_processor", None)
        if (
            type(sdk_tracer) is not SdkTracer  # e.g. OTEL_SDK_DISABLED: a no-op tracer
            or self.span_limits is None
            or getattr(active, "_span_processors", None) != self.processors
        ):
            return sdk_tracer
        lean = self._lean_tracers.get((name, version))
        if lean is None or lean.resource is not sdk_tracer.resource:
            lean = self._lean_tracers[(name, version)] = LeanTracer(
                sdk_tracer.sampler,
                sdk_tracer.id_generator,
                sdk_tracer.resource,
                self.span_limits,
                InstrumentationScope(name or "", version or ""),
                self.processors,
                fallback=sdk_tracer,
                watched=active,
            )
        return lean

    def hand_span_rows_to(self, sink: Callable[[SpanRows], None] | None) -> bool:
        """Give the rows of the spans bound for this pipeline's SQLite span store to `sink`
        instead of writing them (None: the span store writes them again), for a process that
        writes the same file anyway to write them in its own transactions: one writer. See
        `SpanStore.hand_rows_to`. False when the pipeline has no span store."""
        stores = [
            processor.exporter.inner.store
            for processor in self.processors
            if isinstance(processor.exporter, ScrubbingExporter)
            and isinstance(processor.exporter.inner, SQLiteSpanExporter)
        ]
        for store in stores:
            store.hand_rows_to(sink)
        return bool(stores)

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        """Export every span ended so far; False on timeout."""
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Flush and stop every exporter; spans ended afterwards are counted as dropped. The
        span store writes its rows itself again (`hand_span_rows_to`) for the flush."""
        self.hand_span_rows_to(None)
        self.provider.shutdown()

    def stats(self) -> list[ExportStats]:
        """Per-exporter counters."""
        return [processor.stats() for processor in self.processors]

    def counts(self) -> dict[str, int]:
        """`exported`, `dropped` and `failed` spans, summed over exporters (for
        `tracing.counts.save_counts`)."""
        stats = self.stats()
        return {
            "exported": sum(s.exported for s in stats),
            "dropped": sum(s.dropped for s in stats),
            "failed": sum(s.failed for s in stats),
        }

    @property
    def dropped_spans(self) -> int:
        """Spans dropped because a queue was full, summed over exporters."""
        return self.counts()["dropped"]

    @property
    def exported_spans(self) -> int:
        """Spans exported successfully, summed over exporters."""
        return self.counts()["exported"]

    @property
    def failed_spans(self) -> int:
        """Spans lost because an exporter failed, summed over exporters."""
        return self.counts()["failed"]

    def __enter__(self) -> TracingHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def check_otlp_endpoint(endpoint: str | None = None, name: str = "otlp_endpoint") -> None:
    """Raise ValueError, naming where it came from (`name` for `endpoint`, else the environment
    variable), when the OTLP endpoint `setup(otlp_endpoint=endpoint)` would export to is not
    an http(s) URL: checked up front, as the exporter would only log each failed export."""
    source, value = name, endpoint
    if not value:
        source = OTLP_TRACES_ENDPOINT_ENV
        value = os.environ.get(source)
    if not value:
        source = OTLP_ENDPOINT_ENV
        value = os.environ.get(source)
    if not value:
        return
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{source}: {value!r} is not an http:// or https:// URL (such as http://localhost:4318)"
        )


def otlp_traces_url(endpoint: str) -> str:
    """`http://host:4318` -> `http://host:4318/v1/traces`; a full traces URL passes as is."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def _otlp_exporter(endpoint: str | None, headers: Mapping[str, str] | None) -> SpanExporter:
    # Imported on demand: the OTLP exporter pulls in protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = otlp_traces_url(endpoint) if endpoint else None  # None: the exporter reads the env
    return OTLPSpanExporter(endpoint=url, headers=dict(headers) if headers else None)


def setup(
    store: str | Path | None = None,
    otlp_endpoint: str | None = None,
    capture_content: bool = True,
    service_name: str = "evals-harness",
    project_name: str | None = None,
    max_queue_size: int = 65_536,
    max_export_batch_size: int = 2_048,
    schedule_delay_ms: int = 200,
    *,
    set_global: bool = False,
    otlp_headers: Mapping[str, str] | None = None,
    exporters: Sequence[SpanExporter] = (),
    resource_attributes: Mapping[str, Any] | None = None,
    max_span_attributes: int = 1_024,
) -> TracingHandle:
    """Build a tracing pipeline and return its handle.

    Spans go to the SQLite file `store` (table `spans`) when given, to an OTLP/HTTP endpoint
    when `otlp_endpoint` (a base URL or a full `/v1/traces` URL) or `OTEL_EXPORTER_OTLP_ENDPOINT`
    is set (ValueError when it is not an http(s) URL), and to any extra `exporters`. Every
    exporter gets its own queue and worker and sees scrubbed spans: secrets redacted; prompts,
    completions, documents and tool arguments removed when `capture_content` is False.
    `set_global=True` also installs the provider globally (OpenTelemetry allows that once per
    process).
    """
    refresh_secrets()  # pick up keys set since import
    check_otlp_endpoint(otlp_endpoint)
    attributes: dict[str, Any] = {
        SERVICE_NAME: service_name,
        OPENINFERENCE_PROJECT_NAME: project_name or service_name,
        **(resource_attributes or {}),
    }
    limits = SpanLimits(max_span_attributes=max_span_attributes)
    provider = TracerProvider(resource=Resource.create(attributes), span_limits=limits)
    sinks: list[SpanExporter] = []
    store_path = Path(store) if store is not None else None
    if store_path is not None:
        sinks.append(SQLiteSpanExporter(store_path))
    env_endpoint = os.environ.get(OTLP_TRACES_ENDPOINT_ENV) or os.environ.get(OTLP_ENDPOINT_ENV)
    if otlp_endpoint or env_endpoint:
        sinks.append(_otlp_exporter(otlp_endpoint, otlp_headers))
    sinks.extend(exporters)
    processors = [
        CountingBatchSpanProcessor(
            ScrubbingExporter(sink, capture_content),
            max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
            schedule_delay_ms=schedule_delay_ms,
            name=type(sink).__name__,
        )
        for sink in sinks
    ]
    for processor in processors:
        provider.add_span_processor(processor)
    if set_global:
        trace.set_tracer_provider(provider)
    return TracingHandle(provider, processors, store_path, limits)
