"""Tests for harness/runner.py (through harness/execute.py): concurrency, graceful stop and its
grace period, the error-rate abort, scorer crashes as errors, weighted scores, tools, and the
run's lineage."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import (
    DEFAULT_PROMPT,
    FAKE_KEY,
    KEY_ENV,
    MODEL_ID,
    Project,
    case_rows,
    make_project,
    model_entry,
    result_rows,
    run_records,
    threaded_server,
)

from harness.committer import Committer
from harness.errors import RunAborted
from harness.execute import execute
from harness.fakeserver import FakeServer, Faults, Reply, echo_or_script
from harness.runner import Runner, RunOptions, _wilson_low
from harness.store import Store
from harness.suite import load_suite
from harness.summary import _percentile, wilson_interval

FakeServerFactory = Callable[..., Awaitable[FakeServer]]


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


class CountingServer(FakeServer):
    """Counts chat requests being handled at once, overall and per model."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.inflight: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body.get("model", "")
        self.inflight[model] = self.inflight.get(model, 0) + 1
        self.peak[model] = max(self.peak.get(model, 0), self.inflight[model])
        try:
            return await super()._handle_chat(request)
        finally:
            self.inflight[model] -= 1


def runner_for(project: Project, **options: Any) -> tuple[Runner, Store]:
    suite = load_suite(project.suite, project_dir=project.root)
    store = Store.open(project.store)
    return Runner(suite, store, RunOptions(**options)), store


def run(project: Project, **options: Any) -> Any:
    return execute(project.suite, project_dir=project.root, store_path=project.store,
                   options=RunOptions(**options))  # fmt: skip


async def run_async(project: Project, **options: Any) -> Any:
    runner, store = runner_for(project, **options)
    try:
        return await runner.run()
    finally:
        store.close()


# --- concurrency -----------------------------------------------------------------------------


async def test_concurrency_per_model_is_respected(tmp_path: Path) -> None:
    server = CountingServer(latency_ms=20)
    async with server:
        models = [
            model_entry(server.url, concurrency=3),
            model_entry(server.url, id="openai/fake-other", concurrency=5),
        ]
        project = make_project(tmp_path, None, n=30, models=models)
        outcome = await run_async(project, cache_mode="off")
    assert outcome.status == "completed"
    assert server.peak == {"fake-model": 3, "fake-other": 5}
    assert server.stats.total == 60


async def test_concurrency_option_applies_to_models_without_their_own(tmp_path: Path) -> None:
    server = CountingServer(latency_ms=20)
    async with server:
        project = make_project(tmp_path, server.url, n=20)
        await run_async(project, cache_mode="off", concurrency=4)
    assert server.peak == {"fake-model": 4}


# --- graceful stop ---------------------------------------------------------------------------


async def test_stop_lets_in_flight_calls_finish_and_saves_them(tmp_path: Path) -> None:
    async with FakeServer(latency_ms=200) as server:
        project = make_project(tmp_path, server.url, n=12, concurrency=3)
        runner, store = runner_for(project, cache_mode="off")
        task = asyncio.create_task(runner.run())
        while server.stats.total < 3:
            await asyncio.sleep(0.01)
        runner.request_stop()
        outcome = await task
        store.close()
    assert outcome.status == "interrupted"
    assert server.stats.total == 3
    assert len(result_rows(project.store)) == 3  # the three in-flight calls were saved
    assert run_records(project.store)[0]["status"] == "interrupted"


async def test_calls_past_the_grace_period_are_cancelled_not_saved(tmp_path: Path) -> None:
    async with FakeServer(faults=Faults(rate_hang=1.0, hang_s=30.0)) as server:
        project = make_project(tmp_path, server.url, n=6, concurrency=2,
                               model={"timeout_s": 60.0})  # fmt: skip
        runner, store = runner_for(project, cache_mode="off", grace_s=0.3)
        task = asyncio.create_task(runner.run())
        while server.stats.total < 2:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        runner.request_stop()
        outcome = await task
        waited = time.monotonic() - started
        store.close()
    assert outcome.status == "interrupted"
    assert 0.25 <= waited < 2.0
    # A cancelled call is not an error result: a resume must still run those cases.
    assert result_rows(project.store) == []


# --- the error-rate abort --------------------------------------------------------------------


async def test_provider_down_aborts_after_few_results(tmp_path: Path) -> None:
    async with FakeServer(faults=Faults(rate_500=1.0)) as server:
        project = make_project(tmp_path, server.url, n=100, concurrency=1,
                               model={"max_attempts": 1})  # fmt: skip
        with pytest.raises(RunAborted, match=r"error rate 10/10 exceeds --max-error-rate 10%"):
            await run_async(project, cache_mode="off")
        assert server.stats.total == 10
    (record,) = run_records(project.store)
    assert record["status"] == "aborted"
    assert len(result_rows(project.store)) == 10


async def test_a_few_errors_below_the_limit_do_not_abort(tmp_path: Path) -> None:
    rows = case_rows(30)
    rows[0]["question"] = "CONTEXT_TOO_LONG"
    rows[1]["question"] = "CONTEXT_TOO_LONG"
    async with FakeServer() as server:
        project = make_project(tmp_path, server.url, rows=rows, concurrency=1)
        outcome = await run_async(project, cache_mode="off")
    assert outcome.status == "completed"
    assert outcome.summary["errors"] == 2


@pytest.mark.parametrize("k, n", [(0, 5), (1, 10), (3, 10), (10, 10), (7, 200), (150, 400)])
def test_closed_form_wilson_interval_matches_scipy(k: int, n: int) -> None:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(ci.low, abs=1e-9)
    assert high == pytest.approx(ci.high, abs=1e-9)
    assert _wilson_low(k, n) == pytest.approx(ci.low, abs=1e-9)


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101])
def test_summary_percentiles_match_numpy(size: int) -> None:
    import random

    import numpy as np

    rng = random.Random(size)
    values = [rng.uniform(0, 1000) for _ in range(size)] + [7] * (size % 3)
    for q in (0, 1, 50, 90, 95, 99, 100):
        assert _percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    assert _percentile([], 50) is None


# --- results ---------------------------------------------------------------------------------


def test_scorer_crash_is_an_error_not_a_fail(tmp_path: Path) -> None:
    module = f"userscorer_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "def check(output, ctx):\n"
        "    if ctx.case.id == 'c002':\n"
        "        raise RuntimeError('scorer bug')\n"
        "    return True\n",
        encoding="utf-8",
    )
    from harness.fakeserver import ThreadedFakeServer

    with ThreadedFakeServer(FakeServer()) as server:
        scorers = [{"type": "equals", "value": "{{ expected }}"},
                   {"type": "python", "function": f"{module}:check"}]  # fmt: skip
        project = make_project(tmp_path, server.url, n=4, scorers=scorers)
        outcome = run(project, max_error_rate=0.5)
    block = outcome.summary["models"][MODEL_ID]
    assert (block["passed"], block["failed"], block["errors"]) == (3, 0, 1)
    row = next(r for r in result_rows(project.store) if r["case_id"] == "c002")
    assert row["status"] == "error"
    assert row["score"] is None
    assert "scorer bug" in row["error"]
    assert row["error_kind"] == "user_function"
    # The scorer that did work still counts in its own column; the crashed one is an error.
    assert block["scorers"]["equals"]["n"] == 4
    assert block["scorers"]["python"]["errors"] == 1
    assert block["scorers"]["python"]["n"] == 3


def test_weighted_score_and_all_scorers_must_pass(tmp_path: Path) -> None:
    from harness.fakeserver import ThreadedFakeServer

    with ThreadedFakeServer(FakeServer()) as server:
        scorers = [
            {"type": "equals", "value": "{{ expected }}", "weight": 3},
            {"type": "contains", "value": "zzz", "weight": 1},
        ]
        project = make_project(tmp_path, server.url, n=2, scorers=scorers, thresholds={})
        outcome = run(project)
    rows = result_rows(project.store)
    assert [r["score"] for r in rows] == [pytest.approx(0.75)] * 2
    assert {r["status"] for r in rows} == {"fail"}
    assert outcome.summary["thresholds_ok"] is True  # no thresholds: nothing to fail


async def test_tools_are_sent_and_tool_calls_recorded(tmp_path: Path) -> None:
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["tools"] = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    prompt["tool_choice"] = "auto"
    tool_reply = Reply.tool_call("lookup", {"q": "x"}, content="calling")
    async with FakeServer(tool_script=[tool_reply]) as server:
        scorers = [{"type": "contains", "value": "calling"}]
        project = make_project(tmp_path, server.url, n=2, prompt=prompt, scorers=scorers,
                               thresholds={})  # fmt: skip
        await run_async(project)
        body = server.requests[0].body
    assert body["tools"][0]["function"]["name"] == "lookup"
    assert body["tool_choice"] == "auto"
    import json

    detail = json.loads(result_rows(project.store)[0]["detail"])
    assert detail["tool_calls"][0]["name"] == "lookup"
    assert json.loads(detail["tool_calls"][0]["arguments"]) == {"q": "x"}


async def test_run_records_its_lineage(tmp_path: Path) -> None:
    async with FakeServer() as server:
        project = make_project(tmp_path, server.url, n=3, seed=5)
        outcome = await run_async(project, repeat=2)
    with Store.open(project.store) as store:
        manifest = store.get_run(outcome.run_id)["manifest"]
    assert manifest["suite"]["name"] == "enginetest"
    assert len(manifest["suite"]["version"]) == 8
    assert manifest["dataset"]["rows"] == 3
    assert manifest["dataset"]["version"]
    assert manifest["prompt"]["name"] == "qa"
    assert manifest["prompt"]["content"]["params"] == {"temperature": 0, "max_tokens": 16}
    assert manifest["models"][0]["id"] == MODEL_ID
    assert "api_key" not in json_text(manifest)  # the key's variable name only, never a key
    assert FAKE_KEY not in json_text(manifest)
    (scorer,) = manifest["scorers"]
    assert (scorer["type"], scorer["value"], scorer["weight"]) == ("equals", "{{ expected }}", 1)
    assert manifest["repeat"] == 2
    assert manifest["seed"] == 5
    assert set(manifest["git"]) == {"commit", "dirty"}
    assert manifest["environment"]["packages"]["litellm"]


def json_text(value: Any) -> str:
    import json

    return json.dumps(value).replace('"api_key_env"', '"env"')


# --- which results wait for their commit ----------------------------------------------------


def judge_passes(body: dict[str, Any]) -> Reply:
    if body.get("model") != "fake-judge":
        return echo_or_script(body)
    return Reply(json.dumps({"reason": "fine", "score": 1}))


def test_only_results_that_cost_nothing_to_redo_skip_waiting_for_their_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result whose every model call (the judge's too) came from the response cache is
    committed with others a moment later; one that paid for a call is committed first."""
    waits: list[bool] = []
    save = Committer.save

    async def recording(self: Committer, result: Any, wait: bool = True) -> None:
        waits.append(wait)
        await save(self, result, wait)

    monkeypatch.setattr(Committer, "save", recording)
    with threaded_server(responder=judge_passes) as server:
        judge = {**model_entry(server.url), "id": "openai/fake-judge"}
        scorers = [{"type": "judge", "rubric": "correctness", "judge": judge}]
        project = make_project(tmp_path, server.url, n=4, scorers=scorers, thresholds={})
        run(project)  # every call live
        assert waits == [True] * 4
        waits.clear()
        run(project)  # target and judge answered from the cache
        assert waits == [False] * 4
        waits.clear()
        project.suite_data["scorers"] = [{**scorers[0], "rubric": "helpfulness"}]
        project.write()
        run(project)  # target cached, the judge (a new rubric) called
        assert waits == [True] * 4
    assert len(server.requests) == 12  # 4 target + 4 judge, then 4 judge (new rubric)
