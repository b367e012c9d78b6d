"""Context managers and a decorator that open correctly-labelled spans for LLM-app steps.

Each helper sets the OTel GenAI attributes (`gen_ai.*`) and the OpenInference ones side by side,
so Phoenix, Jaeger or our own viewer read the same span (an LLM span of our own pipeline gets
the OpenInference twins of its GenAI attributes on the way out: `tracing.mirror`). On an
exception the span gets status ERROR, `error.type` and an exception event, and the exception
propagates. Helpers use only the OpenTelemetry API: without a configured provider they build no
attributes and record nothing.

The harness's provider layer calls `llm_span` around each model call; a production app can do
the same around its own litellm or OpenAI call and fill the span with
`tracing.handles.record_completion`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN,
    NoOpTracer,
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Tracer,
)

from tracing import conventions as c
from tracing.handles import (
    EmbeddingSpan,
    EvaluatorSpan,
    LLMSpan,
    RetrievalSpan,
    SpanHandle,
    ToolSpan,
    legal_attributes,
    record_error,
)
from tracing.messages import Message, gen_ai_messages, to_json
from tracing.setup import start_span

TRACER_NAME = "tracing"

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound="SpanHandle")

_PARAM_ATTRIBUTES = {
    "temperature": c.GEN_AI_REQUEST_TEMPERATURE,
    "max_tokens": c.GEN_AI_REQUEST_MAX_TOKENS,
    "max_completion_tokens": c.GEN_AI_REQUEST_MAX_TOKENS,
    "top_p": c.GEN_AI_REQUEST_TOP_P,
    "seed": c.GEN_AI_REQUEST_SEED,
}


# The tracer helpers use when given None, for the current context (task / thread): lets an
# application route all spans of one unit of work to its own provider without a global one.
_CONTEXT_TRACER: ContextVar[Tracer | None] = ContextVar("tracing_context_tracer", default=None)


@contextmanager
def use_tracer(tracer: Tracer | None) -> Iterator[None]:
    """Within this block (and tasks/threads started in it), helpers given no tracer use
    `tracer`. Without it they use the global tracer provider (a no-op until one is set)."""
    token = _CONTEXT_TRACER.set(tracer)
    try:
        yield
    finally:
        _CONTEXT_TRACER.reset(token)


# The global provider's tracer, kept: an SDK provider's `get_tracer` costs microseconds a call.
_global_tracer: tuple[trace.TracerProvider, Tracer] | None = None


def _tracer(tracer: Tracer | None) -> Tracer | None:
    """The tracer a helper uses, or None when its spans could only be no-ops."""
    global _global_tracer
    if tracer is None:
        tracer = _CONTEXT_TRACER.get()
    if tracer is None:
        provider = trace.get_tracer_provider()
        if isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider)):
            return None  # no global provider (yet): a span now would be a no-op
        cached = _global_tracer
        if cached is None or cached[0] is not provider:
            cached = _global_tracer = (provider, provider.get_tracer(TRACER_NAME))
        tracer = cached[1]
    return None if isinstance(tracer, NoOpTracer) else tracer


class _SpanScope(AbstractContextManager[H], Generic[H]):
    """Start a span, make it current, hand out its handle; on exit record what the handle
    collected and any exception, restore the context and end the span. One plain object
    instead of the SDK's nested generator context managers (`start_as_current_span` ->
    `use_span`), which cost about half as much again as starting and ending the span."""

    __slots__ = ("_attributes", "_handle", "_handle_type", "_kind", "_name", "_token", "_tracer")

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        handle_type: type[H],
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._handle_type = handle_type
        self._token: object | None = None

    def __enter__(self) -> H:
        span = start_span(self._tracer, self._name, self._kind, self._attributes)
        if span.get_span_context().is_valid:  # as `start_as_current_span`: not a no-op span
            self._token = otel_context.attach(trace.set_span_in_context(span))
        handle = self._handle = self._handle_type(span)
        if handle._recording:
            handle._begin(self._attributes)
        return handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        handle = self._handle
        span = handle.span
        try:
            if handle._recording:
                handle._flush()
                if error is not None:
                    record_error(span, error)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)  # type: ignore[arg-type]
            span.end()


class _NoSpan(AbstractContextManager[H], Generic[H]):
    """What a helper returns when no tracer records: a handle whose setters do nothing."""

    __slots__ = ("_handle",)

    def __init__(self, handle: H) -> None:
        self._handle = handle

    def __enter__(self) -> H:
        return self._handle

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_SPANS: dict[type[SpanHandle], _NoSpan[Any]] = {
    handle_type: _NoSpan(handle_type(INVALID_SPAN))
    for handle_type in (SpanHandle, LLMSpan, RetrievalSpan, EmbeddingSpan, ToolSpan, EvaluatorSpan)
}


def _no_span(handle_type: type[H]) -> AbstractContextManager[H]:
    return _NO_SPANS[handle_type]


def _span(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, Any],
    handle_type: type[H],
) -> AbstractContextManager[H]:
    return _SpanScope(tracer, name, kind, legal_attributes(attributes), handle_type)


def _split_model(model: str, provider: str | None) -> tuple[str, str | None]:
    """`openai/gpt-4o-mini` -> (`gpt-4o-mini`, `openai`) when no provider is given."""
    if provider is None and "/" in model:
        prefix, _, name = model.partition("/")
        return name, prefix
    return model, provider


def llm_span(
    tracer: Tracer | None,
    model: str,
    provider: str | None = None,
    params: Mapping[str, Any] | None = None,
    messages: Sequence[Message] | None = None,
    *,
    operation: str = c.OP_CHAT,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[LLMSpan]:
    """Span an LLM call. `model` may be a litellm string (`openai/gpt-4o-mini`)."""
    active = _tracer(tracer)
    if active is None:
        return _no_span(LLMSpan)
    model_name, provider_name = _split_model(model, provider)
    params = dict(params or {})
    values: dict[str, Any] = {
        c.GEN_AI_OPERATION_NAME: operation,
        c.GEN_AI_PROVIDER_NAME: provider_name,
        c.GEN_AI_REQUEST_MODEL: model_name,
        c.OPENINFERENCE_SPAN_KIND: c.KIND_LLM,
        c.EVALS_MODEL: model,
        c.LLM_INVOCATION_PARAMETERS: to_json(params) if params else None,
    }
    for param, key in _PARAM_ATTRIBUTES.items():
        if params.get(param) is not None:
            values[key] = params[param]
    if messages:
        values[c.GEN_AI_INPUT_MESSAGES] = to_json(gen_ai_messages(messages))
    values.update(attributes or {})
    return _span(active, f"{operation} {model_name}", SpanKind.CLIENT, values, LLMSpan)


def retrieval_span(
    tracer: Tracer | None,
    query: str,
    top_k: int | None = None,
    *,
    data_source: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[RetrievalSpan]:
    """Span a retrieval of up to `top_k` documents for `query` from `data_source` (an index)."""
    active = _tracer(tracer)
    if active is None:
        return _no_span(RetrievalSpan)
    values: dict[str, Any] = {
        c.GEN_AI_OPERATION_NAME: c.OP_RETRIEVAL,
        c.GEN_AI_DATA_SOURCE_ID: data_source,
        c.OPENINFERENCE_SPAN_KIND: c.KIND_RETRIEVER,
        c.INPUT_VALUE: query,
        c.INPUT_MIME_TYPE: c.MIME_TEXT,
        c.EVALS_RETRIEVAL_QUERY: query,
        c.EVALS_RETRIEVAL_TOP_K: top_k,
        **(attributes or {}),
    }
    name = f"{c.OP_RETRIEVAL} {data_source}" if data_source else c.OP_RETRIEVAL
    return _span(active, name, SpanKind.CLIENT, values, RetrievalSpan)


def embedding_span(
    tracer: Tracer | None,
    model: str,
    n_inputs: int,
    *,
    provider: str | None = None,
    texts: Sequence[str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[EmbeddingSpan]:
    """Span an embedding of `n_inputs` texts (the texts themselves only when given)."""
    active = _tracer(tracer)
    if active is None:
        return _no_span(EmbeddingSpan)
    model_name, provider_name = _split_model(model, provider)
    values: dict[str, Any] = {
        c.GEN_AI_OPERATION_NAME: c.OP_EMBEDDINGS,
        c.GEN_AI_PROVIDER_NAME: provider_name,
        c.GEN_AI_REQUEST_MODEL: model_name,
        c.OPENINFERENCE_SPAN_KIND: c.KIND_EMBEDDING,
        c.EMBEDDING_MODEL_NAME: model_name,
        c.EVALS_EMBEDDING_INPUTS: n_inputs,
    }
    for i, text in enumerate(texts or ()):
        values[c.EMBEDDING_TEXT.format(i=i)] = text
    values.update(attributes or {})
    return _span(active, f"{c.OP_EMBEDDINGS} {model_name}", SpanKind.CLIENT, values, EmbeddingSpan)


def tool_span(
    tracer: Tracer | None,
    name: str,
    arguments: Mapping[str, Any] | str | None = None,
    call_id: str | None = None,
    *,
    schema: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[ToolSpan]:
    """Span the execution of tool `name` with `arguments` (`schema`: its parameter schema)."""
    active = _tracer(tracer)
    if active is None:
        return _no_span(ToolSpan)
    args_json = None
    if arguments is not None:
        args_json = arguments if isinstance(arguments, str) else to_json(arguments)
    values: dict[str, Any] = {
        c.GEN_AI_OPERATION_NAME: c.OP_EXECUTE_TOOL,
        c.GEN_AI_TOOL_NAME: name,
        c.GEN_AI_TOOL_CALL_ID: call_id,
        c.GEN_AI_TOOL_CALL_ARGUMENTS: args_json,
        c.OPENINFERENCE_SPAN_KIND: c.KIND_TOOL,
        c.TOOL_NAME: name,
        c.TOOL_PARAMETERS: to_json(schema) if schema is not None else None,
        c.INPUT_VALUE: args_json,
        c.INPUT_MIME_TYPE: c.MIME_JSON if args_json is not None else None,
        **(attributes or {}),
    }
    return _span(active, f"{c.OP_EXECUTE_TOOL} {name}", SpanKind.INTERNAL, values, ToolSpan)


def step_span(
    tracer: Tracer | None, name: str, /, kind: str = c.KIND_CHAIN, **attributes: Any
) -> AbstractContextManager[SpanHandle]:
    """Span any other step (a case, a pipeline stage, an agent). Dotted attribute names pass
    through `**{"evals.case.id": ...}`. Kind AGENT also sets `gen_ai.operation.name`."""
    active = _tracer(tracer)
    if active is None:
        return _no_span(SpanHandle)
    values: dict[str, Any] = {c.OPENINFERENCE_SPAN_KIND: kind}
    if kind == c.KIND_AGENT:
        values[c.GEN_AI_OPERATION_NAME] = c.OP_INVOKE_AGENT
    values.update(attributes)
    return _span(active, name, SpanKind.INTERNAL, values, SpanHandle)


def evaluator_span(
    tracer: Tracer | None,
    scorer_name: str,
    scorer_type: str | None = None,
    *,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[EvaluatorSpan]:
    """Span one scorer judging one output; an LLM judge's call nests inside as an LLM span."""
    active = _tracer(tracer)
    if active is None:
        return _no_span(EvaluatorSpan)
    values: dict[str, Any] = {
        c.OPENINFERENCE_SPAN_KIND: c.KIND_EVALUATOR,
        c.EVALS_SCORER_NAME: scorer_name,
        c.EVALS_SCORER_TYPE: scorer_type,
        **(attributes or {}),
    }
    return _span(active, f"score {scorer_name}", SpanKind.INTERNAL, values, EvaluatorSpan)


def _call_input(signature: inspect.Signature, args: Any, kwargs: Any) -> Any:
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    return {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}


def traced(
    kind: str = c.KIND_CHAIN,
    name: str | None = None,
    *,
    tracer: Tracer | None = None,
    capture_io: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync or async function to run inside a span of `kind`, recording its
    arguments as `input.value` and its return value as `output.value` (unless `capture_io`
    is off). Kind TOOL also labels the span as a tool execution. Not for generators: their
    span would close when the generator is created."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        span_name = name or func.__qualname__
        signature = inspect.signature(func)
        extra: dict[str, Any] = {}
        if kind == c.KIND_TOOL:
            extra = {
                c.GEN_AI_OPERATION_NAME: c.OP_EXECUTE_TOOL,
                c.GEN_AI_TOOL_NAME: span_name,
                c.TOOL_NAME: span_name,
            }

        def opened() -> AbstractContextManager[SpanHandle]:
            return step_span(tracer, span_name, kind=kind, **extra)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with opened() as handle:
                    if capture_io:
                        handle.set_input(_call_input(signature, args, kwargs))
                    result = await func(*args, **kwargs)
                    if capture_io:
                        handle.set_output(result)
                    return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with opened() as handle:
                if capture_io:
                    handle.set_input(_call_input(signature, args, kwargs))
                result = func(*args, **kwargs)
                if capture_io:
                    handle.set_output(result)
                return result

        return wrapper

    return decorate
