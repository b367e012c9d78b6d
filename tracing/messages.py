"""Turn OpenAI-format chat messages and tool calls into the OTel GenAI message schema.

`gen_ai.input.messages` / `gen_ai.output.messages` are JSON strings of messages in that schema
(`{"role", "parts": [{"type": "text", "content"}, {"type": "tool_call", ...}]}`);
`tracing.mirror` derives OpenInference's flattened form (`llm.input_messages.0.message.role`,
...) from them.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Message = Mapping[str, Any]


def _compact_json() -> Callable[[Any], str]:
    """`json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)` without
    its per-call set-up, which costs more than encoding a small value: CPython's C encoder is
    built once (no circular-reference check: such a value fails with RecursionError instead
    of ValueError). Falls back to a plain `JSONEncoder` where the C encoder is missing or
    encodes differently."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
    make = getattr(json.encoder, "c_make_encoder", None)
    quote = getattr(json.encoder, "c_encode_basestring", None)
    try:
        encode = make(None, str, quote, None, ":", ",", False, False, True)  # type: ignore[misc]
        sample = {"a": [1, 2.5, None, True, 'é\n"', float("nan")], "b": {"c": object}}
        if "".join(encode(sample, 0)) != encoder.encode(sample):
            return encoder.encode
    except Exception:
        return encoder.encode

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


_to_json = _compact_json()


def to_json(value: Any) -> str:
    """Compact JSON for span attributes; anything unserialisable becomes its `str`."""
    return _to_json(value)


def text_of(content: Any) -> str | None:
    """The text of a message's content: a string, or the text parts of a content list."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        ]
        return "\n".join(texts)
    return str(content)


def normalise_tool_call(call: Mapping[str, Any]) -> tuple[str | None, str | None, str]:
    """(id, name, arguments as a JSON string) of an OpenAI-style or flat tool call."""
    function = call.get("function")
    source: Mapping[str, Any] = function if isinstance(function, Mapping) else call
    arguments = source.get("arguments")
    if not isinstance(arguments, str):
        arguments = to_json(arguments if arguments is not None else {})
    name, call_id = source.get("name"), call.get("id")
    return _optional_str(call_id), _optional_str(name), arguments


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _parts(message: Message) -> list[dict[str, Any]]:
    content = message.get("content")
    parts: list[dict[str, Any]] = []
    if message.get("role") == "tool":
        parts.append(
            {"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content}
        )
    elif isinstance(content, str):
        parts.append({"type": "text", "content": content})
    elif isinstance(content, Sequence):
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append({"type": "text", "content": part.get("text", "")})
            elif isinstance(part, Mapping):
                parts.append({"type": str(part.get("type", "unknown"))})
    for call in message.get("tool_calls") or ():
        call_id, name, arguments = normalise_tool_call(call)
        parts.append(
            {"type": "tool_call", "id": call_id, "name": name, "arguments": _parsed(arguments)}
        )
    return parts


def gen_ai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages in the OTel GenAI schema (role + parts; output messages keep finish_reason)."""
    converted = []
    for message in messages:
        entry: dict[str, Any] = {"role": message.get("role", "user"), "parts": _parts(message)}
        if message.get("name"):
            entry["name"] = message["name"]
        if message.get("finish_reason"):
            entry["finish_reason"] = message["finish_reason"]
        converted.append(entry)
    return converted
