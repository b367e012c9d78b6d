"""Typed handles on open spans: setters that record a step's outcome with both conventions.

A handle wraps one OTel span. `LLMSpan.set_response` records the answer, usage and cost as
`gen_ai.*` and OpenInference attributes (on our own pipeline's spans, the GenAI ones, whose
OpenInference twins `tracing.mirror` derives on the way out); `record_completion` does it from an
OpenAI-format response. Values that OTel cannot hold (dicts, mixed lists) are stored as JSON.

Handles opened by the helpers (`tracing.llm_span`, ...) collect what their setters record and
give it to the span in one go as the span ends, already made legal, so the SDK need not check
each value again (`tracing.setup.add_legal_attributes`): until then `handle.span.attributes`
shows only the attributes the span started with. A handle built directly on a span
(`LLMSpan(span)`) writes through at once. On a span that records nothing (no tracer
configured, or sampled out) the setters return at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from opentelemetry.trace import Span, Status, StatusCode

from tracing import conventions as c
from tracing.lean import LeanSpan
from tracing.messages import gen_ai_messages, normalise_tool_call, to_json
from tracing.mirror import lacking, llm_mirror, within
from tracing.setup import add_legal_attributes, attribute_room

_SCALARS = frozenset({str, bool, int, float})


def attribute_value(value: Any) -> Any:
    """An OTel-legal attribute value: scalars and sequences of one scalar type pass (as tuples),
    the rest becomes JSON."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if (
        isinstance(value, (list, tuple))
        and all(isinstance(item, (str, bool, int, float)) for item in value)
        and len({type(item) for item in value}) <= 1
    ):
        return tuple(value)  # as the SDK keeps sequences
    return to_json(value)


def legal_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """`attributes` without None values, each made OTel-legal (`attribute_value`)."""
    scalars = _SCALARS
    return {
        key: value if type(value) in scalars else attribute_value(value)
        for key, value in attributes.items()
        if value is not None
    }


def record_error(span: Span, error: BaseException) -> None:
    """Mark `span` failed by `error`: status ERROR, `error.type`, and an exception event."""
    if not span.is_recording():
        return
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.set_attribute(c.ERROR_TYPE, type(error).__qualname__)
    span.record_exception(error)


class SpanHandle:
    """A started span with typed setters; `.span` is the underlying OTel span."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self._recording = span.is_recording()
        # Attributes waiting for the span's end (helpers' handles), or None: write through.
        self._pending: dict[str, Any] | None = None

    def _begin(self, attributes: Mapping[str, Any]) -> None:
        """A helper's handle, whose span started with `attributes`: collect what the setters
        record until the span ends."""
        self._pending = {}

    def _record(self, attributes: dict[str, Any]) -> None:
        """Record already-legal attributes (no None values)."""
        if self._pending is not None:
            self._pending.update(attributes)
        elif attributes:
            add_legal_attributes(self.span, attributes)

    def _flush(self) -> None:
        """Give the span what the setters collected (called once, before the span ends)."""
        pending, self._pending = self._pending, None
        if pending:
            add_legal_attributes(self.span, pending)

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute (None is ignored; dicts and mixed lists are stored as JSON)."""
        if value is not None and self._recording:
            self._record({key: attribute_value(value)})

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes (None values are ignored)."""
        if self._recording:
            self._record(legal_attributes(attributes))

    def set_input(self, value: Any) -> None:
        """`input.value` (text as is, anything else as JSON) with its MIME type."""
        if value is not None and self._recording:
            self._record(_io_attributes(c.INPUT_VALUE, c.INPUT_MIME_TYPE, value))

    def set_output(self, value: Any) -> None:
        """`output.value` (text as is, anything else as JSON) with its MIME type."""
        if value is not None and self._recording:
            self._record(_io_attributes(c.OUTPUT_VALUE, c.OUTPUT_MIME_TYPE, value))

    def set_error(self, message: str, error_type: str) -> None:
        """Mark the span failed without an exception (e.g. a tool that returned an error)."""
        if self._recording:
            self.span.set_status(Status(StatusCode.ERROR, message))
            self._record({c.ERROR_TYPE: error_type})


def _io_attributes(value_key: str, mime_key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {value_key: value, mime_key: c.MIME_TEXT}
    return {value_key: to_json(value), mime_key: c.MIME_JSON}


class LLMSpan(SpanHandle):
    """An LLM call (`chat`): fill it with `set_response` or `record_completion`.

    A helper's span (`tracing.llm_span`) of our own pipeline (`LeanSpan`) gets the GenAI
    attributes only, their OpenInference twins being derived where spans leave
    (`tracing.mirror`). Any other span, and ours under a value length limit (which could cut
    a messages JSON short), gets both: the twins of the whole values, as the span ends, after
    all else and only as many as fit under the attribute count limit, as our exporters add
    them. A handle built on a span (`LLMSpan(span)`) writes both through at once."""

    # The attributes the span started with, whole, when this handle adds the twins itself.
    _start: Mapping[str, Any] | None = None

    def _begin(self, attributes: Mapping[str, Any]) -> None:
        super()._begin(attributes)
        if not (type(self.span) is LeanSpan and self.span.holds_whole_values()):
            self._start = attributes

    def _flush(self) -> None:
        start, pending = self._start, self._pending or {}
        super()._flush()
        if start is not None:
            twins = within(lacking({**start, **pending}), attribute_room(self.span))
            if twins:
                add_legal_attributes(self.span, twins)

    def set_response(
        self,
        text: str | None = None,
        finish_reason: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost: float | None = None,
        response_model: str | None = None,
        cache_hit: bool | None = None,
        retries: int | None = None,
        tool_calls: Sequence[Mapping[str, Any]] | None = None,
        response_id: str | None = None,
    ) -> None:
        """Record the model's answer, usage, cost and how it was obtained (cache, retries)."""
        if not self._recording:
            return
        attributes: dict[str, Any] = {
            c.GEN_AI_RESPONSE_MODEL: response_model,
            c.GEN_AI_RESPONSE_ID: response_id,
            c.GEN_AI_RESPONSE_FINISH_REASONS: [finish_reason] if finish_reason else None,
            c.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
            c.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
            c.EVALS_COST_USD: cost,
            c.EVALS_CACHE_HIT: cache_hit,
            c.EVALS_RETRIES: retries,
        }
        if text is not None or tool_calls:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = list(tool_calls)
            if finish_reason:
                message["finish_reason"] = finish_reason
            attributes[c.GEN_AI_OUTPUT_MESSAGES] = to_json(gen_ai_messages([message]))
        attributes = legal_attributes(attributes)
        if self._pending is None:  # written through, on a span not necessarily of kind LLM
            attributes.update(llm_mirror(attributes))
        self._record(attributes)


class RetrievalSpan(SpanHandle):
    """A retrieval: fill it with `set_documents`."""

    def set_documents(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Record retrieved documents: dicts with `id`, `content`, `score`, `metadata`."""
        if not self._recording:
            return
        attributes: dict[str, Any] = {}
        for i, document in enumerate(documents):
            attributes[c.RETRIEVAL_DOCUMENT_ID.format(i=i)] = _str(document.get("id"))
            attributes[c.RETRIEVAL_DOCUMENT_CONTENT.format(i=i)] = _str(document.get("content"))
            attributes[c.RETRIEVAL_DOCUMENT_SCORE.format(i=i)] = _float(document.get("score"))
            metadata = document.get("metadata")
            if metadata:
                attributes[c.RETRIEVAL_DOCUMENT_METADATA.format(i=i)] = to_json(metadata)
        self._record(legal_attributes(attributes))


class EmbeddingSpan(SpanHandle):
    """An embedding call: fill it with `set_usage`."""

    def set_usage(self, input_tokens: int | None = None, cost: float | None = None) -> None:
        """Record tokens embedded and the cost."""
        self.set_attributes(
            {
                c.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
                c.LLM_TOKEN_COUNT_PROMPT: input_tokens,
                c.EVALS_COST_USD: cost,
            }
        )


class ToolSpan(SpanHandle):
    """A tool execution: fill it with `set_result` (or `set_error`)."""

    def set_result(self, result: Any) -> None:
        """Record the tool's result (text as is, anything else as JSON)."""
        if result is None or not self._recording:
            return
        output = _io_attributes(c.OUTPUT_VALUE, c.OUTPUT_MIME_TYPE, result)
        self._record({c.GEN_AI_TOOL_CALL_RESULT: output[c.OUTPUT_VALUE], **output})


class EvaluatorSpan(SpanHandle):
    """A scorer evaluating one output: fill it with `set_score`."""

    def set_score(
        self, score: float | None, passed: bool | None = None, reason: str | None = None
    ) -> None:
        """Record the score, pass/fail and the scorer's reason."""
        if not self._recording:
            return
        attributes = legal_attributes(
            {c.EVALS_SCORE: score, c.EVALS_PASSED: passed, c.EVALS_REASON: reason}
        )
        output = {"score": score, "passed": passed, "reason": reason}
        attributes.update(_io_attributes(c.OUTPUT_VALUE, c.OUTPUT_MIME_TYPE, output))
        self._record(attributes)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def record_completion(
    handle: LLMSpan,
    response: Mapping[str, Any] | Any,
    *,
    cost: float | None = None,
    cache_hit: bool | None = None,
    retries: int | None = None,
) -> None:
    """Fill an LLM span from an OpenAI-format chat completion (a dict, or a pydantic model
    such as litellm's `ModelResponse`): text, tool calls, finish reason, usage, model, id."""
    if not isinstance(response, Mapping):
        dump = getattr(response, "model_dump", None)
        response = dump() if callable(dump) else {}
    data = cast(Mapping[str, Any], response)
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    usage = data.get("usage") or {}
    tool_calls = [normalise_tool_call(call) for call in message.get("tool_calls") or ()]
    handle.set_response(
        text=message.get("content"),
        finish_reason=choice.get("finish_reason"),
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        cost=cost,
        response_model=data.get("model"),
        cache_hit=cache_hit,
        retries=retries,
        tool_calls=[
            {"id": call_id, "name": name, "arguments": arguments}
            for call_id, name, arguments in tool_calls
        ]
        or None,
        response_id=data.get("id"),
    )
