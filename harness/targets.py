"""What is evaluated: a prompt sent to a model (chat), recorded outputs (replay), user code."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.cases import Case
from harness.errors import ConfigError, ProviderCallError
from harness.prompts import Prompt
from harness.providers import ChatRequest, ChatResponse, ModelClient


@dataclass
class TargetResult:
    """What a target produced for one case, with every model call it made."""

    output: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: list[ChatResponse] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    retrieved: list[dict[str, Any]] | None = None
    latency_ms: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def cost_usd(self) -> float | None:
        """Total cost of the calls; None when any call's cost is unknown."""
        costs = [c.cost_usd for c in self.calls]
        return None if any(c is None for c in costs) else float(sum(c or 0.0 for c in costs))

    @property
    def input_tokens(self) -> int | None:
        values = [c.input_tokens for c in self.calls if c.input_tokens is not None]
        return sum(values) if values else None

    @property
    def output_tokens(self) -> int | None:
        values = [c.output_tokens for c in self.calls if c.output_tokens is not None]
        return sum(values) if values else None

    @property
    def cached(self) -> bool:
        return bool(self.calls) and all(c.cached for c in self.calls)

    @property
    def attempts(self) -> int | None:
        return sum(c.attempts for c in self.calls) if self.calls else None


class Target(Protocol):
    """Produces an output for a case (with a model client, when the target calls a model)."""

    kind: str

    def check_case(self, case: Case) -> None: ...

    async def run(self, case: Case, client: ModelClient | None, epoch: int) -> TargetResult: ...


def merged_params(prompt: Prompt | None, client: ModelClient | None) -> dict[str, Any]:
    """Prompt params, overridden by the model's own params."""
    params: dict[str, Any] = dict(prompt.config.params) if prompt else {}
    if client is not None:
        params.update(client.model.params)
    return params


class ChatTarget:
    """Render the prompt for the case and call the model once."""

    kind = "chat"

    def __init__(self, prompt: Prompt) -> None:
        self.prompt = prompt

    def check_case(self, case: Case) -> None:
        self.prompt.render(case)

    async def run(self, case: Case, client: ModelClient | None, epoch: int) -> TargetResult:
        assert client is not None, "chat targets need a model"
        messages = self.prompt.render(case)
        request = ChatRequest(
            messages=messages,
            params=merged_params(self.prompt, client),
            epoch=epoch,
            **self.prompt.request_options(),
        )
        return await generate(client, request, time.perf_counter())


async def generate(
    client: ModelClient,
    request: ChatRequest,
    started: float,
    *,
    retrieved: list[dict[str, Any]] | None = None,
    latency_from_start: bool = False,
) -> TargetResult:
    """One model call as a target's result; a provider failure is an `error` result.
    Latency is the call's own, or (`latency_from_start`) everything since `started`."""
    try:
        response = await client.complete(request)
    except ProviderCallError as exc:
        return TargetResult(
            output=None,
            messages=request.messages,
            retrieved=retrieved,
            error=str(exc),
            error_kind=exc.kind,
            latency_ms=(time.perf_counter() - started) * 1e3,
        )
    latency = (time.perf_counter() - started) * 1e3 if latency_from_start else response.latency_ms
    return TargetResult(
        output=response.text or "",
        messages=request.messages,
        calls=[response],
        tool_calls=response.tool_calls,
        retrieved=retrieved,
        latency_ms=latency,
    )


class ReplayTarget:
    """Score outputs already recorded in the dataset (logged production traffic): no model."""

    kind = "replay"

    def __init__(self, output_field: str, dataset_source: str) -> None:
        self.output_field = output_field
        self.dataset_source = dataset_source

    def check_case(self, case: Case) -> None:
        if self.output_field not in case.fields:
            raise ConfigError(
                f"case {case.id!r} has no {self.output_field!r} column to replay",
                path=self.dataset_source,
                field="target.output_field",
            )

    async def run(self, case: Case, client: ModelClient | None, epoch: int) -> TargetResult:
        value = case.fields.get(self.output_field)
        return TargetResult(output=None if value is None else str(value))


class LLM:
    """The provider layer handed to user code, so its calls are cached, retried and counted."""

    def __init__(
        self, client: ModelClient | None, loop: asyncio.AbstractEventLoop, epoch: int
    ) -> None:
        self._client = client
        self._loop = loop
        self._epoch = epoch
        self.calls: list[ChatResponse] = []

    @property
    def model(self) -> str | None:
        return self._client.model.id if self._client else None

    async def achat(self, messages: list[dict[str, Any]], **params: Any) -> str:
        """Call the run's model from async code; returns the text of the answer."""
        if self._client is None:
            raise RuntimeError("this suite names no model for its python target to call")
        options = {
            k: params.pop(k) for k in ("tools", "tool_choice", "response_format") if k in params
        }
        request = ChatRequest(
            messages=messages,
            params={**self._client.model.params, **params},
            epoch=self._epoch,
            **options,
        )
        response = await self._client.complete(request)
        self.calls.append(response)
        return response.text or ""

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> str:
        """Call the run's model from synchronous user code (which runs in a worker thread)."""
        future = asyncio.run_coroutine_threadsafe(self.achat(messages, **params), self._loop)
        return future.result()


class PythonTarget:
    """Call the user's own function `f(case)` or `f(case, llm)`; sync code runs in a thread."""

    kind = "python"

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.is_async = inspect.iscoroutinefunction(function)
        try:
            self.wants_llm = len(inspect.signature(function).parameters) >= 2
        except (TypeError, ValueError):
            self.wants_llm = False

    def check_case(self, case: Case) -> None:
        return None

    async def run(self, case: Case, client: ModelClient | None, epoch: int) -> TargetResult:
        llm = LLM(client, asyncio.get_running_loop(), epoch)
        args: tuple[Any, ...] = (
            (case.template_vars(), llm) if self.wants_llm else (case.template_vars(),)
        )
        started = time.perf_counter()
        try:
            if self.is_async:
                value = await self.function(*args)
            else:
                value = await asyncio.to_thread(self.function, *args)
        except ProviderCallError as exc:
            return TargetResult(
                output=None,
                calls=llm.calls,
                error=str(exc),
                error_kind=exc.kind,
                latency_ms=(time.perf_counter() - started) * 1e3,
            )
        except Exception as exc:  # the user's code failed: an error result, not a fail
            return TargetResult(
                output=None,
                calls=llm.calls,
                error=f"target raised {type(exc).__name__}: {exc}",
                error_kind="target_error",
                latency_ms=(time.perf_counter() - started) * 1e3,
            )
        latency_ms = (time.perf_counter() - started) * 1e3
        if isinstance(value, dict):
            output = value.get("output")
            return TargetResult(
                output=None if output is None else str(output),
                calls=llm.calls,
                tool_calls=list(value.get("tool_calls") or []),
                retrieved=value.get("retrieved"),
                latency_ms=latency_ms,
                extras={
                    k: v for k, v in value.items() if k not in ("output", "tool_calls", "retrieved")
                },
            )
        return TargetResult(
            output=None if value is None else str(value), calls=llm.calls, latency_ms=latency_ms
        )
