"""The tracer of our own pipelines: OpenTelemetry API spans without the SDK's span objects.

`TracingHandle.tracer()` (`tracing.setup`) returns a `LeanTracer` when the pipeline is the one
`setup()` built: its spans go straight to the pipeline's span processors, which queue them as
they are, and its exporters read them as they would the SDK's finished spans (`ReadableSpan`).
Everything else is the SDK's: the provider's sampler (the SDK's default, `ParentBased(ALWAYS_ON)`,
decided inline; any other asked span by span), id generator, resource and span limits, and the
pipeline's processors and exporters. Exporters other than our SQLite one get an SDK
`ReadableSpan` (`readable`), so OTLP and test exporters see exactly what they always saw. Once
a span processor is added to the provider, spans start on the SDK's tracer instead.

Not carried over from the SDK's tracer: its internal span metrics
(`OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`) and its private tracer configurator. A `LeanSpan`
is not an SDK `Span`: code that checks for that type (litellm's own "otel" callback does, for
its attribute budget) treats it as a foreign span.

Why: an SDK span is about a dozen objects (attribute container with its lock, event and link
lists with their locks, a readable copy made at the end, ...) built and checked through several
layers. A traced eval case opens four; in a live run their start and end were the largest part
of what tracing cost the event loop. A `LeanSpan` is one object with a plain attribute dict and
one lock. The API's semantics are kept: attributes are validated (`BoundedAttributes`) unless a
helper already made them legal (`add_legal`), the count and length limits apply, a re-set key
moves to the end, an ended span ignores changes with the SDK's warnings, `record_exception` and
`set_status` behave as the SDK's, and the context-manager form records an escaping exception.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType, TracebackType
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tracing.mirror import mirror, within

try:  # what the SDK's tracer uses: the span also wraps an async function it decorates
    from opentelemetry.util._decorator import _agnosticcontextmanager as _span_context
except ImportError:  # pragma: no cover - older API versions
    _span_context = contextmanager  # type: ignore[assignment]

_logger = logging.getLogger(__name__)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)  # W3C Trace Context level 2 (SDK >= 1.40)
_UNSET = Status(StatusCode.UNSET)


class EndedSpanProcessor(Protocol):
    """What a lean span needs of a span processor: to be told that a span ended."""

    def on_end(self, span: Any) -> None: ...


class LeanTracer(trace.Tracer):
    """An OpenTelemetry API tracer whose recording spans are `LeanSpan`s, handed to
    `processors` as they end (see the module docstring)."""

    def __init__(
        self,
        sampler: Sampler,
        id_generator: IdGenerator,
        resource: Resource,
        limits: SpanLimits,
        scope: InstrumentationScope,
        processors: Sequence[EndedSpanProcessor],
        *,
        fallback: trace.Tracer | None = None,
        watched: Any = None,
    ) -> None:
        """`watched`: the provider's own span processor (the SDK's multi-processor). Once its
        processors change (one added), spans start on `fallback` (the SDK's tracer), so the
        new processor sees them too."""
        self._fallback = fallback
        self._watched = watched
        self._watched_processors = getattr(watched, "_span_processors", None)
        self.sampler = sampler
        self.id_generator = id_generator
        self.resource = resource
        self.limits = limits
        self.instrumentation_scope = scope
        self.processors = tuple(processors)
        self._trace_ids_random = bool(_RANDOM) and id_generator.is_trace_id_random()
        self._parent_based_always_on = _is_parent_based_always_on(sampler)

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        fallback = self._fallback_now()
        if fallback is not None:
            return fallback.start_span(
                name, context, kind, attributes, links, start_time, record_exception,
                set_status_on_exception,
            )  # fmt: skip
        links = links or ()
        span, initial = self._start(name, context, kind, attributes, links, start_time)
        if type(span) is LeanSpan:
            if initial:
                span.set_attributes(initial)
            for link in links:
                if link:
                    span.add_link(link.context, link.attributes)
            span._record_exception = record_exception
            span._set_status_on_exception = set_status_on_exception
        return span

    def start_legal_span(
        self, name: str, kind: SpanKind, attributes: Mapping[str, Any]
    ) -> trace.Span:
        """`start_span(name, kind=kind, attributes=attributes)` in the current context, not
        recording exceptions (the caller does), for attributes already made legal
        (`tracing.handles.legal_attributes`): they are not validated again."""
        fallback = self._fallback_now()
        if fallback is not None:
            return fallback.start_span(
                name,
                kind=kind,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
        span, initial = self._start(name, None, kind, attributes, (), None)
        if type(span) is LeanSpan:
            span._record_exception = span._set_status_on_exception = False
            if initial is attributes:
                span.add_legal(attributes)
            elif initial:  # a sampler changed them
                span.set_attributes(initial)
        return span

    def _fallback_now(self) -> trace.Tracer | None:
        """The SDK's tracer if the provider's processors are no longer the ones this tracer
        hands its spans to."""
        watched = self._watched
        if watched is None or self._fallback is None:
            return None
        if getattr(watched, "_span_processors", None) is self._watched_processors:
            return None
        return self._fallback

    def _start(
        self,
        name: str,
        context: otel_context.Context | None,
        kind: SpanKind,
        attributes: Mapping[str, Any] | None,
        links: Sequence[Link],
        start_time: int | None,
    ) -> tuple[trace.Span, Mapping[str, Any] | None]:
        """The new span (a `NonRecordingSpan` if not sampled) and the attributes it starts
        with: `attributes`, or what the sampler returned instead (as the SDK takes them)."""
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and not isinstance(parent, SpanContext):
            raise TypeError("parent_span_context must be a SpanContext or None.")
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.id_generator.generate_trace_id()
            random_trace_id = self._trace_ids_random
        else:
            trace_id = parent.trace_id
            random_trace_id = bool(parent.trace_flags & _RANDOM)
        initial = attributes
        if self._parent_based_always_on:  # the SDK's default sampler, decided as it would
            sampled = recording = parent is None or parent.trace_flags.sampled
            trace_state = None if parent is None else parent.trace_state
        else:
            sampling = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = sampling.decision.is_sampled()
            recording = sampling.decision.is_recording()
            trace_state = sampling.trace_state
            if sampling.attributes != (attributes or {}):
                initial = sampling.attributes
        flags = _SAMPLED if sampled else _NOT_SAMPLED
        if random_trace_id:
            flags = TraceFlags(flags | _RANDOM)
        span_context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=trace_state,
        )
        if not recording:
            return trace.NonRecordingSpan(span_context), None
        return LeanSpan(self, name, span_context, parent, kind, start_time), initial

    @_span_context
    def start_as_current_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def _is_parent_based_always_on(sampler: Sampler) -> bool:
    """Whether `sampler` is the SDK's default, `ParentBased(ALWAYS_ON)` with its default
    delegates: sample a root span, follow the parent's sampled flag otherwise."""
    return type(sampler) is ParentBased and all(
        getattr(sampler, name, None) is expected
        for name, expected in (
            ("_root", ALWAYS_ON),
            ("_remote_parent_sampled", ALWAYS_ON),
            ("_remote_parent_not_sampled", ALWAYS_OFF),
            ("_local_parent_sampled", ALWAYS_ON),
            ("_local_parent_not_sampled", ALWAYS_OFF),
        )
    )


class LeanSpan(trace.Span):
    """A recording span of a `LeanTracer`; once ended, it is also the finished span its
    processors queue and the SQLite exporter stores (the fields of the SDK's `ReadableSpan`)."""

    __slots__ = (
        "_attributes",
        "_lock",
        "_record_exception",
        "_set_status_on_exception",
        "_tracer",
        "context",
        "dropped_attributes",
        "dropped_events",
        "dropped_links",
        "end_time",
        "events",
        "instrumentation_scope",
        "kind",
        "links",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start_time: int | None,
    ) -> None:
        self._tracer = tracer
        self._lock = threading.Lock()
        self._record_exception = True
        self._set_status_on_exception = True
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.resource = tracer.resource
        self.instrumentation_scope = tracer.instrumentation_scope
        self._attributes: dict[str, Any] = {}
        # Created on the first event or link: most spans have neither.
        self.events: list[Event] | tuple[()] = ()
        self.links: list[Link] | tuple[()] = ()
        self.status = _UNSET
        self.dropped_attributes = self.dropped_events = self.dropped_links = 0
        self.start_time = start_time if start_time is not None else time.time_ns()
        self.end_time: int | None = None

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self.name}", context={self.context})'

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The attributes, read-only (changed through `set_attribute(s)` only)."""
        return MappingProxyType(self._attributes)

    def get_span_context(self) -> SpanContext:
        return self.context

    def holds_whole_values(self) -> bool:
        """True when no value length limit cuts this span's attribute values short."""
        return self._tracer.limits.max_span_attribute_length is None

    def attribute_room(self) -> int | None:
        """How many more attributes fit under the count limit (None: no limit)."""
        maxlen = self._tracer.limits.max_span_attributes
        return None if maxlen is None else max(maxlen - len(self._attributes), 0)

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Validate as the SDK does (invalid keys and values dropped with a warning and
        counted; sequences kept as tuples; strings cut to the length limit), then add."""
        limits = self._tracer.limits
        clean = BoundedAttributes(
            None, attributes, immutable=False, max_value_len=limits.max_span_attribute_length
        )
        self._put(dict(clean), invalid=clean.dropped)

    def add_legal(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes already made legal (`tracing.handles.legal_attributes`: scalars and
        tuples or lists of one scalar type): only an empty key or a length limit makes them go
        through validation."""
        if self._tracer.limits.max_span_attribute_length is not None or "" in attributes:
            self.set_attributes(attributes)
            return
        if list in map(type, attributes.values()):  # kept as tuples, as the SDK does
            attributes = {k: tuple(v) if type(v) is list else v for k, v in attributes.items()}
        self._put(attributes)

    def _put(self, values: Mapping[str, Any], invalid: int = 0) -> None:
        """Store valid `values`; `invalid`: how many more were dropped by validation."""
        maxlen = self._tracer.limits.max_span_attributes
        with self._lock:
            if self.end_time is not None:
                _logger.warning("Setting attribute on ended span.")
                return
            if maxlen == 0:
                self.dropped_attributes += len(values) + invalid
                return
            self.dropped_attributes += invalid
            stored = self._attributes
            if maxlen is None or len(stored) + len(values) <= maxlen:
                if not stored.keys().isdisjoint(values):  # a key set again moves to the end
                    for key in values.keys() & stored.keys():
                        del stored[key]
                stored.update(values)
                return
            for key, value in values.items():  # past the limit, one by one as the SDK does
                if key in stored:
                    del stored[key]
                if len(stored) >= maxlen:
                    _logger.warning(
                        "Attributes dict is full. Dropping the oldest key-value pair from "
                        "attributes to make space for the new key-value pair."
                    )
                    del stored[next(iter(stored))]
                    self.dropped_attributes += 1
                stored[key] = value

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        limits = self._tracer.limits
        event = Event(name, self._frozen(limits.max_event_attributes, attributes), timestamp)
        self._append("events", event, limits.max_events, "add_event")

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return
        limits = self._tracer.limits
        link = Link(context, self._frozen(limits.max_link_attributes, attributes))
        self._append("links", link, limits.max_links, "add_link")

    def _frozen(self, limit: int | None, attributes: Mapping[str, Any] | None) -> Any:
        """An event's or link's attributes, validated and immutable, as the SDK keeps them."""
        max_len = self._tracer.limits.max_attribute_length
        return BoundedAttributes(limit, attributes, immutable=True, max_value_len=max_len)

    def _append(self, field: str, item: Any, limit: int | None, method: str) -> None:
        """Append `item` to `events` or `links` (`field`); past `limit` the oldest goes and is
        counted in `dropped_<field>`, as in the SDK's bounded lists."""
        with self._lock:
            if self.end_time is not None:
                _logger.warning("Calling %s() on an ended span.", method)
                return
            items = getattr(self, field)
            if type(items) is not list:  # the shared empty tuple until the first one
                items = []
                setattr(self, field, items)
            if limit is not None and len(items) >= limit:
                dropped = f"dropped_{field}"
                setattr(self, dropped, getattr(self, dropped) + 1)
                if not items:
                    return
                del items[0]
            items.append(item)

    def update_name(self, name: str) -> None:
        with self._lock:
            if self.end_time is not None:
                _logger.warning("Calling update_name() on an ended span.")
                return
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK: an OK status is final, UNSET is ignored, and a description goes with a
        status code, not with a `Status`."""
        with self._lock:
            if self.end_time is not None:
                _logger.warning("Calling set_status() on an ended span.")
                return
            if not isinstance(status, (Status, StatusCode)):
                return  # as the SDK: anything else is ignored
            code = status.status_code if isinstance(status, Status) else status
            if self.status.status_code is StatusCode.OK or code is StatusCode.UNSET:
                return
            if isinstance(status, Status):
                if description is not None:
                    _logger.warning(
                        "Description %s ignored. Use either `Status` or "
                        "`(StatusCode, Description)`",
                        description,
                    )
                self.status = status
            else:
                self.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An `exception` event with the exception's type, message and stack trace, as the SDK
        records it."""
        error_type = type(exception)
        module, qualname = error_type.__module__, error_type.__qualname__
        full_name = f"{module}.{qualname}" if module and module != "builtins" else qualname
        values: dict[str, Any] = {
            "exception.type": full_name,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            values.update(attributes)
        self.add_event("exception", values, timestamp)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self.end_time is not None:
                _logger.warning("Calling end() on an ended span.")
                return
            self.end_time = end_time if end_time is not None else time.time_ns()
        for processor in self._tracer.processors:
            processor.on_end(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)

    def readable(self) -> ReadableSpan:
        """This span as the SDK's `ReadableSpan` (for exporters other than ours), with its
        dropped counts, and with the OpenInference twins of its GenAI attributes that it was
        recorded without (`tracing.mirror`)."""
        limits = self._tracer.limits
        recorded = self._attributes
        twins = within(mirror(recorded), self.attribute_room())
        if twins:
            recorded = {**recorded, **twins}
        attributes = BoundedAttributes(limits.max_span_attributes, recorded)
        attributes.dropped = self.dropped_attributes
        events = BoundedList.from_seq(limits.max_events, self.events)
        events.dropped = self.dropped_events
        links = BoundedList.from_seq(limits.max_links, self.links)
        links.dropped = self.dropped_links
        return ReadableSpan(
            name=self.name,
            context=self.context,
            parent=self.parent,
            resource=self.resource,
            attributes=attributes,
            events=events,
            links=links,
            kind=self.kind,
            status=self.status,
            start_time=self.start_time,
            end_time=self.end_time,
            instrumentation_scope=self.instrumentation_scope,
        )


def readable(span: Any) -> Any:
    """`span` as the SDK's `ReadableSpan` (OpenInference twins added) if it is a `LeanSpan`,
    else as it is."""
    return span.readable() if type(span) is LeanSpan else span
