"""OpenTelemetry tracing for LLM and RAG apps: setup, span helpers, a SQLite span store, queries.

Usable on its own inside a production app (it imports nothing from `harness`):

    import tracing
    handle = tracing.setup(store=".evals/evals.sqlite", project_name="my-app")
    with tracing.llm_span(handle.tracer(), "openai/gpt-4o-mini", messages=msgs) as span:
        response = litellm.completion(model="openai/gpt-4o-mini", messages=msgs)
        tracing.record_completion(span, response)
    handle.shutdown()

Span names and attribute keys live in `tracing.conventions`. The OTLP exporter (protobuf,
requests) is imported only when an OTLP endpoint is configured.
"""

from tracing.counts import save_counts, take_counts
from tracing.handles import (
    EmbeddingSpan,
    EvaluatorSpan,
    LLMSpan,
    RetrievalSpan,
    SpanHandle,
    ToolSpan,
    record_completion,
    record_error,
)
from tracing.helpers import (
    embedding_span,
    evaluator_span,
    llm_span,
    retrieval_span,
    step_span,
    tool_span,
    traced,
    use_tracer,
)
from tracing.redact import REDACTED, redact, redact_value, refresh_secrets
from tracing.setup import (
    CountingBatchSpanProcessor,
    ExportStats,
    ScrubbingExporter,
    SQLiteSpanExporter,
    TracingHandle,
    setup,
)
from tracing.spanstore import SCHEMA_VERSION, SpanStore, SpanStoreError
from tracing.traces import (
    SpanNode,
    SpanRecord,
    TraceSummary,
    count_traces,
    find_trace_ids,
    get_span,
    get_trace,
    list_traces,
    span_tree,
)

__all__ = [
    "REDACTED",
    "SCHEMA_VERSION",
    "CountingBatchSpanProcessor",
    "EmbeddingSpan",
    "EvaluatorSpan",
    "ExportStats",
    "LLMSpan",
    "RetrievalSpan",
    "SQLiteSpanExporter",
    "ScrubbingExporter",
    "SpanHandle",
    "SpanNode",
    "SpanRecord",
    "SpanStore",
    "SpanStoreError",
    "ToolSpan",
    "TraceSummary",
    "TracingHandle",
    "count_traces",
    "embedding_span",
    "evaluator_span",
    "find_trace_ids",
    "get_span",
    "get_trace",
    "list_traces",
    "llm_span",
    "record_completion",
    "record_error",
    "redact",
    "redact_value",
    "refresh_secrets",
    "retrieval_span",
    "save_counts",
    "setup",
    "span_tree",
    "step_span",
    "take_counts",
    "tool_span",
    "traced",
    "use_tracer",
]
