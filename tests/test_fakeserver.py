"""Tests for harness/fakeserver.py, driven through openai's client and litellm's real HTTP path."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import litellm
import openai
import pytest

from harness.fakeserver import (
    FakeServer,
    Faults,
    Reply,
    ThreadedFakeServer,
    echo_or_script,
    fake_embedding,
    request_key,
)

litellm.suppress_debug_info = True

FakeServerFactory = Callable[..., Awaitable[FakeServer]]
API_KEY = "sk-fake-test"


async def complete(
    server: FakeServer, content: str, model: str = "fake-model", **kwargs: Any
) -> Any:
    messages = kwargs.pop("messages", [{"role": "user", "content": content}])
    return await litellm.acompletion(
        model=f"openai/{model}",
        messages=messages,
        api_base=server.url,
        api_key=API_KEY,
        num_retries=0,
        max_retries=0,
        **kwargs,
    )


def provider_headers(error: Exception) -> httpx.Headers | None:
    """The real HTTP response headers of a litellm exception (``error.response`` lacks them)."""
    return getattr(error, "litellm_response_headers", None)


async def outcome_of(server: FakeServer, content: str, **kwargs: Any) -> str:
    """'ok' or the litellm exception class name."""
    try:
        await complete(server, content, **kwargs)
    except Exception as exc:
        return type(exc).__name__
    return "ok"


# ----- replies


async def test_echo_through_openai_client(fake_server: FakeServer) -> None:
    client = openai.AsyncOpenAI(base_url=fake_server.url, api_key=API_KEY, max_retries=0)
    response = await client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hello there"}]
    )
    await client.close()
    assert response.choices[0].message.content == "hello there"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "fake-model"
    assert response.id.startswith("chatcmpl-")
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2, 2)
    assert response.usage.total_tokens == 4


async def test_echo_and_usage_through_litellm(fake_server: FakeServer) -> None:
    response = await complete(
        fake_server,
        "",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "say hi please"}]},
        ],
    )
    assert response.choices[0].message.content == "say hi please"
    assert response.usage.prompt_tokens == 5
    assert response.usage.completion_tokens == 3
    assert response.usage.total_tokens == 8


async def test_script_reply_and_reply_line(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(script={"What is the capital of France?": "Paris"})
    scripted = await complete(server, "What is the capital of France?")
    assert scripted.choices[0].message.content == "Paris"
    controlled = await complete(
        server,
        "",
        messages=[
            {"role": "system", "content": 'Answer in JSON.\nREPLY: {"score": 1}'},
            {"role": "user", "content": "Grade this."},
        ],
    )
    assert controlled.choices[0].message.content == '{"score": 1}'


def test_echo_or_script_precedence() -> None:
    body = {"messages": [{"role": "user", "content": "q\nREPLY: from line"}]}
    assert echo_or_script(body).content == "from line"
    assert echo_or_script(body, {"q\nREPLY: from line": "scripted"}).content == "scripted"
    assert echo_or_script({"messages": [{"role": "user", "content": "hi"}]}).content == "hi"
    assert echo_or_script({"messages": []}).content == ""


async def test_custom_responders(fake_server_factory: FakeServerFactory) -> None:
    def fixed(body: dict[str, Any]) -> Reply:
        return Reply(
            content="fixed", prompt_tokens=100, completion_tokens=7, finish_reason="length"
        )

    async def shout(body: dict[str, Any]) -> str:
        return str(body["messages"][-1]["content"]).upper()

    server = await fake_server_factory(responder=fixed)
    response = await complete(server, "anything")
    assert response.choices[0].message.content == "fixed"
    assert response.choices[0].finish_reason == "length"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (100, 7)
    server.responder = shout
    assert (await complete(server, "quiet")).choices[0].message.content == "QUIET"


async def test_broken_responder_is_reported(fake_server_factory: FakeServerFactory) -> None:
    def broken(body: dict[str, Any]) -> Reply:
        raise KeyError("missing")

    server = await fake_server_factory(responder=broken)
    with pytest.raises(litellm.InternalServerError, match="fake responder raised KeyError"):
        await complete(server, "x")
    assert server.stats.outcomes["error"] == 1


async def test_streaming_through_litellm(fake_server: FakeServer) -> None:
    stream = await complete(
        fake_server, "streamed words", stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "streamed words"
    assert any(getattr(chunk, "usage", None) for chunk in chunks)


async def test_models_and_embeddings(fake_server: FakeServer) -> None:
    client = openai.AsyncOpenAI(base_url=fake_server.url, api_key=API_KEY, max_retries=0)
    models = await client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    # openai's client asks for base64 by default and decodes it
    embedded = await client.embeddings.create(model="fake-embed", input=["a", "b"])
    await client.close()
    assert [len(item.embedding) for item in embedded.data] == [8, 8]
    assert embedded.data[0].embedding == pytest.approx(fake_embedding("a"), rel=1e-6)
    assert embedded.data[0].embedding != embedded.data[1].embedding

    via_litellm = await litellm.aembedding(
        model="openai/fake-embed", input=["a"], api_base=fake_server.url, api_key=API_KEY
    )
    assert via_litellm.data[0]["embedding"] == pytest.approx(fake_embedding("a"))
    assert fake_embedding("a") == fake_embedding("a")
    assert sum(v * v for v in fake_embedding("a")) == pytest.approx(1.0)


async def test_embeddings_float_and_base64_agree(fake_server: FakeServer) -> None:
    async with httpx.AsyncClient(base_url=fake_server.url) as http:
        plain = (await http.post("/embeddings", json={"model": "m", "input": "x"})).json()
        packed = await http.post(
            "/embeddings", json={"model": "m", "input": "x", "encoding_format": "base64"}
        )
    decoded = struct.unpack("<8f", base64.b64decode(packed.json()["data"][0]["embedding"]))
    assert list(decoded) == pytest.approx(plain["data"][0]["embedding"], rel=1e-6)


# ----- what the client sent


async def test_requests_are_recorded_without_secrets(fake_server: FakeServer) -> None:
    await complete(fake_server, "hello", temperature=0.2, max_tokens=16, seed=3)
    recorded = fake_server.requests[-1]
    assert recorded.path == "/v1/chat/completions"
    assert recorded.body["temperature"] == 0.2
    assert recorded.body["max_tokens"] == 16
    assert recorded.body["model"] == "fake-model"
    assert recorded.auth_present is True
    assert "authorization" in recorded.header_names
    assert API_KEY not in json.dumps(recorded.body)
    assert API_KEY not in repr(recorded)
    assert recorded.key == request_key("fake-model", recorded.body["messages"])

    async with httpx.AsyncClient(base_url=fake_server.url) as http:
        await http.post("/chat/completions", json={"model": "m", "messages": []})
        bad = await http.post("/chat/completions", content=b"not json")
    assert fake_server.requests[-2].auth_present is False
    assert bad.status_code == 400
    assert fake_server.stats.total == 3


async def test_recorded_requests_are_bounded(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(max_recorded_requests=3)
    for index in range(5):
        await complete(server, f"message {index}")
    assert [r.body["messages"][0]["content"] for r in server.requests] == [
        "message 2",
        "message 3",
        "message 4",
    ]
    assert server.stats.total == 5
    server.reset_stats()
    assert (server.stats.total, server.requests, server.final_outcome_by_key()) == (0, [], {})


# ----- faults, as litellm's callers see them


async def test_500_is_internal_server_error(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(rate_500=1.0))
    with pytest.raises(litellm.InternalServerError) as caught:
        await complete(server, "x")
    assert caught.value.status_code == 500
    assert server.stats.outcomes["500"] == 1


async def test_429_is_rate_limit_error_with_retry_after(
    fake_server_factory: FakeServerFactory,
) -> None:
    server = await fake_server_factory(faults=Faults(rate_429=1.0, retry_after_s=2))
    with pytest.raises(litellm.RateLimitError) as caught:
        await complete(server, "x")
    error = caught.value
    assert error.status_code == 429
    # litellm rebuilds `error.response` without the provider's headers; the real response
    # headers (an httpx.Headers, case-insensitive) are on `litellm_response_headers`.
    assert "retry-after" not in error.response.headers
    headers = provider_headers(error)
    assert headers is not None
    assert headers["Retry-After"] == "2"
    assert litellm.utils._get_retry_after_from_exception_header(headers) == 2

    server.faults = Faults(rate_429=1.0, retry_after_s=None, retry_after_ms=250)
    with pytest.raises(litellm.RateLimitError) as caught:
        await complete(server, "x")
    headers = provider_headers(caught.value)
    assert headers is not None
    assert headers["retry-after-ms"] == "250"
    assert "retry-after" not in headers


async def test_429_through_openai_client_exposes_headers(
    fake_server_factory: FakeServerFactory,
) -> None:
    server = await fake_server_factory(faults=Faults(rate_429=1.0))
    client = openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x"}]
        )
    await client.close()
    assert caught.value.response.headers["retry-after"] == "1"


async def test_hang_is_timeout(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(rate_hang=1.0, hang_s=5))
    with pytest.raises(litellm.Timeout):
        await complete(server, "x", timeout=0.3)
    assert server.stats.outcomes["hang"] == 1


async def test_slow_model_is_timeout(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(hang_s=5))
    with pytest.raises(litellm.Timeout):
        await complete(server, "x", model="fake-slow", timeout=0.3)
    server.faults.hang_s = 0.01
    assert (await complete(server, "eventually", model="fake-slow")).choices[0].message.content


async def test_dropped_connection(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(rate_drop=1.0))
    # litellm's OpenAI provider wraps openai.APIConnectionError as a 500 OpenAIError, so the
    # caller sees InternalServerError("... Connection error."), not litellm.APIConnectionError.
    with pytest.raises(litellm.InternalServerError, match="Connection error") as caught:
        await complete(server, "x")
    assert provider_headers(caught.value) is None
    client = openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x"}]
        )
    await client.close()
    assert server.stats.outcomes["drop"] == 2


async def test_invalid_json(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(rate_invalid_json=1.0))
    with pytest.raises(litellm.InternalServerError, match="Unterminated string"):
        await complete(server, "x")
    assert server.stats.outcomes["invalid_json"] == 1


@pytest.mark.parametrize(
    ("model", "content", "error_class", "status"),
    [
        ("fake-400", "x", litellm.BadRequestError, 400),
        ("fake-401", "x", litellm.AuthenticationError, 401),
        ("fake-404", "x", litellm.NotFoundError, 404),
        ("fake-429", "x", litellm.RateLimitError, 429),
        ("fake-503", "x", litellm.ServiceUnavailableError, 503),
        ("fake-model", "big prompt CONTEXT_TOO_LONG", litellm.ContextWindowExceededError, 400),
    ],
)
async def test_status_on_demand(
    fake_server: FakeServer,
    model: str,
    content: str,
    error_class: type[openai.APIStatusError],
    status: int,
) -> None:
    with pytest.raises(error_class) as caught:
        await complete(fake_server, content, model=model)
    assert caught.value.status_code == status
    if error_class is litellm.ContextWindowExceededError:
        assert isinstance(caught.value, litellm.BadRequestError)


# ----- reproducibility and retries


async def test_seeded_fault_sequence_is_reproducible(
    fake_server_factory: FakeServerFactory,
) -> None:
    async def sequence(seed: int) -> list[str]:
        faults = Faults(rate_500=0.3, rate_429=0.2, rate_invalid_json=0.1)
        server = await fake_server_factory(faults=faults, seed=seed)
        return [await outcome_of(server, f"q{i}") for i in range(30)]

    first, again, other = await sequence(7), await sequence(7), await sequence(8)
    assert first == again
    assert first != other
    assert {"ok", "InternalServerError", "RateLimitError"} <= set(first)


async def test_keyed_draws_ignore_arrival_order(fake_server_factory: FakeServerFactory) -> None:
    prompts = [f"q{i}" for i in range(40)]

    async def finals(order: list[str]) -> dict[str, str]:
        server = await fake_server_factory(
            faults=Faults(rate_500=0.5), seed=3, fault_draw="keyed", jitter_ms=5
        )
        await asyncio.gather(*(outcome_of(server, p) for p in order))
        return server.final_outcome_by_key()

    forward = await finals(prompts)
    assert forward == await finals(prompts[::-1])
    assert set(forward.values()) == {"ok", "500"}


async def test_fail_first_n_per_distinct_request(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(faults=Faults(fail_first_n=2))
    for prompt in ("a", "b"):
        results = [await outcome_of(server, prompt) for _ in range(3)]
        assert results == ["InternalServerError", "InternalServerError", "ok"]
    assert await outcome_of(server, "never seen") == "InternalServerError"
    finals = server.final_outcome_by_key()
    assert sorted(finals.values()) == ["500", "ok", "ok"]
    assert (
        server.attempts_by_key()[request_key("fake-model", [{"role": "user", "content": "a"}])] == 3
    )
    assert [outcome for _, outcome in server.stats.log][:3] == ["500", "500", "ok"]


async def test_openai_client_retries_recover(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(
        faults=Faults(
            fail_first_n=1, fail_first_outcome="429", retry_after_s=None, retry_after_ms=10
        )
    )
    client = openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY, max_retries=2)
    response = await client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "retry me"}]
    )
    await client.close()
    assert response.choices[0].message.content == "retry me"
    assert [outcome for _, outcome in server.stats.log] == ["429", "ok"]


def test_fault_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="sum to <= 1"):
        Faults(rate_500=0.6, rate_429=0.6)
    with pytest.raises(ValueError):
        Faults(rate_drop=-0.1)


async def test_stop_does_not_wait_for_hanging_requests(
    fake_server_factory: FakeServerFactory,
) -> None:
    server = await fake_server_factory(faults=Faults(rate_hang=1.0, hang_s=60))
    pending = asyncio.create_task(outcome_of(server, "hangs", timeout=30))
    while server.stats.total == 0:
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop()
    assert loop.time() - started < 5
    assert await pending == "InternalServerError"  # the server closed the connection


# ----- agents


async def test_tool_script_turns(fake_server_factory: FakeServerFactory) -> None:
    server = await fake_server_factory(
        tool_script=[
            Reply.tool_call("get_weather", {"city": "Paris"}),
            Reply(content="It is sunny in Paris."),
        ]
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    first = await complete(server, "", messages=messages, tools=tools)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id

    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = await complete(server, "", messages=messages, tools=tools)
    assert final.choices[0].message.content == "It is sunny in Paris."
    assert not final.choices[0].message.tool_calls
    # a request without tools (e.g. a judge) still gets the plain responder
    assert (await complete(server, "judge me")).choices[0].message.content == "judge me"


# ----- load, threads, command line


async def test_throughput_smoke(fake_server: FakeServer) -> None:
    gate = asyncio.Semaphore(50)

    async def one(index: int) -> str:
        async with gate:
            response = await complete(fake_server, f"request {index}")
            return str(response.choices[0].message.content)

    replies = await asyncio.gather(*(one(i) for i in range(1000)))
    assert replies[999] == "request 999"
    assert fake_server.stats.outcomes["ok"] == 1000


def test_thread_fixture_serves_sync_clients(fake_server_thread: ThreadedFakeServer) -> None:
    fake_server_thread.reset_stats()
    client = openai.OpenAI(base_url=fake_server_thread.url, api_key=API_KEY, max_retries=0)
    response = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "from a thread"}]
    )
    client.close()
    assert response.choices[0].message.content == "from a thread"
    assert fake_server_thread.url == f"http://127.0.0.1:{fake_server_thread.port}/v1"
    assert fake_server_thread.stats.total == 1
    assert fake_server_thread.requests[0].auth_present


def test_run_in_thread_start_and_stop() -> None:
    with FakeServer(faults=Faults(rate_500=1.0)).run_in_thread() as handle:
        reply = httpx.post(f"{handle.url}/chat/completions", json={"model": "m", "messages": []})
        assert reply.status_code == 500
        assert reply.json()["error"]["type"] == "server_error"
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{handle.url}/chat/completions", json={"model": "m", "messages": []})
    handle.stop()  # idempotent


def test_command_line_server(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"ping": "pong"}))
    flags = ["--latency-ms", "1", "--seed", "5", "--fault-rate-500", "0", "--retry-after-s", "-1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.fakeserver", *flags, "--script", str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        reply = httpx.post(
            f"{url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "ping"}]},
        )
        assert reply.json()["choices"][0]["message"]["content"] == "pong"
        base = url.removesuffix("/v1")
        assert httpx.get(f"{base}/fake/stats").json()["outcomes"] == {"ok": 1}
        process.terminate()
        tail, _ = process.communicate(timeout=10)
        assert json.loads(tail.strip().splitlines()[-1])["total"] == 1
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
