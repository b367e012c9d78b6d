"""A measurement aid for `bench_engine.py --without-litellm`, never used by the product.

Put on PYTHONPATH, it swaps `litellm.acompletion` for one bare aiohttp POST to the model's
api_base (the response wrapped in the few attributes `harness.providers` reads), in every
process of a run. litellm is still imported, so start-up is unchanged; everything else (our
rendering, retries, scoring, store, tracing, worker processes) runs as usual. What the run
then takes is what the harness costs apart from litellm's per-call work. Only plain chat
requests are served (tools and response_format are dropped), and an HTTP error raises
aiohttp's exception, not litellm's: a benchmark of successful calls only.
"""

import importlib.abc
import importlib.util
import json
import sys
from types import SimpleNamespace
from typing import Any

_SESSIONS: dict[Any, Any] = {}  # one per event loop


async def _acompletion(
    *, model: str, messages: list[Any], api_base: str, api_key: str = "", **params: Any
) -> Any:
    import asyncio

    import aiohttp

    loop = asyncio.get_running_loop()
    session = _SESSIONS.get(loop)
    if session is None:  # no connection cap of its own: the run's concurrency is the limit
        session = _SESSIONS[loop] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    body = {"model": model.split("/", 1)[-1], "messages": messages}
    body.update({k: v for k, v in params.items() if k in ("temperature", "max_tokens", "seed")})
    async with session.post(
        f"{api_base.rstrip('/')}/chat/completions",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    ) as reply:
        reply.raise_for_status()
        data = json.loads(await reply.read())
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return SimpleNamespace(
        choices=[
            SimpleNamespace(
                message=SimpleNamespace(content=choice["message"].get("content"), tool_calls=None),
                finish_reason=choice.get("finish_reason"),
            )
        ],
        usage=SimpleNamespace(
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        ),
        model=data.get("model"),
    )


def _patch(providers: Any) -> None:
    original = providers.litellm_module

    def litellm_module() -> Any:
        litellm = original()
        litellm.acompletion = _acompletion
        return litellm

    providers.litellm_module = litellm_module


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "harness.providers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run_module(module)
            _patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _Finder())
