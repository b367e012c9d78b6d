"""Tests for the response cache (harness/providers.py cache_key and ModelClient, the store's
cache table): a property test of the key, then cache behaviour through `evals run`."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
from helpers import (
    DEFAULT_PROMPT,
    FAKE_KEY,
    KEY_ENV,
    Project,
    case_rows,
    make_project,
    result_rows,
    run_json,
    table_counts,
    threaded_server,
    write_yaml,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config import ModelConfig, Price
from harness.fakeserver import Reply
from harness.providers import KEY_PARAMS, ChatRequest, ModelClient, cache_key

# --- the key: a property test ----------------------------------------------------------------

ROLES = ("system", "user", "assistant", "tool", "developer")
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(0, 2, allow_nan=False),
    st.text(max_size=5),
)
messages_st = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": st.text(max_size=20)}),
    min_size=1,
    max_size=3,
)
params_st = st.dictionaries(st.sampled_from(KEY_PARAMS), json_scalars, max_size=5)
tools_st = st.one_of(
    st.none(),
    st.lists(
        st.fixed_dictionaries(
            {
                "type": st.just("function"),
                "function": st.fixed_dictionaries({"name": st.text("abc", min_size=1, max_size=4)}),
            }
        ),
        min_size=1,
        max_size=2,
    ),
)
base_st = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["openai/gpt-4o-mini", "openai/fake-model", "anthropic/claude-x"]),
        "api_base": st.one_of(st.none(), st.just("http://127.0.0.1:1/v1")),
        "api_version": st.one_of(st.none(), st.just("2024-01-01")),
        "messages": messages_st,
        "params": params_st,
        "tools": tools_st,
        "tool_choice": st.one_of(st.none(), st.just("auto"), st.just("required")),
        "response_format": st.one_of(st.none(), st.just({"type": "json_object"})),
        "epoch": st.integers(0, 3),
    }
)


def key_of(spec: dict[str, Any], **model_extra: Any) -> str:
    model = ModelConfig(
        id=spec["model"],
        api_base=spec["api_base"],
        api_version=spec["api_version"],
        **model_extra,
    )
    request = ChatRequest(
        messages=spec["messages"],
        params=spec["params"],
        tools=spec["tools"],
        tool_choice=spec["tool_choice"],
        response_format=spec["response_format"],
        epoch=spec["epoch"],
    )
    return cache_key(model, request)


def different(value: Any) -> Any:
    """A JSON value that is certainly not equal to `value` (and not None)."""
    return {"changed": value}


def mutations(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every single-field change of a request that must give a new cache key."""
    out: list[tuple[str, dict[str, Any]]] = []

    def changed(name: str, edit: Any) -> None:
        new = copy.deepcopy(spec)
        edit(new)
        out.append((name, new))

    changed("model", lambda s: s.update(model=s["model"] + "-2"))
    changed("api_base", lambda s: s.update(api_base=(s["api_base"] or "http://x") + "/other"))
    changed("api_version", lambda s: s.update(api_version=(s["api_version"] or "v") + "1"))
    for i in range(len(spec["messages"])):
        other_role = next(r for r in ROLES if r != spec["messages"][i]["role"])
        changed(f"messages[{i}].role", lambda s, i=i, r=other_role: s["messages"][i].update(role=r))
        changed(
            f"messages[{i}].content",
            lambda s, i=i: s["messages"][i].update(content=s["messages"][i]["content"] + "."),
        )
        changed(f"messages[{i}].name", lambda s, i=i: s["messages"][i].update(name="bob"))
    changed("messages+1", lambda s: s["messages"].append({"role": "user", "content": ""}))
    if len(spec["messages"]) > 1:
        changed("messages-1", lambda s: s["messages"].pop())
    for param in KEY_PARAMS:
        current = spec["params"].get(param)
        changed(
            f"params.{param}", lambda s, p=param, c=current: s["params"].update({p: different(c)})
        )
    changed("params.extra", lambda s: s["params"].update(some_new_param=1))
    changed(
        "tools",
        lambda s: s.update(tools=[*(s["tools"] or []), {"type": "function", "function": {}}]),
    )
    changed("tool_choice", lambda s: s.update(tool_choice=different(s["tool_choice"])))
    changed("response_format", lambda s: s.update(response_format=different(s["response_format"])))
    changed("epoch", lambda s: s.update(epoch=s["epoch"] + 1))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=base_st)
def test_any_single_request_field_changes_the_key(spec: dict[str, Any]) -> None:
    base = key_of(spec)
    assert key_of(copy.deepcopy(spec)) == base  # deterministic
    seen = {base: "base"}
    for name, mutated in mutations(spec):
        key = key_of(mutated)
        assert key != base, f"changing {name} kept the cache key"
        seen.setdefault(key, name)


@settings(max_examples=40, deadline=None)
@given(
    spec=base_st,
    key_value=st.text("abcdefXYZ0123456789-", min_size=1, max_size=30),
    timeout=st.floats(0.1, 600, allow_nan=False),
    attempts=st.integers(1, 20),
    concurrency=st.integers(1, 1024),
    backoff=st.floats(0, 10, allow_nan=False),
    budget=st.floats(0.1, 1000, allow_nan=False),
)
def test_credentials_and_transport_never_change_the_key(
    spec: dict[str, Any],
    key_value: str,
    timeout: float,
    attempts: int,
    concurrency: int,
    backoff: float,
    budget: float,
) -> None:
    old = os.environ.get(KEY_ENV)
    try:
        os.environ[KEY_ENV] = FAKE_KEY
        base = key_of(spec, api_key_env=KEY_ENV)
        os.environ[KEY_ENV] = "sk-other-" + key_value
        assert key_of(spec, api_key_env=KEY_ENV) == base
    finally:
        if old is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = old
    assert key_of(spec, api_key_env="SOME_OTHER_VAR") == base
    assert key_of(spec, timeout_s=timeout) == base
    assert key_of(spec, max_attempts=attempts) == base
    assert key_of(spec, concurrency=concurrency) == base
    assert key_of(spec, backoff_s=backoff, retry_budget_s=budget) == base
    assert key_of(spec, rpm=60.0, tpm=1000.0) == base
    assert key_of(spec, name="a display name") == base
    assert key_of(spec, price=Price(input_per_million=1, output_per_million=2)) == base
    assert key_of(spec, litellm={"extra_headers": {"X-Trace": key_value}}) == base


def test_unset_params_count_as_null() -> None:
    spec: dict[str, Any] = {
        "model": "openai/x", "api_base": None, "api_version": None,
        "messages": [{"role": "user", "content": "hi"}], "params": {},
        "tools": None, "tool_choice": None, "response_format": None, "epoch": 0,
    }  # fmt: skip
    with_null = copy.deepcopy(spec)
    with_null["params"] = {"temperature": None}
    assert key_of(spec) == key_of(with_null)


def test_litellm_kwargs_that_shape_the_answer_change_the_key() -> None:
    spec: dict[str, Any] = {
        "model": "openai/x", "api_base": None, "api_version": None,
        "messages": [{"role": "user", "content": "hi"}], "params": {},
        "tools": None, "tool_choice": None, "response_format": None, "epoch": 0,
    }  # fmt: skip
    assert key_of(spec, litellm={"extra_body": {"guided_choice": ["a"]}}) != key_of(spec)


# --- cache modes, unit level -----------------------------------------------------------------


class DictCache:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def cache_get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def cache_put(self, key: str, model: str, payload: dict[str, Any]) -> None:
        self.data[key] = payload


@pytest.mark.parametrize(
    "mode, temperature, expected",
    [
        ("auto", 0, (True, True)),
        ("auto", 0.7, (False, False)),
        ("auto", None, (False, False)),  # provider default temperature is not 0
        ("on", 0.7, (True, True)),
        ("off", 0, (False, False)),
        ("read-only", 0, (True, False)),
        ("refresh", 0, (False, True)),
    ],
)
def test_cache_modes(mode: str, temperature: float | None, expected: tuple[bool, bool]) -> None:
    client = ModelClient(ModelConfig(id="openai/x"), cache=DictCache(), cache_mode=mode)  # type: ignore[arg-type]
    params = {} if temperature is None else {"temperature": temperature}
    assert client._use_cache(ChatRequest(messages=[], params=params)) == expected


# --- cache behaviour through `evals run` -----------------------------------------------------


def cache_rows(project: Project) -> int:
    return table_counts(project.store).get("response_cache", 0)


def test_rerun_of_an_unchanged_suite_makes_zero_requests(tmp_path: Any) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=8)
        code, first = run_json(project)
        assert code == 0, first
        assert server.stats.total == 8
        server.reset_stats()
        code, second = run_json(project)
        assert code == 0
        assert server.stats.total == 0
    assert second["models"]["openai/fake-model"]["cached"] == 8
    rows = result_rows(project.store, second["run_id"])
    assert len(rows) == 8
    assert all(r["cached"] == 1 for r in rows)
    assert all(json.loads(r["detail"])["calls"][0]["cached"] for r in rows)
    # A cache hit keeps the tokens of the original answer.
    assert [r["input_tokens"] for r in rows] == [
        r["input_tokens"] for r in result_rows(project.store, first["run_id"])
    ]
    assert all(r["cached"] == 0 for r in result_rows(project.store, first["run_id"]))


def test_prompt_change_recalls_only_the_changed_requests(tmp_path: Any) -> None:
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["messages"][1]["content"] += "{% if case_id == 'c002' %} (hint one){% endif %}"
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=6, prompt=prompt)
        run_json(project)
        prompt["messages"][1]["content"] = prompt["messages"][1]["content"].replace("one", "two")
        write_yaml(project.prompt_path, prompt)
        server.reset_stats()
        code, _ = run_json(project)
        assert code == 0
        assert server.stats.total == 1
        assert "(hint two)" in server.requests[0].body["messages"][1]["content"]


def test_cache_off_reads_and_writes_nothing(tmp_path: Any) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=4)
        run_json(project)
        entries = cache_rows(project)
        server.reset_stats()
        code, summary = run_json(project, "--cache", "off")
        assert code == 0
        assert server.stats.total == 4
        assert summary["models"]["openai/fake-model"]["cached"] == 0
        assert cache_rows(project) == entries


def test_cache_read_only_reads_but_never_writes(tmp_path: Any) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=4)
        code, _ = run_json(project, "--cache", "read-only")
        assert code == 0
        assert server.stats.total == 4
        assert cache_rows(project) == 0
        run_json(project)  # auto: fills the cache
        server.reset_stats()
        code, summary = run_json(project, "--cache", "read-only")
        assert server.stats.total == 0
        assert summary["models"]["openai/fake-model"]["cached"] == 4


def test_cache_refresh_calls_again_and_overwrites(tmp_path: Any) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=4)
        run_json(project)
        server.server.responder = lambda body: "refreshed"
        server.reset_stats()
        _code, summary = run_json(project, "--cache", "refresh")
        assert server.stats.total == 4
        assert summary["models"]["openai/fake-model"]["cached"] == 0
        assert cache_rows(project) == 4
        server.reset_stats()
        _, again = run_json(project)
        assert server.stats.total == 0
    outputs = {r["output"] for r in result_rows(project.store, again["run_id"])}
    assert outputs == {"refreshed"}


def test_cache_on_caches_sampled_requests_and_auto_does_not(tmp_path: Any) -> None:
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["params"] = {"temperature": 0.8, "max_tokens": 16}
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=3, prompt=prompt)
        run_json(project)
        run_json(project)
        assert server.stats.total == 6  # auto: temperature 0.8 is never cached
        server.reset_stats()
        run_json(project, "--cache", "on")
        run_json(project, "--cache", "on")
        assert server.stats.total == 3


def test_errors_and_empty_answers_are_not_cached(tmp_path: Any) -> None:
    rows = case_rows(4)
    rows[1]["reply"] = ""  # an empty answer
    rows[2]["question"] = "CONTEXT_TOO_LONG"  # a 400 from the provider: an error result
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=rows, max_error_rate=1.0)
        _code, summary = run_json(project, "--max-error-rate", "1")
        assert summary["errors"] == 1
        assert cache_rows(project) == 2
        server.reset_stats()
        run_json(project, "--max-error-rate", "1")
        asked = sorted(r.body["messages"][1]["content"].split(":")[0] for r in server.requests)
        assert asked == ["Case c001", "Case c002"]


@pytest.mark.parametrize("max_tokens, cached", [(None, False), (16, True)])
def test_length_stops_are_cached_only_when_requested(
    tmp_path: Any, max_tokens: int | None, cached: bool
) -> None:
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["params"] = {"temperature": 0} | ({"max_tokens": max_tokens} if max_tokens else {})
    with threaded_server() as server:
        server.server.responder = lambda body: Reply(content="cut sho", finish_reason="length")
        project = make_project(tmp_path, server.url, n=3, prompt=prompt)
        run_json(project)
        assert cache_rows(project) == (3 if cached else 0)
        server.reset_stats()
        run_json(project)
        assert server.stats.total == (0 if cached else 3)


def test_repeat_epochs_have_their_own_cache_entries(tmp_path: Any) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=3)
        code, summary = run_json(project, "--repeat", "2")
        assert code == 0
        assert summary["results"] == 6
        assert server.stats.total == 6
        assert cache_rows(project) == 6
        server.reset_stats()
        run_json(project, "--repeat", "2")
        assert server.stats.total == 0


def test_cache_key_ignores_the_api_key_across_runs(tmp_path: Any) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=3)
        run_json(project)
        server.reset_stats()
        from helpers import invoke

        result = invoke(project, project.run_args("--json"), env={KEY_ENV: "sk-another-key"})
        assert result.exit_code == 0
        assert server.stats.total == 0
