"""What litellm does per call that our calls do not need, trimmed.

litellm spends ~2-3 ms of CPU on each call (at concurrency 50 that, not the network, bounds a
run). Our calls skip the parts whose results nobody reads: pricing (we price calls ourselves),
logging (we trace calls ourselves), response metadata (`_hidden_params`), repeated model-info
lookups, and cookie handling of responses that set none; and litellm's request set-up runs on
the event loop instead of in a thread.
Each trim applies only to our calls (a context variable) and only while no litellm callback is
registered, so a user's own litellm logging (Langfuse, ...) still sees every call, priced, as
litellm ships it. The trims are tied to the pinned litellm (1.106.2): any internal that is
missing simply leaves that trim off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
import weakref
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Any, TypeVar

T = TypeVar("T")

# True while one of our calls is inside litellm and nobody else listens to litellm's logging.
_LEAN_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("evals_lean_call", default=False)
_INTERNAL_CALL: contextvars.ContextVar[bool] | None = None
_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
    "input_callback",
)
# Model-info lookups remembered per (model, provider, api_base, cost map): a few per run.
_BRIDGE_MEMO_SIZE = 256


def install(litellm: Any) -> None:
    """Put the trims in place (once per process; idempotent)."""
    global _INTERNAL_CALL
    try:
        from litellm._internal_context import is_internal_call
    except ImportError:
        return
    _INTERNAL_CALL = is_internal_call
    _skip_pricing()
    _skip_response_metadata()
    _remember_bridge_checks(litellm)
    _fast_provider_values()
    _skip_cookieless_extraction()


def _lean_only(owner: Any, name: str, make: Callable[[Any], Callable[..., Any]]) -> None:
    """Replace `owner.name` by `make(original)` once; a missing internal leaves it as it is."""
    original = getattr(owner, name, None)
    if original is None or getattr(original, "_evals_lean", False):
        return
    replacement = make(original)
    replacement._evals_lean = True  # type: ignore[attr-defined]
    setattr(owner, name, replacement)


def _skip_pricing() -> None:
    """litellm prices each response (a cost-map search, ~1 ms of CPU for a model the map does
    not know); we price calls ourselves (`providers._cost`)."""
    try:
        from litellm.litellm_core_utils.litellm_logging import Logging
    except ImportError:
        return
    original = getattr(Logging, "response_cost_calculator", None)
    _lean_only(Logging, "response_cost_calculator", _nothing_on_our_calls)
    if getattr(Logging, "_response_cost_calculator", None) is original:
        Logging._response_cost_calculator = Logging.response_cost_calculator


def _skip_response_metadata() -> None:
    """litellm fills each response's `_hidden_params` (api base, call id, timings; it builds a
    pydantic model of the call's params for the api base alone): read by its proxy and logging,
    never by us."""
    try:
        from litellm import utils
    except ImportError:
        return

    _lean_only(utils, "update_response_metadata", _nothing_on_our_calls)


def _nothing_on_our_calls(original: Callable[..., Any]) -> Callable[..., Any]:
    """`original` as it is, except on our calls, where it does nothing and returns None."""

    @functools.wraps(original)
    def skipped(*args: Any, **kwargs: Any) -> Any:
        if _LEAN_CALL.get():
            return None
        return original(*args, **kwargs)

    return skipped


def _remember_bridge_checks(litellm: Any) -> None:
    """Each call looks the model up in litellm's model map to decide whether it goes to the
    Responses API: a search through litellm's fallback name patterns for a model the map does
    not know (a self-hosted one). The answer depends only on the model, provider, api base and
    the map itself, so our calls remember it (calls with tools, web search or reasoning
    options, which the answer also depends on, always ask)."""
    try:
        from litellm import main
    except ImportError:
        return
    memo: dict[tuple[Any, ...], tuple[dict[str, Any], str]] = {}

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def responses_api_bridge_check(
            model: str,
            custom_llm_provider: str,
            web_search_options: Any = None,
            tools: Any = None,
            reasoning_effort: Any = None,
            reasoning_summary: Any = None,
            api_base: str | None = None,
        ) -> Any:
            plain = web_search_options is None and not tools and reasoning_effort is None
            if not (_LEAN_CALL.get() and plain and reasoning_summary is None):
                return original(
                    model,
                    custom_llm_provider,
                    web_search_options,
                    tools,
                    reasoning_effort,
                    reasoning_summary,
                    api_base,
                )
            cost_map = litellm.model_cost
            key = (
                model,
                custom_llm_provider,
                api_base,
                litellm.route_all_chat_openai_to_responses,
                id(cost_map),
                len(cost_map),
            )
            known = memo.get(key)
            if known is None:
                if len(memo) >= _BRIDGE_MEMO_SIZE:
                    memo.clear()
                info, checked = original(model, custom_llm_provider, api_base=api_base)
                known = memo[key] = (dict(info), checked)
            return dict(known[0]), known[1]

        return responses_api_bridge_check

    _lean_only(main, "responses_api_bridge_check", make)


def _fast_provider_values() -> None:
    """litellm tests a provider name against `[p.value for p in LlmProviders]` (166 members)
    twice per call; an enum member's `.value` goes through two Python-level calls. Reading the
    member's stored value directly gives the same values at half the cost, for every caller."""
    try:
        from litellm.types.utils import LlmProviders
    except ImportError:
        return
    if "value" not in LlmProviders.__dict__:
        type.__setattr__(LlmProviders, "value", property(attrgetter("_value_")))


def _skip_cookieless_extraction() -> None:
    """httpx (litellm's HTTP client) hands every response to `http.cookiejar`, building two
    adapter objects and scanning headers (~5% of a call's CPU), even when the response sets
    no cookie, where that does nothing. On our calls such a response skips it."""
    try:
        import httpx
    except ImportError:
        return

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def extract_cookies(self: Any, response: Any) -> None:
            headers = response.headers  # case-insensitive
            if _LEAN_CALL.get() and "set-cookie" not in headers and "set-cookie2" not in headers:
                return
            original(self, response)

        return extract_cookies

    _lean_only(httpx.Cookies, "extract_cookies", make)


def allowed(litellm: Any) -> bool:
    """No litellm callback registered: nobody reads litellm's per-call logging or pricing."""
    return _INTERNAL_CALL is not None and not any(
        getattr(litellm, name, None) for name in _CALLBACK_LISTS
    )


async def call(litellm: Any, start: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """Await `start()` (a litellm call) as a lean call, bounded by `timeout_s`. The context
    variables that mark it are set in this task only for the call and reset after it, so
    nothing else of this task sees them (tasks litellm starts inside copy them)."""
    tokens: list[tuple[contextvars.ContextVar[bool], contextvars.Token[bool]]] = []
    # Until a first call has come back, litellm's set-up stays in its threads: a first call
    # imports more of litellm, which inline would stall every call in flight.
    if FIRST_CALL_BACK.is_set():
        _inline_setup_executor(asyncio.get_running_loop())
        tokens.append((_INLINE_SETUP, _INLINE_SETUP.set(True)))
    if allowed(litellm):
        assert _INTERNAL_CALL is not None
        tokens += [(_LEAN_CALL, _LEAN_CALL.set(True)), (_INTERNAL_CALL, _INTERNAL_CALL.set(True))]
    try:
        async with asyncio.timeout(timeout_s):
            return await start()
    finally:
        FIRST_CALL_BACK.set()
        for var, token in reversed(tokens):
            var.reset(token)


# litellm.acompletion builds every request in a thread of the loop's default executor
# (`run_in_executor(None, completion)`): CPU-bound Python in a second thread, so each call
# hands the GIL back and forth with the event loop, which then waits up to the interpreter's
# switch interval (5 ms) for it. Measured at concurrency 50: both processes of a run sat at
# ~50% CPU, latency-bound on GIL hand-offs. The set-up makes no network call (the request is
# sent by the coroutine it returns), so for our calls it runs inline on the loop instead.
_INLINE_SETUP: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "evals_inline_setup", default=False
)
# Set once any call has come back (answered or failed): litellm's one-time imports are done.
FIRST_CALL_BACK = threading.Event()
_INLINE_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


class _InlineSetupExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: a thread pool, except for litellm's request set-up on our
    calls (the first work a call marked by `_INLINE_SETUP` submits), which runs at once in the
    calling thread. Anything later in the call (e.g. a DNS lookup) goes to the threads."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        if not _INLINE_SETUP.get():
            return super().submit(fn, *args, **kwargs)
        _INLINE_SETUP.set(False)  # in the calling task's context: only its first submission
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _inline_setup_executor(loop: asyncio.AbstractEventLoop) -> None:
    if loop not in _INLINE_LOOPS:
        loop.set_default_executor(_InlineSetupExecutor(thread_name_prefix="evals"))
        _INLINE_LOOPS.add(loop)
