"""The agent target: the model calls the suite's Python tools until it answers or runs out."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import create_model

import tracing
from harness.cases import Case
from harness.errors import ConfigError, ProviderCallError
from harness.prompts import Prompt
from harness.providers import ChatRequest, ChatResponse, ModelClient
from harness.targets import TargetResult, merged_params

MAX_TOOL_RESULT_CHARS = 8_000


@dataclass(frozen=True)
class Tool:
    """A Python function offered to the model, with the JSON schema litellm sends."""

    name: str
    function: Callable[..., Any]
    schema: dict[str, Any]
    is_async: bool

    @classmethod
    def from_function(cls, function: Callable[..., Any], *, where: str) -> Tool:
        """Describe `function` from its signature (types, defaults) and docstring."""
        name = function.__name__
        fields: dict[str, Any] = {}
        for param in inspect.signature(function).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(f"tool {name!r}: *args/**kwargs cannot be described", field=where)
            annotation = Any if param.annotation is param.empty else param.annotation
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (annotation, default)
        try:
            parameters = create_model(f"{name}_args", **fields).model_json_schema()
        except Exception as exc:  # an annotation pydantic cannot describe
            raise ConfigError(
                f"tool {name!r}: cannot describe its parameters: {exc}", field=where
            ) from None
        parameters.pop("title", None)
        doc = inspect.getdoc(function) or ""
        description = doc.split("\n\n")[0].strip() or name
        schema = {
            "type": "function",
            "function": {"name": name, "description": description, "parameters": parameters},
        }
        return cls(name, function, schema, inspect.iscoroutinefunction(function))

    async def call(self, arguments: dict[str, Any]) -> Any:
        if self.is_async:
            return await self.function(**arguments)
        return await asyncio.to_thread(self.function, **arguments)


def parse_arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments as a dict (providers send a JSON string)."""
    if isinstance(raw, dict):
        return raw
    value = json.loads(raw or "{}")
    if not isinstance(value, dict):
        raise ValueError("tool arguments must be a JSON object")
    return value


class AgentTarget:
    """Render the prompt, then loop: call the model with the tools; run the tools it asks for;
    feed their results back; stop at a final answer or after `max_steps` model calls."""

    kind = "agent"

    def __init__(self, prompt: Prompt, tools: list[Tool], max_steps: int) -> None:
        self.prompt = prompt
        self.tools = {tool.name: tool for tool in tools}
        self.max_steps = max_steps

    def check_case(self, case: Case) -> None:
        self.prompt.render(case)

    async def run(self, case: Case, client: ModelClient | None, epoch: int) -> TargetResult:
        assert client is not None, "agent targets need a model"
        with tracing.step_span(None, "agent", kind="AGENT") as span:
            result = await self._loop(case, client, epoch)
            span.set_output(result.output)
            span.set_attribute("evals.agent.steps", result.extras.get("steps", 0))
            return result

    async def _loop(self, case: Case, client: ModelClient, epoch: int) -> TargetResult:
        messages = self.prompt.render(case)
        conversation: list[dict[str, Any]] = list(messages)
        options = self.prompt.request_options()
        options["tools"] = [tool.schema for tool in self.tools.values()]
        params = merged_params(self.prompt, client)
        calls: list[ChatResponse] = []
        trajectory: list[dict[str, Any]] = []
        started = time.perf_counter()
        final: str | None = None
        for step in range(self.max_steps):
            request = ChatRequest(
                messages=list(conversation), params=params, epoch=epoch, **options
            )
            try:
                response = await client.complete(request)
            except ProviderCallError as exc:
                return TargetResult(
                    output=None,
                    messages=messages,
                    calls=calls,
                    tool_calls=trajectory,
                    error=str(exc),
                    error_kind=exc.kind,
                    latency_ms=(time.perf_counter() - started) * 1e3,
                )
            calls.append(response)
            if not response.tool_calls:
                final = response.text or ""
                break
            conversation.append(
                {
                    "role": "assistant",
                    "content": response.text,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": call["arguments"]},
                        }
                        for call in response.tool_calls
                    ],
                }
            )
            for call in response.tool_calls:
                record = await self._run_tool(call, step)
                trajectory.append(record)
                content = record["error"] if record["error"] else record["result"]
                conversation.append(
                    {
                        "role": "tool",
                        "tool_call_id": call["id"],
                        "content": str(content)[:MAX_TOOL_RESULT_CHARS],
                    }
                )
        return TargetResult(
            output=final if final is not None else "",
            messages=messages,
            calls=calls,
            tool_calls=trajectory,
            latency_ms=(time.perf_counter() - started) * 1e3,
            extras={"steps": len(calls), "max_steps_reached": final is None},
        )

    async def _run_tool(self, call: dict[str, Any], step: int) -> dict[str, Any]:
        """Run one requested tool; its failure is reported back to the model, not raised."""
        record: dict[str, Any] = {
            "id": call["id"],
            "name": call["name"],
            "step": step,
            "arguments": call["arguments"],
            "result": None,
            "error": None,
        }
        with tracing.tool_span(None, call["name"], call["arguments"], call["id"]) as span:
            tool = self.tools.get(call["name"])
            if tool is None:
                record["error"] = f"error: no tool named {call['name']!r}"
                span.set_error(record["error"], "unknown_tool")
                return record
            try:
                arguments = parse_arguments(call["arguments"])
                record["arguments"] = arguments
                result = await tool.call(arguments)
                record["result"] = (
                    result
                    if isinstance(result, str)
                    else json.dumps(result, ensure_ascii=False, default=str)
                )
                span.set_result(record["result"])
            except Exception as exc:  # a tool's failure is the agent's problem to handle
                record["error"] = f"error: {type(exc).__name__}: {exc}"
                span.set_error(record["error"], type(exc).__name__)
        return record
