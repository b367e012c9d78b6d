"""Types shared by the tracing tests (named uniquely: tests directories have no __init__)."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer


@dataclass
class Memory:
    tracer: Tracer
    exporter: InMemorySpanExporter


@dataclass
class Receiver:
    """A local OTLP/HTTP endpoint: keeps each request's raw body and decoded message."""

    url: str
    bodies: list[bytes] = field(default_factory=list)
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)

    def spans(self) -> list[tuple[str, dict[str, object]]]:
        """(name, attributes) of every received span."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {kv.key: _value(kv.value) for kv in span.attributes}
                        found.append((span.name, attributes))
        return found

    def resource_attributes(self) -> dict[str, object]:
        attributes: dict[str, object] = {}
        for request in self.requests:
            for resource_spans in request.resource_spans:
                for kv in resource_spans.resource.attributes:
                    attributes[kv.key] = _value(kv.value)
        return attributes


def _value(value: object) -> object:
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]  # type: ignore[attr-defined]
    return getattr(value, kind) if kind else None
