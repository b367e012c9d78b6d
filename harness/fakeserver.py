"""Serve a fake OpenAI-compatible HTTP API with scripted replies, latency and injected faults.

Tests and benchmarks point litellm at it (``model="openai/<name>"``, ``api_base=server.url``)
so the provider layer's real HTTP path runs offline and reproducibly.

Endpoints: ``POST /v1/chat/completions`` (plain JSON, or SSE when ``stream`` is true),
``POST /v1/embeddings`` (deterministic vectors), ``GET /v1/models``; plus ``GET /fake/stats``
and ``POST /fake/reset`` for servers run as a subprocess. The same routes answer without the
``/v1`` prefix.

For each POST the server decides one outcome, first match wins:

1. ``model`` is ``fake-NNN`` (e.g. ``fake-400``, ``fake-401``, ``fake-404``, ``fake-429``):
   that HTTP status with an OpenAI error body;
2. the last message contains ``CONTEXT_TOO_LONG``: OpenAI's ``context_length_exceeded`` 400;
3. attempt number < ``faults.fail_first_n`` for this request key: ``faults.fail_first_outcome``;
4. a seeded draw against the fault rates: 500, 429 (``Retry-After``), hang, dropped
   connection, invalid JSON with status 200;
5. ``model`` contains ``slow``: sleep ``faults.hang_s``, then reply;
6. a normal reply from the responder.

Every POST first waits ``latency_ms`` plus a seeded jitter. Exactly one fault draw is taken per
POST, so for a given arrival order the outcomes are reproducible; ``fault_draw="keyed"`` instead
derives the draw from (seed, request key, attempt), reproducible under any arrival order.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import inspect
import json
import random
import re
import signal
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

__all__ = [
    "OUTCOMES",
    "FakeServer",
    "FakeServerStats",
    "Faults",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ThreadedFakeServer",
    "echo_or_script",
    "fake_embedding",
    "main",
    "request_key",
]

OUTCOMES = ("ok", "500", "429", "hang", "drop", "invalid_json", "4xx", "error")
"""Outcome names counted in :class:`FakeServerStats` (``error``: the responder raised)."""

FAULT_KINDS = ("500", "429", "hang", "drop", "invalid_json")
EMBEDDING_DIM = 8
_STATUS_MODEL = re.compile(r"(?:^|[/_-])fake-([45]\d\d)$")
_REPLY_LINE = re.compile(r"^[ \t]*REPLY:[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_CONTEXT_MARKER = "CONTEXT_TOO_LONG"
_INVALID_JSON = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"mess'


@dataclass
class Reply:
    """One assistant turn; token counts left ``None`` are computed as word counts."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @classmethod
    def tool_call(
        cls, name: str, arguments: Mapping[str, Any] | None = None, content: str | None = None
    ) -> Reply:
        """A turn that calls one tool; the server adds the call id and JSON-encodes arguments."""
        call = {"name": name, "arguments": dict(arguments or {})}
        return cls(content=content, tool_calls=[call], finish_reason="tool_calls")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reply:
        """Parse ``{"tool": name, "arguments": {...}}`` or ``{"content": text}`` (CLI files)."""
        if "tool" in data:
            return cls.tool_call(str(data["tool"]), data.get("arguments"), data.get("content"))
        return cls(
            content=data.get("content"),
            tool_calls=data.get("tool_calls"),
            finish_reason=str(data.get("finish_reason", "stop")),
        )


Responder = Callable[[dict[str, Any]], "Reply | str | Awaitable[Reply | str]"]
"""Maps a chat request body to a reply (a ``str`` means ``Reply(content=str)``)."""


@dataclass
class Faults:
    """Fault injection settings; rates are probabilities per POST and must sum to <= 1."""

    rate_500: float = 0.0
    rate_429: float = 0.0
    rate_hang: float = 0.0
    rate_drop: float = 0.0
    rate_invalid_json: float = 0.0
    fail_first_n: int = 0
    fail_first_outcome: Literal["500", "429", "hang", "drop", "invalid_json"] = "500"
    retry_after_s: float | None = 1.0
    retry_after_ms: int | None = None
    hang_s: float = 30.0

    def __post_init__(self) -> None:
        if any(rate < 0 for rate in self.rates()) or sum(self.rates()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates must be >= 0 and sum to <= 1, got {self.rates()}")

    def rates(self) -> tuple[float, ...]:
        """The fault rates in ``FAULT_KINDS`` order."""
        return (
            self.rate_500,
            self.rate_429,
            self.rate_hang,
            self.rate_drop,
            self.rate_invalid_json,
        )

    def pick(self, draw: float) -> str | None:
        """The fault a uniform draw in [0, 1) lands on, or None."""
        edge = 0.0
        for kind, rate in zip(FAULT_KINDS, self.rates(), strict=True):
            edge += rate
            if draw < edge:
                return kind
        return None


@dataclass
class RecordedRequest:
    """What a client sent: body, path, header names and whether it sent Authorization."""

    path: str
    body: dict[str, Any]
    auth_present: bool
    header_names: tuple[str, ...]
    key: str
    outcome: str


@dataclass
class FakeServerStats:
    """A snapshot of the server's accounting."""

    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, str]] = field(default_factory=list)
    """``(request_key, outcome)`` per POST in arrival order (bounded by ``max_log``)."""

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "outcomes": dict(self.outcomes)}


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return str(content)


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def echo_or_script(request_json: dict[str, Any], script: Mapping[str, str] | None = None) -> Reply:
    """Default responder: scripted reply, else a ``REPLY: <text>`` line, else echo.

    The script is keyed by the last user message's exact (or stripped) text. ``REPLY:`` lines
    are looked for in user and system messages, newest first.
    """
    messages = _messages(request_json)
    last_user = _last_user_text(messages)
    if script:
        for candidate in (last_user, last_user.strip()):
            if candidate in script:
                return Reply(content=script[candidate])
    for message in reversed(messages):
        if message.get("role") in ("user", "system"):
            match = _REPLY_LINE.search(message_text(message))
            if match:
                return Reply(content=match.group(1))
    return Reply(content=last_user)


def request_key(model: str, payload: Any) -> str:
    """Stable hash of a request's model and messages (chat) or input (embeddings)."""
    canonical = json.dumps(
        [model, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def fake_embedding(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector derived from a hash of ``text``."""
    values: list[float] = []
    block = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        values.extend(n / 2**31 - 1.0 for n in struct.unpack("<8I", digest))
        block += 1
    vector = values[:dim]
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, dict)]


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    kind = {401: "invalid_request_error", 403: "permission_error", 429: "requests"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


_STATUS_MESSAGES = {
    400: ("Invalid request (fake-400).", None),
    401: ("Incorrect API key provided: sk-fake***. (fake-401)", "invalid_api_key"),
    403: ("You are not allowed to use this model (fake-403).", None),
    404: (
        "The model does not exist or you do not have access to it (fake-404).",
        "model_not_found",
    ),
    429: ("Rate limit reached for requests (fake).", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request (fake).", None),
}


class FakeServer:
    """A fake OpenAI-compatible server; use ``async with`` or :meth:`run_in_thread`.

    Settings (``latency_ms``, ``jitter_ms``, ``faults``, ``script``, ``tool_script``,
    ``responder``) are plain attributes a test may change while the server runs.
    """

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        script: Mapping[str, str] | None = None,
        tool_script: Sequence[Reply] | None = None,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        faults: Faults | None = None,
        seed: int = 0,
        fault_draw: Literal["stream", "keyed"] = "stream",
        models: Sequence[str] = ("fake-model",),
        host: str = "127.0.0.1",
        port: int = 0,
        max_recorded_requests: int = 10_000,
        max_log: int = 1_000_000,
    ) -> None:
        self.responder = responder
        self.script: dict[str, str] = dict(script or {})
        self.tool_script: list[Reply] = list(tool_script or [])
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.faults = faults or Faults()
        self.fault_draw = fault_draw
        self.models = list(models)
        self.host = host
        self.port = port
        self.seed = seed
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._jitter_rng = random.Random(f"jitter:{seed}")
        self._runner: web.AppRunner | None = None
        self._max_log = max_log
        self._max_recorded = max_recorded_requests
        self._init_accounting()

    # ----- lifecycle

    @property
    def url(self) -> str:
        """The OpenAI base URL, ending in ``/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> FakeServer:
        """Bind and start serving; ``port`` then holds the bound port."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self._handle_chat)
            app.router.add_post(f"{prefix}/embeddings", self._handle_embeddings)
            app.router.add_get(f"{prefix}/models", self._handle_models)
        app.router.add_get("/fake/stats", self._handle_stats)
        app.router.add_post("/fake/reset", self._handle_reset)
        # handler_cancellation stops hanging handlers when the client gives up; a short
        # shutdown_timeout keeps stop() fast while requests still hang.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.2
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Stop serving; in-flight requests are cancelled."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def run_in_thread(self) -> ThreadedFakeServer:
        """Start this server on its own event loop in a daemon thread (for sync code)."""
        return ThreadedFakeServer(self)

    # ----- accounting

    def _init_accounting(self) -> None:
        self._total = 0
        self._outcomes: Counter[str] = Counter()
        self._log: deque[tuple[str, str]] = deque(maxlen=self._max_log)
        self._final: dict[str, str] = {}
        self._attempts: Counter[str] = Counter()
        self._requests: deque[RecordedRequest] = deque(maxlen=self._max_recorded)

    def reset_stats(self) -> None:
        """Forget counts, logs, recorded requests and attempt counters (not the RNG state)."""
        with self._lock:
            self._init_accounting()

    def reseed(self, seed: int | None = None) -> None:
        """Restart the fault and jitter random streams (from ``seed``, default the current)."""
        with self._lock:
            self.seed = self.seed if seed is None else seed
            self._rng = random.Random(self.seed)
            self._jitter_rng = random.Random(f"jitter:{self.seed}")

    @property
    def stats(self) -> FakeServerStats:
        """A consistent snapshot of totals, outcome counts and the ``(key, outcome)`` log."""
        with self._lock:
            return FakeServerStats(self._total, Counter(self._outcomes), list(self._log))

    @property
    def requests(self) -> list[RecordedRequest]:
        """The most recent POSTs (oldest first), at most ``max_recorded_requests``."""
        with self._lock:
            return list(self._requests)

    def final_outcome_by_key(self) -> dict[str, str]:
        """For each distinct request key, the outcome of its latest attempt."""
        with self._lock:
            return dict(self._final)

    def attempts_by_key(self) -> dict[str, int]:
        """For each distinct request key, how many attempts arrived."""
        with self._lock:
            return dict(self._attempts)

    def _record(self, request: web.Request, body: dict[str, Any], key: str, outcome: str) -> None:
        recorded = RecordedRequest(
            path=request.path,
            body=body,
            auth_present="Authorization" in request.headers,
            header_names=tuple(name.lower() for name in request.headers),
            key=key,
            outcome=outcome,
        )
        with self._lock:
            self._total += 1
            self._outcomes[outcome] += 1
            self._log.append((key, outcome))
            if key:  # bodies that were not JSON have no key
                self._final[key] = outcome
            self._requests.append(recorded)

    # ----- decisions

    def _decide(self, model: str, key: str, last_text: str) -> tuple[str, int, float]:
        """Pick the action for one POST; returns (action, attempt index, delay in seconds)."""
        faults = self.faults
        with self._lock:
            attempt = self._attempts[key]
            self._attempts[key] = attempt + 1
            draw = self._rng.random()
            jitter = self._jitter_rng.uniform(0.0, self.jitter_ms) if self.jitter_ms else 0.0
        if self.fault_draw == "keyed":
            digest = hashlib.sha256(f"{self.seed}:{key}:{attempt}".encode()).digest()
            draw = int.from_bytes(digest[:7], "big") / 2**56
        delay = (self.latency_ms + jitter) / 1000.0
        status = _STATUS_MODEL.search(model)
        if status:
            return f"status:{status.group(1)}", attempt, delay
        if _CONTEXT_MARKER in last_text:
            return "context", attempt, delay
        if attempt < faults.fail_first_n:
            return faults.fail_first_outcome, attempt, delay
        fault = faults.pick(draw)
        if fault is not None:
            return fault, attempt, delay
        if "slow" in model:
            return "slow", attempt, delay
        return "ok", attempt, delay

    @staticmethod
    def _outcome(action: str) -> str:
        if action.startswith("status:"):
            code = int(action[7:])
            return "429" if code == 429 else "500" if code >= 500 else "4xx"
        return {"context": "4xx", "slow": "hang"}.get(action, action)

    def _retry_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.faults.retry_after_s is not None:
            seconds = self.faults.retry_after_s
            headers["Retry-After"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
        if self.faults.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.faults.retry_after_ms)
        return headers

    async def _fault_response(self, request: web.Request, action: str) -> web.StreamResponse:
        """The response for any action other than ok/slow/hang."""
        if action == "500":
            return web.json_response(_error_body(500, *_STATUS_MESSAGES[500]), status=500)
        if action == "429":
            body = _error_body(429, *_STATUS_MESSAGES[429])
            return web.json_response(body, status=429, headers=self._retry_headers())
        if action == "invalid_json":
            return web.Response(body=_INVALID_JSON, status=200, content_type="application/json")
        if action == "drop":
            return await _drop_connection(request)
        if action == "context":
            message = (
                "This model's maximum context length is 8192 tokens. However, your messages "
                "resulted in 9000 tokens. Please reduce the length of the messages."
            )
            body = _error_body(400, message, "context_length_exceeded")
            body["error"]["param"] = "messages"
            return web.json_response(body, status=400)
        code = int(action[7:])
        message, error_code = _STATUS_MESSAGES.get(code, (f"Fake error {code}.", None))
        headers = self._retry_headers() if code == 429 else None
        return web.json_response(
            _error_body(code, message, error_code), status=code, headers=headers
        )

    # ----- handlers

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request)
        if body is None:
            self._record(request, {}, "", "4xx")
            return web.json_response(
                _error_body(400, "Request body is not a JSON object."), status=400
            )
        model = str(body.get("model", ""))
        messages = _messages(body)
        key = request_key(model, messages)
        last_text = message_text(messages[-1]) if messages else ""
        action, attempt, delay = self._decide(model, key, last_text)
        reply: Reply | None = None
        if action in ("ok", "slow", "hang"):
            try:
                reply = await self._reply_for(body)
            except Exception as exc:  # a broken responder must show up in the test, loudly
                self._record(request, body, key, "error")
                message = f"fake responder raised {type(exc).__name__}: {exc}"
                return web.json_response(_error_body(500, message), status=500)
        self._record(request, body, key, self._outcome(action))
        if delay > 0:
            await asyncio.sleep(delay)
        if action in ("slow", "hang"):
            await asyncio.sleep(self.faults.hang_s)
        if reply is None:
            return await self._fault_response(request, action)
        completion = _completion(body, model, f"chatcmpl-{key}-{attempt}", reply)
        if body.get("stream"):
            return await _stream_completion(request, completion, body)
        return web.json_response(completion)

    async def _reply_for(self, body: dict[str, Any]) -> Reply:
        messages = _messages(body)
        if self.tool_script and (
            body.get("tools") or any(m.get("role") == "tool" for m in messages)
        ):
            # The turn index is the number of assistant turns that already called tools.
            turn = sum(1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls"))
            return self.tool_script[min(turn, len(self.tool_script) - 1)]
        if self.responder is None:
            return echo_or_script(body, self.script)
        result = self.responder(body)
        if inspect.isawaitable(result):
            result = await result
        return Reply(content=result) if isinstance(result, str) else result

    async def _handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request)
        if body is None:
            self._record(request, {}, "", "4xx")
            return web.json_response(
                _error_body(400, "Request body is not a JSON object."), status=400
            )
        model = str(body.get("model", ""))
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
        texts = [t if isinstance(t, str) else json.dumps(t) for t in texts]
        key = request_key(model, raw)
        action, _attempt, delay = self._decide(model, key, texts[-1] if texts else "")
        self._record(request, body, key, self._outcome(action))
        if delay > 0:
            await asyncio.sleep(delay)
        if action in ("slow", "hang"):
            await asyncio.sleep(self.faults.hang_s)
        elif action != "ok":
            return await self._fault_response(request, action)
        dim = body.get("dimensions") or EMBEDDING_DIM
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(text, int(dim))
            encoded: Any = vector
            if as_base64:
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_words(t) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response({"object": "list", "data": data, "model": model, "usage": usage})

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats.as_dict()
        stats["final_outcomes"] = dict(Counter(self.final_outcome_by_key().values()))
        return web.json_response(stats)

    async def _handle_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset_stats()
        return web.json_response({"reset": True})


async def _read_json(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the socket without answering; the client sees a disconnect."""
    if request.transport is not None:
        request.transport.close()
    # Unwinding through CancelledError ends the handler without aiohttp writing a response
    # to a closed transport (and without logging the attempt as an error).
    raise asyncio.CancelledError


def _completion(body: dict[str, Any], model: str, completion_id: str, reply: Reply) -> dict:
    tool_calls = _normalize_tool_calls(reply.tool_calls, completion_id)
    prompt_tokens = reply.prompt_tokens
    if prompt_tokens is None:
        prompt_tokens = sum(_words(message_text(m)) for m in _messages(body))
    completion_tokens = reply.completion_tokens
    if completion_tokens is None:
        arguments = " ".join(c["function"]["arguments"] for c in tool_calls or [])
        completion_tokens = _words(reply.content) + _words(arguments)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.content,
                    "tool_calls": tool_calls,
                },
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _normalize_tool_calls(
    calls: list[dict[str, Any]] | None, completion_id: str
) -> list[dict[str, Any]] | None:
    """OpenAI-shaped tool calls from full or ``{"name", "arguments"}`` short dicts."""
    if not calls:
        return None
    normalized = []
    for index, call in enumerate(calls):
        function = call.get("function", call)
        arguments = function.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        normalized.append(
            {
                "id": call.get("id") or f"call_{completion_id[-20:]}_{index}",
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            }
        )
    return normalized


async def _stream_completion(
    request: web.Request, completion: dict[str, Any], body: dict[str, Any]
) -> web.StreamResponse:
    """Send a completion as OpenAI SSE chunks: content, tool calls, finish, optional usage."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    choice = completion["choices"][0]
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    delta: dict[str, Any] = {"role": "assistant", "content": choice["message"]["content"]}
    if choice["message"]["tool_calls"]:
        delta["tool_calls"] = [
            {"index": i, **call} for i, call in enumerate(choice["message"]["tool_calls"])
        ]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]},
    ]
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    payload = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    await response.write(payload.encode())
    await response.write_eof()
    return response


class ThreadedFakeServer:
    """A :class:`FakeServer` running on its own event loop in a daemon thread."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="fakeserver", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def stats(self) -> FakeServerStats:
        return self.server.stats

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    def reset_stats(self) -> None:
        self.server.reset_stats()

    def final_outcome_by_key(self) -> dict[str, str]:
        return self.server.final_outcome_by_key()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and its thread; safe to call twice."""
        if not self._thread.is_alive():
            return
        stopping = asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop)
        stopping.result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> ThreadedFakeServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ----- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m harness.fakeserver",
        description="Fake OpenAI-compatible server; prints its /v1 URL on line 1, runs until "
        "killed, prints a JSON stats line on SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-draw", choices=["stream", "keyed"], default="stream")
    for kind in FAULT_KINDS:
        parser.add_argument(f"--fault-rate-{kind.replace('_', '-')}", type=float, default=0.0)
    parser.add_argument("--fail-first-n", type=int, default=0)
    parser.add_argument("--fail-first-outcome", choices=FAULT_KINDS, default="500")
    parser.add_argument(
        "--retry-after-s", type=float, default=1.0, help="Retry-After on 429s; < 0 omits it"
    )
    parser.add_argument("--retry-after-ms", type=int, default=None)
    parser.add_argument("--hang-s", type=float, default=30.0)
    parser.add_argument("--script", help="JSON file: {last user message: reply}")
    parser.add_argument("--tool-script", help='JSON file: [{"tool": n, "arguments": {}}, ...]')
    return parser.parse_args(argv)


def server_from_args(args: argparse.Namespace) -> FakeServer:
    """Build a server from parsed command-line arguments."""
    faults = Faults(
        rate_500=args.fault_rate_500,
        rate_429=args.fault_rate_429,
        rate_hang=args.fault_rate_hang,
        rate_drop=args.fault_rate_drop,
        rate_invalid_json=args.fault_rate_invalid_json,
        fail_first_n=args.fail_first_n,
        fail_first_outcome=args.fail_first_outcome,
        retry_after_s=args.retry_after_s if args.retry_after_s >= 0 else None,
        retry_after_ms=args.retry_after_ms,
        hang_s=args.hang_s,
    )
    script: dict[str, str] = {}
    if args.script:
        with open(args.script, encoding="utf-8") as handle:
            script = json.load(handle)
    tool_script: list[Reply] = []
    if args.tool_script:
        with open(args.tool_script, encoding="utf-8") as handle:
            tool_script = [Reply.from_dict(turn) for turn in json.load(handle)]
    return FakeServer(
        script=script,
        tool_script=tool_script,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        faults=faults,
        seed=args.seed,
        fault_draw=args.fault_draw,
        host=args.host,
        port=args.port,
    )


async def _serve_until_signalled(server: FakeServer) -> None:
    await server.start()
    print(server.url, flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        await server.stop()
        print(json.dumps(server.stats.as_dict()), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server from the command line until SIGINT or SIGTERM."""
    asyncio.run(_serve_until_signalled(server_from_args(_parse_args(argv))))


if __name__ == "__main__":
    main()
