"""The OpenInference attributes of an LLM span that restate its GenAI ones, derived from them.

An LLM span is described twice: by the OTel GenAI conventions (`gen_ai.request.model`,
`gen_ai.usage.*`, `gen_ai.input.messages` as one JSON string) and by OpenInference
(`llm.model_name`, `llm.token_count.*`, the same messages flattened into
`llm.input_messages.N.message.*`, `input.value`, ...), so every backend finds the names it reads.
The second description is `llm_mirror` of the first: one derivation, used wherever it is needed.

- Spans of our own pipeline (`tracing.setup`'s tracer) record the GenAI form only, which is what
  the local span store keeps: the prompt and reply once, not three times. The OpenInference form
  is added where spans leave: by `tracing.setup` for every exporter other than the store, and by
  `tracing.traces` as it reads spans back (`mirror`).
- On any other span (a tracer a production app configured itself) the helpers and handles
  record both at once, as they always did.

Derived values only fill names a span lacks: whatever a span set itself wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from itertools import islice
from typing import Any

from tracing import conventions as c
from tracing.messages import text_of, to_json


def mirror(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenInference attributes an LLM span's GenAI ones imply and it lacks (nothing for
    other spans)."""
    if attributes.get(c.OPENINFERENCE_SPAN_KIND) != c.KIND_LLM:
        return {}
    return lacking(attributes)


def lacking(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """`llm_mirror(attributes)` without the names `attributes` set already."""
    return {k: v for k, v in llm_mirror(attributes).items() if k not in attributes}


def within(twins: dict[str, Any], room: int | None) -> dict[str, Any]:
    """The first `room` of `twins` (all of them when `room` is None): twins take only the room
    left under a span's attribute count limit, never pushing out what it recorded."""
    if room is None or len(twins) <= room:
        return twins
    return dict(islice(twins.items(), room))


def llm_mirror(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenInference form of the GenAI attributes of an LLM call among `attributes`: model,
    provider, token counts, cost, input and output messages, and the last user message and the
    reply as `input.value` / `output.value`. Works on any subset (what one setter records)."""
    get = attributes.get
    derived: dict[str, Any] = {}
    for source, target in _SCALARS:
        value = get(source)
        if value is not None:
            derived[target] = value
    input_tokens = _count(get(c.GEN_AI_USAGE_INPUT_TOKENS))
    output_tokens = _count(get(c.GEN_AI_USAGE_OUTPUT_TOKENS))
    if input_tokens is not None and output_tokens is not None:
        derived[c.LLM_TOKEN_COUNT_TOTAL] = input_tokens + output_tokens
    inputs = _messages(get(c.GEN_AI_INPUT_MESSAGES))
    if inputs is not None:
        derived.update(_flattened(inputs, output=False))
        users = [i for i, m in enumerate(inputs) if m.get("role") == "user"]
        if users:  # the last user message's text
            _set_value(
                derived, c.INPUT_VALUE, c.INPUT_MIME_TYPE, c.LLM_INPUT_MESSAGE_CONTENT, users[-1]
            )
    outputs = _messages(get(c.GEN_AI_OUTPUT_MESSAGES))
    if outputs is not None:
        derived.update(_flattened(outputs, output=True))
        _set_value(derived, c.OUTPUT_VALUE, c.OUTPUT_MIME_TYPE, c.LLM_OUTPUT_MESSAGE_CONTENT, 0)
    return derived


def _set_value(derived: dict[str, Any], key: str, mime_key: str, content: str, i: int) -> None:
    """`key` (input.value or output.value): the flattened content of message `i`, if any."""
    text = derived.get(content.format(i=i))
    if text is not None:
        derived[key] = text
        derived[mime_key] = c.MIME_TEXT


_SCALARS = (
    (c.GEN_AI_REQUEST_MODEL, c.LLM_MODEL_NAME),
    (c.GEN_AI_PROVIDER_NAME, c.LLM_PROVIDER),
    (c.GEN_AI_USAGE_INPUT_TOKENS, c.LLM_TOKEN_COUNT_PROMPT),
    (c.GEN_AI_USAGE_OUTPUT_TOKENS, c.LLM_TOKEN_COUNT_COMPLETION),
    (c.EVALS_COST_USD, c.LLM_COST_TOTAL),
)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _messages(value: Any) -> list[dict[str, Any]] | None:
    """The messages of a `gen_ai.*.messages` JSON string, or None (absent, cut short by a
    length limit, redacted, not that schema)."""
    if not isinstance(value, str):
        return None
    try:
        messages = json.loads(value)
    except ValueError:
        return None
    if not isinstance(messages, list):
        return None
    return [m for m in messages if isinstance(m, dict)]


def _parts(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    parts = message.get("parts")
    return [p for p in parts if isinstance(p, Mapping)] if isinstance(parts, list) else []


def _content(message: Mapping[str, Any], parts: list[Mapping[str, Any]]) -> str | None:
    """A message's text as OpenInference's `message.content` holds it: a tool result's text, or
    the text parts joined by newlines; None when the message had no content (only tool calls)."""
    if message.get("role") == "tool":
        for part in parts:
            if part.get("type") == "tool_call_response":
                return text_of(part.get("response"))
    content = [p for p in parts if p.get("type") not in ("tool_call", "tool_call_response")]
    if not content:
        return None
    return "\n".join(str(p.get("content", "")) for p in content if p.get("type") == "text")


def _flattened(messages: list[dict[str, Any]], output: bool) -> dict[str, Any]:
    if output:
        role_key, content_key = c.LLM_OUTPUT_MESSAGE_ROLE, c.LLM_OUTPUT_MESSAGE_CONTENT
        call_keys = (
            c.LLM_OUTPUT_TOOL_CALL_ID,
            c.LLM_OUTPUT_TOOL_CALL_NAME,
            c.LLM_OUTPUT_TOOL_CALL_ARGUMENTS,
        )
    else:
        role_key, content_key = c.LLM_INPUT_MESSAGE_ROLE, c.LLM_INPUT_MESSAGE_CONTENT
        call_keys = (
            c.LLM_INPUT_TOOL_CALL_ID,
            c.LLM_INPUT_TOOL_CALL_NAME,
            c.LLM_INPUT_TOOL_CALL_ARGUMENTS,
        )
    attributes: dict[str, Any] = {}
    for i, message in enumerate(messages):
        attributes[role_key.format(i=i)] = str(message.get("role", "user"))
        parts = _parts(message)
        text = _content(message, parts)
        if text is not None:
            attributes[content_key.format(i=i)] = text
        if not output and message.get("role") == "tool":
            response = next((p for p in parts if p.get("type") == "tool_call_response"), None)
            if response is not None and response.get("id") is not None:
                attributes[c.LLM_INPUT_MESSAGE_TOOL_CALL_ID.format(i=i)] = str(response["id"])
        for j, call in enumerate(p for p in parts if p.get("type") == "tool_call"):
            if call.get("id") is not None:
                attributes[call_keys[0].format(i=i, j=j)] = str(call["id"])
            if call.get("name") is not None:
                attributes[call_keys[1].format(i=i, j=j)] = str(call["name"])
            arguments = call.get("arguments")
            # Recorded parsed when they were JSON: compact JSON again; a string that was not
            # JSON was kept as it was.
            attributes[call_keys[2].format(i=i, j=j)] = (
                arguments if isinstance(arguments, str) else to_json(arguments)
            )
    return attributes
