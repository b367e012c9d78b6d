"""Fixtures for the tracing tests: an in-memory tracer and an OTLP/HTTP receiver."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tracing_testkit import Memory, Receiver

import tracing


class _FlushedFirst(InMemorySpanExporter):
    """An in-memory exporter behind a batching pipeline: reading it first exports what ended."""

    def __init__(self) -> None:
        super().__init__()
        self.handle: tracing.TracingHandle | None = None

    def get_finished_spans(self) -> tuple[ReadableSpan, ...]:
        if self.handle is not None:
            assert self.handle.force_flush()
        return super().get_finished_spans()


@pytest.fixture(params=["sdk-tracer", "our-pipeline"])
def memory(request: pytest.FixtureRequest) -> Iterator[Memory]:
    """Spans as an exporter receives them: from the SDK's own tracer (any app's set-up), and
    from ours (`tracing.setup`), which records LLM spans in GenAI form only and adds their
    OpenInference twins on the way out. The two must look the same."""
    if request.param == "sdk-tracer":
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        yield Memory(provider.get_tracer("test"), exporter)
        provider.shutdown()
        return
    flushed = _FlushedFirst()
    handle = flushed.handle = tracing.setup(exporters=[flushed], schedule_delay_ms=0)
    yield Memory(handle.tracer("test"), flushed)
    handle.shutdown()


@pytest.fixture
def otlp_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            receiver.paths.append(self.path)
            receiver.content_types.append(self.headers.get("Content-Type", ""))
            receiver.bodies.append(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.requests.append(request)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield receiver
    server.shutdown()
    server.server_close()
