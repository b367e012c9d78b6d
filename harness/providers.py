"""Every model call: litellm, concurrency and rate limits, retries, timeouts, cost, cache."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

import tracing
from harness import gcpolicy, litellm_lean, local_llm
from harness.config import ModelConfig
from harness.errors import ProviderCallError
from harness.versions import content_hash
from tracing import conventions as tracing_names

CacheMode = Literal["auto", "on", "off", "read-only", "refresh"]
CACHE_MODES: tuple[str, ...] = ("auto", "on", "off", "read-only", "refresh")

LOCAL_PROVIDER = "local"
DEFAULT_CONCURRENCY = 16
# Calls sent to a provider (not answered from the response cache) by the current item: the
# runner sets a fresh counter per item; one that made none can be redone from the cache for free.
PROVIDER_CALLS: ContextVar[list[int] | None] = ContextVar("evals_provider_calls", default=None)
MAX_BACKOFF_S = 30.0

# Every sampling / reasoning parameter goes into the cache key, unset ones as null, so that a
# parameter added later (or removed) can never silently reuse an answer made without it.
KEY_PARAMS = (
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "n",
    "stop", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "logit_bias", "logprobs", "top_logprobs", "reasoning_effort", "thinking",
    "parallel_tool_calls", "user", "modalities", "audio", "prediction", "service_tier",
    "verbosity", "web_search_options",
)  # fmt: skip
# litellm kwargs that cannot change the answer: left out of the cache key.
TRANSPORT_KWARGS = frozenset(
    {
        "timeout",
        "stream_timeout",
        "extra_headers",
        "headers",
        "num_retries",
        "max_retries",
        "metadata",
    }
)

_LITELLM: Any = None


def litellm_module() -> Any:
    """Import litellm once, offline-safe (bundled cost map), quiet, with our local provider."""
    global _LITELLM
    if _LITELLM is None:
        # Must be set before the import: otherwise litellm fetches its cost map from the network.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        litellm.custom_provider_map = [
            *[p for p in litellm.custom_provider_map if p.get("provider") != LOCAL_PROVIDER],
            {"provider": LOCAL_PROVIDER, "custom_handler": _local_handler(litellm)},
        ]
        litellm_lean.install(litellm)
        gcpolicy.freeze()  # litellm's import made ~10^5 long-lived objects
        _LITELLM = litellm
    return _LITELLM


def _local_handler(litellm: Any) -> Any:
    """litellm custom provider running the bundled GGUF model in-process (`local/<name>`)."""

    class LocalLLM(litellm.CustomLLM):
        async def acompletion(
            self, model: str, messages: list[Any], *args: Any, **kwargs: Any
        ) -> Any:
            params = dict(kwargs.get("optional_params") or {})
            name = model.split("/", 1)[-1]
            reply = await local_llm.acomplete(
                messages,
                model=name,
                temperature=float(params.get("temperature", 0.0) or 0.0),
                max_tokens=int(
                    params.get("max_tokens") or params.get("max_completion_tokens") or 256
                ),
                top_p=params.get("top_p"),
                seed=params.get("seed"),
                stop=params.get("stop"),
                response_format=params.get("response_format"),
            )
            return litellm.ModelResponse(**reply)

    return LocalLLM()


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request, exactly as sent (minus credentials and transport)."""

    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    epoch: int = 0


@dataclass
class ChatResponse:
    """A model's answer with its accounting."""

    text: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    latency_ms: float
    model: str
    cached: bool = False
    attempts: int = 1
    retry_waits_s: list[float] = field(default_factory=list)

    def to_payload(self) -> dict[str, Any]:
        """What the response cache stores (no timing, no attempt counts)."""
        return {
            "text": self.text,
            "tool_calls": self.tool_calls,
            "finish_reason": self.finish_reason,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "model": self.model,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], latency_ms: float) -> ChatResponse:
        return cls(
            text=payload.get("text"),
            tool_calls=list(payload.get("tool_calls") or []),
            finish_reason=payload.get("finish_reason"),
            input_tokens=payload.get("input_tokens"),
            output_tokens=payload.get("output_tokens"),
            cost_usd=payload.get("cost_usd"),
            latency_ms=latency_ms,
            model=payload.get("model", ""),
            cached=True,
            attempts=0,
        )


@dataclass
class _Attempts:
    """How many times a call was sent, known to the caller even when it failed for good."""

    count: int = 0


class ResponseCache(Protocol):
    """Where cached responses live (the run store implements it)."""

    def cache_get(self, key: str) -> dict[str, Any] | None: ...

    def cache_put(self, key: str, model: str, payload: dict[str, Any]) -> None: ...


def is_local(model_id: str) -> bool:
    return model_id.startswith(LOCAL_PROVIDER + "/")


def cache_use(mode: CacheMode, request: ChatRequest) -> tuple[bool, bool]:
    """(read from the cache, write to the cache) for this request under cache `mode`."""
    if mode == "off":
        return False, False
    if mode == "read-only":
        return True, False
    if mode == "refresh":
        return False, True
    if mode == "on":
        return True, True
    deterministic = float(request.params.get("temperature", 1.0) or 0.0) == 0.0
    return deterministic, deterministic


def cache_key(model: ModelConfig, request: ChatRequest) -> str:
    """The canonical request: everything that can change the answer, nothing that cannot."""
    params = {name: request.params.get(name) for name in KEY_PARAMS}
    params.update({k: v for k, v in request.params.items() if k not in params})
    canonical: dict[str, Any] = {
        "model": model.id,
        "api_base": model.api_base,
        "api_version": model.api_version,
        "messages": request.messages,
        "params": params,
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
        "epoch": request.epoch,
    }
    # litellm kwargs from the suite (extra_body, ...) are sent too; only when present, so keys
    # of models without any stay as they were.
    sent = {k: v for k, v in model.litellm.items() if k not in TRANSPORT_KWARGS}
    if sent:
        canonical["litellm"] = sent
    return content_hash(canonical)


@dataclass(frozen=True)
class _Failure:
    kind: str
    retryable: bool
    status: int | None


def classify(exc: BaseException) -> _Failure:
    """Map an exception from a call to (error kind, whether a retry can help, HTTP status)."""
    litellm = litellm_module()
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    ordered: list[tuple[Any, str, bool]] = [
        (litellm.ContextWindowExceededError, "context_length", False),
        (litellm.ContentPolicyViolationError, "content_filter", False),
        (litellm.RateLimitError, "rate_limit", True),
        (litellm.Timeout, "timeout", True),
        (litellm.AuthenticationError, "auth", False),
        (litellm.PermissionDeniedError, "permission", False),
        (litellm.NotFoundError, "not_found", False),
        (litellm.BadRequestError, "bad_request", False),
        (litellm.UnprocessableEntityError, "bad_request", False),
        (litellm.ServiceUnavailableError, "server_error", True),
        (litellm.InternalServerError, "server_error", True),
        (litellm.BadGatewayError, "server_error", True),
        (litellm.APIConnectionError, "connection", True),
    ]
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return _Failure("timeout", True, None)
    if "Missing credentials" in str(exc) or "api_key client option must be set" in str(exc):
        # litellm reports a missing key as a 500; no retry can fix it.
        return _Failure("auth", False, status)
    if isinstance(exc, litellm.InternalServerError):
        # litellm reports a dropped connection and an unparseable body as a 500 no server sent.
        cause = _transport_failure(exc)
        if cause is not None:
            return _Failure(cause, True, None)
    for cls, kind, retryable in ordered:
        if isinstance(exc, cls):
            return _Failure(kind, retryable, status)
    if status is not None:
        # litellm raises a bare APIError for some statuses (e.g. 403): name them all the same.
        kind = _STATUS_KINDS.get(status, "http_" + str(status))
        return _Failure(kind, status >= 500 or status in (408, 409, 429), status)
    # Anything else (an invalid body, a dropped stream): transient until proven otherwise.
    return _Failure("provider_error", True, None)


_STATUS_KINDS = {
    400: "bad_request",
    401: "auth",
    403: "permission",
    404: "not_found",
    422: "bad_request",
    429: "rate_limit",
}


def _transport_failure(exc: BaseException) -> str | None:
    """'connection' or 'invalid_response' when the exception's cause chain shows one."""
    import openai  # already loaded by litellm

    seen: BaseException | None = exc.__cause__ or exc.__context__
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, openai.APITimeoutError):
            return None
        if isinstance(seen, openai.APIConnectionError):
            return "connection"
        if isinstance(seen, json.JSONDecodeError):
            return "invalid_response"
        seen = seen.__cause__ or seen.__context__
    return None


def retry_after_s(exc: BaseException | None) -> float | None:
    """Seconds the provider asked us to wait (Retry-After / retry-after-ms), if it did."""
    if exc is None:
        return None
    sources: list[Any] = []
    response = getattr(exc, "response", None)
    if response is not None:
        sources.append(getattr(response, "headers", None))
    sources.append(getattr(exc, "litellm_response_headers", None))
    sources.append(getattr(exc, "headers", None))
    for headers in sources:
        if not headers:
            continue
        try:
            millis = headers.get("retry-after-ms")
            if millis is not None:
                return max(0.0, float(millis) / 1000.0)
            seconds = headers.get("retry-after")
            if seconds is not None:
                return max(0.0, float(seconds))
        except (TypeError, ValueError):
            continue
    return None


class ModelClient:
    """Calls one model: concurrency, rate limits, retries with backoff, timeouts, cache."""

    def __init__(
        self,
        model: ModelConfig,
        *,
        cache: ResponseCache | None = None,
        cache_mode: CacheMode = "auto",
        concurrency: int | None = None,
        on_call: Callable[[ChatRequest, ChatResponse | None, BaseException | None], None]
        | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.model = model
        self.cache = cache
        self.cache_mode = cache_mode
        default = 1 if is_local(model.id) else DEFAULT_CONCURRENCY
        self.concurrency = model.concurrency or concurrency or default
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._rpm = _limiter(model.rpm)
        self._tpm = _limiter(model.tpm)
        self._rng = rng or random.Random()
        self._on_call = on_call
        self._cost_known = True
        self.calls = 0
        self.cache_hits = 0

    def share(self, processes: int) -> None:
        """This process is one of `processes` sharing the model (before any call): take a fair
        part of its concurrency and rate limits, so together they keep the configured totals."""
        if processes <= 1:
            return
        self.concurrency = max(1, math.ceil(self.concurrency / processes))
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._rpm = _limiter(self.model.rpm / processes if self.model.rpm else None)
        self._tpm = _limiter(self.model.tpm / processes if self.model.tpm else None)

    def _use_cache(self, request: ChatRequest) -> tuple[bool, bool]:
        """(read from the cache, write to the cache) for this request."""
        if self.cache is None:
            return False, False
        return cache_use(self.cache_mode, request)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One chat completion, traced as an LLM span. Raises ProviderCallError when it fails
        for good (after retries)."""
        span_params = {
            **request.params,
            **(
                {"tools": [t.get("function", t).get("name") for t in request.tools]}
                if request.tools
                else {}
            ),
        }
        tried = _Attempts()
        with tracing.llm_span(
            None, self.model.id, params=span_params, messages=request.messages
        ) as span:
            try:
                response = await self._complete(request, tried)
            except ProviderCallError:
                # Failed for good: the span gets the error on the way out; record the retries.
                span.set_attributes(
                    {
                        tracing_names.EVALS_CACHE_HIT: False,
                        tracing_names.EVALS_RETRIES: max(0, tried.count - 1),
                    }
                )
                raise
            span.set_response(
                text=response.text,
                finish_reason=response.finish_reason,
                input_tokens=response.input_tokens,
                output_tokens=response.output_tokens,
                cost=response.cost_usd,
                response_model=response.model,
                cache_hit=response.cached,
                retries=max(0, response.attempts - 1),
                tool_calls=response.tool_calls or None,
            )
            span.set_attribute(tracing_names.EVALS_LATENCY_MS, round(response.latency_ms, 3))
            return response

    async def _complete(self, request: ChatRequest, tried: _Attempts | None = None) -> ChatResponse:
        read, write = self._use_cache(request)
        key = cache_key(self.model, request) if (read or write) and self.cache else None
        if read and key is not None and self.cache is not None:
            started = time.perf_counter()
            payload = self.cache.cache_get(key)
            if payload is not None:
                self.cache_hits += 1
                return ChatResponse.from_payload(payload, (time.perf_counter() - started) * 1e3)
        counter = PROVIDER_CALLS.get()
        if counter is not None:
            counter[0] += 1
        response = await self._call_with_retries(request, tried)
        if write and key is not None and self.cache is not None and _cacheable(request, response):
            self.cache.cache_put(key, self.model.id, response.to_payload())
        return response

    async def _call_with_retries(
        self, request: ChatRequest, tried: _Attempts | None = None
    ) -> ChatResponse:
        model = self.model
        waits: list[float] = []

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            asked = retry_after_s(exc)
            backoff = min(MAX_BACKOFF_S, model.backoff_s * 2 ** (state.attempt_number - 1))
            delay = asked if asked is not None else backoff * (0.5 + self._rng.random())
            waits.append(delay)
            return delay

        def retryable(exc: BaseException) -> bool:
            # tenacity sees every BaseException: a cancelled call (Ctrl-C, the grace period)
            # must stop, never be retried as if the provider had failed.
            return isinstance(exc, Exception) and classify(exc).retryable

        retrying = AsyncRetrying(
            stop=stop_after_attempt(model.max_attempts) | stop_before_delay(model.retry_budget_s),
            wait=wait,
            retry=retry_if_exception(retryable),
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = await self._call_once(request)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            failure = classify(exc)
            if tried is not None:
                tried.count = attempts
            if self._on_call:
                self._on_call(request, None, exc)
            raise ProviderCallError(
                failure.kind,
                f"{model.label}: {failure.kind} after {attempts} attempt(s): {_short(exc)}",
                status=failure.status,
            ) from None
        response.attempts = attempts
        response.retry_waits_s = waits[: attempts - 1]
        if self._on_call:
            self._on_call(request, response, None)
        return response

    async def _call_once(self, request: ChatRequest) -> ChatResponse:
        litellm = litellm_module()
        model = self.model
        kwargs: dict[str, Any] = dict(model.litellm)
        kwargs.update(request.params)
        for name in ("tools", "tool_choice", "response_format"):
            value = getattr(request, name)
            if value is not None:
                kwargs[name] = value
        if model.api_base:
            kwargs["api_base"] = model.api_base
        if model.api_version:
            kwargs["api_version"] = model.api_version
        if model.api_key_env:
            kwargs["api_key"] = os.environ.get(model.api_key_env, "")
        async with self._semaphore:
            if self._rpm is not None:
                await self._rpm.acquire()
            if self._tpm is not None:
                await self._tpm.acquire(min(model.tpm or 1, _estimate_tokens(request)))
            started = time.perf_counter()
            self.calls += 1
            raw = await litellm_lean.call(
                litellm,
                lambda: litellm.acompletion(
                    model=model.id,
                    messages=request.messages,
                    timeout=model.timeout_s,
                    num_retries=0,
                    max_retries=0,
                    **kwargs,
                ),
                timeout_s=model.timeout_s + 5.0,
            )
            latency_ms = (time.perf_counter() - started) * 1e3
        return self._parse(raw, latency_ms)

    def _parse(self, raw: Any, latency_ms: float) -> ChatResponse:
        choice = raw.choices[0]
        message = choice.message
        tool_calls = [
            {
                "id": call.id,
                "name": call.function.name,
                "arguments": call.function.arguments,
            }
            for call in (getattr(message, "tool_calls", None) or [])
        ]
        usage = getattr(raw, "usage", None)
        input_tokens = getattr(usage, "prompt_tokens", None) if usage else None
        output_tokens = getattr(usage, "completion_tokens", None) if usage else None
        return ChatResponse(
            text=message.content,
            tool_calls=tool_calls,
            finish_reason=choice.finish_reason,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self._cost(input_tokens, output_tokens),
            latency_ms=latency_ms,
            model=getattr(raw, "model", None) or self.model.id,
        )

    def _cost(self, input_tokens: int | None, output_tokens: int | None) -> float | None:
        model = self.model
        if input_tokens is None or output_tokens is None:
            return None
        if model.price is not None:
            return (
                input_tokens * model.price.input_per_million
                + output_tokens * model.price.output_per_million
            ) / 1e6
        if is_local(model.id):
            return 0.0
        if not self._cost_known:
            return None
        try:
            prompt_cost, completion_cost = litellm_module().cost_per_token(
                model=model.id, prompt_tokens=input_tokens, completion_tokens=output_tokens
            )
        except Exception:  # unknown to the cost map: cost is unknown, never 0
            self._cost_known = False
            return None
        return float(prompt_cost) + float(completion_cost)


class ClientPool:
    """One ModelClient per distinct model config, shared by targets and judge scorers, so a
    model's concurrency and rate limits hold across everything that calls it."""

    def __init__(self) -> None:
        self._clients: dict[str, ModelClient] = {}
        self.cache: ResponseCache | None = None
        self.cache_mode: CacheMode = "auto"
        self.concurrency: int | None = None

    def configure(
        self, *, cache: ResponseCache | None, cache_mode: CacheMode, concurrency: int | None
    ) -> None:
        """Bind the run's cache and defaults (clients made earlier keep theirs)."""
        self.cache, self.cache_mode, self.concurrency = cache, cache_mode, concurrency

    def client(self, model: ModelConfig) -> ModelClient:
        key = content_hash(model.model_dump(mode="json"))
        client = self._clients.get(key)
        if client is None:
            client = ModelClient(
                model, cache=self.cache, cache_mode=self.cache_mode, concurrency=self.concurrency
            )
            self._clients[key] = client
        return client

    def clients(self) -> list[ModelClient]:
        return list(self._clients.values())


def _limiter(per_minute: float | None) -> Any:
    if per_minute is None:
        return None
    from aiolimiter import AsyncLimiter

    return AsyncLimiter(per_minute, 60)


def _estimate_tokens(request: ChatRequest) -> float:
    chars = sum(len(str(m.get("content") or "")) for m in request.messages)
    return chars / 4 + float(request.params.get("max_tokens") or 256)


def _cacheable(request: ChatRequest, response: ChatResponse) -> bool:
    if not (response.text or response.tool_calls):
        return False
    if response.finish_reason == "length":
        asked = request.params.get("max_tokens") or request.params.get("max_completion_tokens")
        return bool(asked)
    return True


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
