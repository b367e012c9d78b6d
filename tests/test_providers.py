"""Tests for harness/providers.py: retries, Retry-After, timeouts, retry budget, error kinds,
tokens and cost, through litellm's real HTTP path to the fake server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from helpers import FAKE_KEY, KEY_ENV, MODEL_ID

from harness.config import ModelConfig, Price
from harness.errors import ProviderCallError
from harness.fakeserver import FakeServer, Faults
from harness.providers import ChatRequest, ChatResponse, ModelClient, classify, litellm_module

FakeServerFactory = Callable[..., Awaitable[FakeServer]]


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


class TimedServer(FakeServer):
    """A fake server that also notes when each POST arrived, and can vary Retry-After."""

    def __init__(self, *, retry_after_seq: list[float] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.arrivals: list[float] = []
        self.retry_after_seq = list(retry_after_seq or [])

    def _record(self, request: web.Request, body: dict[str, Any], key: str, outcome: str) -> None:
        self.arrivals.append(time.monotonic())
        super()._record(request, body, key, outcome)

    def _retry_headers(self) -> dict[str, str]:
        if self.retry_after_seq:
            return {"Retry-After": str(self.retry_after_seq.pop(0))}
        return super()._retry_headers()


def model_config(server: FakeServer, model: str = MODEL_ID, **extra: Any) -> ModelConfig:
    options: dict[str, Any] = {
        "id": model,
        "api_base": server.url,
        "api_key_env": KEY_ENV,
        "backoff_s": 0.01,
        "timeout_s": 5.0,
        "max_attempts": 4,
    }
    options.update(extra)
    return ModelConfig(**options)


def request(text: str = "hello world", **params: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], params=params)


async def fail_of(client: ModelClient, req: ChatRequest) -> ProviderCallError:
    with pytest.raises(ProviderCallError) as info:
        await client.complete(req)
    return info.value


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcome, extra",
    [
        ("500", {}),
        ("429", {"retry_after_ms": 10, "retry_after_s": None}),
        ("hang", {"hang_s": 5.0}),
        ("drop", {}),
        ("invalid_json", {}),
    ],
)
async def test_transient_failures_are_retried_until_success(
    fake_server_factory: FakeServerFactory, outcome: str, extra: dict[str, Any]
) -> None:
    server = await fake_server_factory(
        faults=Faults(fail_first_n=2, fail_first_outcome=outcome, **extra)  # type: ignore[arg-type]
    )
    client = ModelClient(model_config(server, timeout_s=0.4))
    response = await client.complete(request("REPLY: fine"))
    assert response.text == "fine"
    assert response.attempts == 3
    assert server.stats.total == 3
    assert server.stats.outcomes[outcome] == 2
    assert server.stats.outcomes["ok"] == 1
    assert len(response.retry_waits_s) == 2


async def test_backoff_is_exponential_with_bounded_jitter(
    fake_server_factory: FakeServerFactory,
) -> None:
    server = await fake_server_factory(faults=Faults(fail_first_n=3, fail_first_outcome="500"))
    client = ModelClient(model_config(server, backoff_s=0.02, max_attempts=5))
    response = await client.complete(request())
    assert response.attempts == 4
    for index, wait in enumerate(response.retry_waits_s):
        base = 0.02 * 2**index
        assert 0.5 * base <= wait <= 1.5 * base, (index, wait)


async def test_retry_after_is_honoured_on_every_attempt() -> None:
    # Different Retry-After values on each 429; the backoff is far larger, so waiting the
    # header's value (not the backoff, not the first header's value) is what we measure.
    waits = [0.15, 0.05, 0.3]
    server = TimedServer(
        retry_after_seq=list(waits), faults=Faults(fail_first_n=3, fail_first_outcome="429")
    )
    async with server:
        client = ModelClient(model_config(server, backoff_s=5.0, max_attempts=5))
        started = time.monotonic()
        response = await client.complete(request())
        elapsed = time.monotonic() - started
    assert response.attempts == 4
    assert response.retry_waits_s == waits
    gaps = [b - a for a, b in zip(server.arrivals, server.arrivals[1:], strict=False)]
    assert len(gaps) == 3
    for gap, asked in zip(gaps, waits, strict=True):
        assert gap >= asked - 0.005, (gaps, waits)
    assert elapsed < 3.0  # never the 5 s backoff


async def test_retry_after_seconds_header(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(
        faults=Faults(fail_first_n=2, fail_first_outcome="429", retry_after_s=0.2)
    )
    client = ModelClient(model_config(server, backoff_s=0.001))
    started = time.monotonic()
    response = await client.complete(request())
    assert time.monotonic() - started >= 0.4 - 0.01
    assert response.retry_waits_s == [0.2, 0.2]


@pytest.mark.parametrize(
    "model, text, kind, status",
    [
        ("openai/fake-400", "x", "bad_request", 400),
        ("openai/fake-401", "x", "auth", 401),
        ("openai/fake-403", "x", "permission", 403),
        ("openai/fake-404", "x", "not_found", 404),
        (MODEL_ID, "CONTEXT_TOO_LONG", "context_length", 400),
    ],
)
async def test_no_retry_on_permanent_errors(
    fake_server_factory: FakeServerFactory, model: str, text: str, kind: str, status: int
) -> None:
    server = await fake_server_factory()
    client = ModelClient(model_config(server, model=model, max_attempts=5))
    error = await fail_of(client, request(text))
    assert server.stats.total == 1  # exactly one request reached the server
    assert error.kind == kind
    assert error.status == status
    assert "after 1 attempt(s)" in str(error)


@pytest.mark.parametrize(
    "outcome, kind",
    [
        ("500", "server_error"),
        ("429", "rate_limit"),
        ("hang", "timeout"),
        ("drop", "connection"),
        ("invalid_json", "invalid_response"),
    ],
)
async def test_final_failure_after_max_attempts(
    fake_server_factory: FakeServerFactory, outcome: str, kind: str
) -> None:
    faults = Faults(
        fail_first_n=100,
        fail_first_outcome=outcome,  # type: ignore[arg-type]
        retry_after_s=None,
        retry_after_ms=1,
        hang_s=5.0,
    )
    server = await fake_server_factory(faults=faults)
    client = ModelClient(model_config(server, max_attempts=3, timeout_s=0.3))
    error = await fail_of(client, request())
    assert server.stats.total == 3
    assert error.kind == kind, str(error)
    assert "after 3 attempt(s)" in str(error)


async def test_retry_budget_bounds_time(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(rate_500=1.0))
    client = ModelClient(model_config(server, max_attempts=20, backoff_s=0.1, retry_budget_s=0.5))
    started = time.monotonic()
    error = await fail_of(client, request())
    elapsed = time.monotonic() - started
    assert error.kind == "server_error"
    assert elapsed < 0.5 + 0.5
    assert 2 <= server.stats.total < 20


async def test_retry_budget_bounds_hangs(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(rate_hang=1.0, hang_s=10.0))
    client = ModelClient(model_config(server, max_attempts=20, timeout_s=0.3, retry_budget_s=0.8))
    started = time.monotonic()
    error = await fail_of(client, request())
    elapsed = time.monotonic() - started
    assert error.kind == "timeout"
    # Budget plus at most one attempt's timeout (plus scheduling slack).
    assert elapsed < 0.8 + 0.3 + 0.7
    assert server.stats.total < 20


async def test_timeout_bounds_a_hang(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(rate_hang=1.0, hang_s=10.0))
    client = ModelClient(model_config(server, max_attempts=1, timeout_s=0.3))
    started = time.monotonic()
    error = await fail_of(client, request())
    assert error.kind == "timeout"
    assert time.monotonic() - started < 2.0


async def test_a_cancelled_call_is_not_retried(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(rate_hang=1.0, hang_s=10.0))
    client = ModelClient(model_config(server, timeout_s=5.0, max_attempts=5))
    task = asyncio.create_task(client.complete(request()))
    while server.stats.total < 1:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert server.stats.total == 1


def test_classify_maps_status_codes_without_litellm_classes() -> None:
    class Weird(Exception):
        status_code: int

    def with_status(code: int) -> Weird:
        exc = Weird("x")
        exc.status_code = code
        return exc

    litellm_module()
    assert classify(with_status(403)).kind == "permission"
    assert not classify(with_status(403)).retryable
    assert classify(with_status(502)).retryable
    assert classify(with_status(409)).retryable
    assert classify(with_status(429)).retryable
    assert classify(with_status(429)).kind == "rate_limit"
    assert not classify(with_status(422)).retryable
    assert classify(TimeoutError()).kind == "timeout"


# --- tokens and cost -------------------------------------------------------------------------


async def test_tokens_are_counted(fake_server: FakeServer) -> None:
    client = ModelClient(model_config(fake_server))
    response = await client.complete(request("one two three\nREPLY: a b"))
    assert response.text == "a b"
    # The fake server counts words: 6 in the prompt, 2 in the reply.
    assert (response.input_tokens, response.output_tokens) == (6, 2)
    assert response.latency_ms > 0
    assert response.cached is False


async def test_unknown_model_cost_is_none_not_zero(fake_server: FakeServer) -> None:
    client = ModelClient(model_config(fake_server))
    response = await client.complete(request())
    assert response.cost_usd is None


async def test_price_override(fake_server: FakeServer) -> None:
    price = Price(input_per_million=3.0, output_per_million=15.0)
    client = ModelClient(model_config(fake_server, price=price))
    response = await client.complete(request("one two three\nREPLY: a b"))
    assert response.cost_usd == pytest.approx((6 * 3.0 + 2 * 15.0) / 1e6)


async def test_known_model_cost_comes_from_the_bundled_cost_map(fake_server: FakeServer) -> None:
    client = ModelClient(model_config(fake_server, model="openai/gpt-4o-mini"))
    response = await client.complete(request("one two three\nREPLY: a b"))
    prompt_cost, completion_cost = litellm_module().cost_per_token(
        model="openai/gpt-4o-mini", prompt_tokens=6, completion_tokens=2
    )
    assert response.cost_usd is not None and response.cost_usd > 0
    assert response.cost_usd == pytest.approx(prompt_cost + completion_cost)


def test_local_models_cost_zero() -> None:
    client = ModelClient(ModelConfig(id="local/smollm2"))
    assert client._cost(100, 20) == 0.0
    assert client.concurrency == 1  # one in-process model runs one call at a time


async def test_api_key_is_sent_from_the_environment(fake_server: FakeServer) -> None:
    await ModelClient(model_config(fake_server)).complete(request())
    assert fake_server.requests[-1].auth_present


async def test_on_call_sees_successes_and_failures(fake_server: FakeServer) -> None:
    seen: list[tuple[ChatResponse | None, BaseException | None]] = []
    client = ModelClient(
        model_config(fake_server), on_call=lambda req, resp, exc: seen.append((resp, exc))
    )
    await client.complete(request())
    fake_server.faults = Faults(rate_500=1.0)
    with pytest.raises(ProviderCallError):
        await client.complete(request("again"))
    assert seen[0][0] is not None and seen[0][1] is None
    assert seen[1][0] is None and seen[1][1] is not None


# --- litellm's per-call extras ----------------------------


async def test_a_registered_litellm_callback_still_sees_every_call_with_its_cost(
    fake_server: FakeServer,
) -> None:
    # We skip litellm's own pricing and logging only while nobody listens to them.
    litellm = litellm_module()
    from litellm.integrations.custom_logger import CustomLogger

    seen: list[Any] = []

    class Listener(CustomLogger):  # type: ignore[misc]
        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
            seen.append(kwargs.get("response_cost"))

    listener = Listener()
    litellm.callbacks = [listener]
    try:
        client = ModelClient(model_config(fake_server, model="openai/gpt-4o-mini"))
        await client.complete(request("one two three\nREPLY: a b"))
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
    finally:
        litellm.callbacks = []
    assert len(seen) == 1 and seen[0] is not None and seen[0] > 0
