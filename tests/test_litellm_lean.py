"""Tests for harness/litellm_lean.py: what our litellm calls skip, and that they skip it only
while nobody else listens to litellm (and only for our calls)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import FAKE_KEY, KEY_ENV

from harness import litellm_lean
from harness.fakeserver import FakeServer
from harness.providers import litellm_module


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def call(litellm: Any, server: FakeServer, text: str = "hello") -> Any:
    return litellm.acompletion(
        model="hosted_vllm/fake-model",
        api_base=server.url,
        api_key=FAKE_KEY,
        messages=[{"role": "user", "content": f"{text}\nREPLY: {text} back"}],
        num_retries=0,
        max_retries=0,
    )


async def test_our_calls_skip_response_metadata_others_keep_it(fake_server: FakeServer) -> None:
    litellm = litellm_module()
    ours = await litellm_lean.call(litellm, lambda: call(litellm, fake_server), timeout_s=30)
    theirs = await call(litellm, fake_server, "again")
    assert ours.choices[0].message.content == "hello back"
    assert theirs.choices[0].message.content == "again back"
    assert "api_base" not in (ours._hidden_params or {})
    assert theirs._hidden_params.get("api_base")  # litellm as it ships, outside our calls


async def test_with_a_litellm_callback_registered_our_calls_are_not_trimmed(
    fake_server: FakeServer,
) -> None:
    litellm = litellm_module()
    from litellm.integrations.custom_logger import CustomLogger

    litellm.callbacks = [CustomLogger()]
    try:
        assert not litellm_lean.allowed(litellm)
        ours = await litellm_lean.call(litellm, lambda: call(litellm, fake_server), timeout_s=30)
    finally:
        litellm.callbacks = []
    assert ours._hidden_params.get("api_base")


def test_remembered_model_checks_follow_changes_to_the_model_map() -> None:
    litellm = litellm_module()
    from litellm import main

    check = main.responses_api_bridge_check
    assert getattr(check, "_evals_lean", False)
    token = litellm_lean._LEAN_CALL.set(True)
    try:
        before, _ = check("evals-test-model", "openai")
        assert before.get("mode") != "responses"
        litellm.register_model({"openai/evals-test-model": {"mode": "responses"}})
        after, _ = check("evals-test-model", "openai")
        assert after.get("mode") == "responses"  # the map changed: asked again
        after["mode"] = "mutated"
        assert check("evals-test-model", "openai")[0]["mode"] == "responses"  # a copy each time
    finally:
        litellm_lean._LEAN_CALL.reset(token)
        litellm.model_cost.pop("openai/evals-test-model", None)


def test_provider_values_read_fast_are_the_same_values() -> None:
    litellm_module()
    from litellm.types.utils import LlmProviders

    assert [p.value for p in LlmProviders] == [p._value_ for p in LlmProviders]
    assert LlmProviders("hosted_vllm") is LlmProviders.HOSTED_VLLM
    assert LlmProviders.OPENAI.value == "openai"


def test_our_calls_still_keep_cookies_a_response_sets() -> None:
    import httpx

    litellm_module()  # puts the trims in place
    assert getattr(httpx.Cookies.extract_cookies, "_evals_lean", False)
    request = httpx.Request("GET", "https://provider.test/v1/chat/completions")
    setting = httpx.Response(200, headers={"Set-Cookie": "session=s1; Path=/"}, request=request)
    cookies = httpx.Cookies()
    token = litellm_lean._LEAN_CALL.set(True)
    try:
        cookies.extract_cookies(setting)
        cookies.extract_cookies(httpx.Response(200, request=request))  # sets none: skipped
    finally:
        litellm_lean._LEAN_CALL.reset(token)
    assert dict(cookies) == {"session": "s1"}
