"""Tests of harness/pairwise.py: order swap, ties, position bias and storage, with scripted
pairwise judges on the fake server; and `evals judge pairwise`."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import ModelConfig
from harness.errors import ConfigError
from harness.fakeserver import FakeServer, Reply
from harness.pairwise import compare, pair_results, pairwise_decision, stored_outcomes
from harness.registry import get_version
from harness.rubrics import load_rubric
from harness.store import ResultRow, Store

KEY_ENV = "EVALS_PAIRWISE_TEST_KEY"
ROOT = Path(__file__).resolve().parents[1]
# case -> (base output, candidate output); the reference answer is "ok"
OUTPUTS = {
    "both": ("ok", "ok too"),
    "candidate": ("wrong", "ok"),
    "base": ("ok", "wrong"),
    "neither": ("wrong", "bad"),
}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-fake-pairwise")


def response(prompt: str, slot: str) -> str:
    found = re.search(
        rf"<response_{slot} id=(\w+)>\n(.*?)\n</response_{slot} id=\1>", prompt, re.DOTALL
    )
    assert found is not None
    return found.group(2)


def content_judge(body: dict[str, Any]) -> Reply:
    """Prefers the response containing the reference; a tie when both or neither do."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    a, b = ("ok" in response(prompt, "a")), ("ok" in response(prompt, "b"))
    winner = "tie" if a == b else ("A" if a else "B")
    return Reply(json.dumps({"reason": "by content", "winner": winner}))


def always(slot: str) -> Any:
    return lambda body: Reply(json.dumps({"reason": "first is best", "winner": slot}))


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(responder=content_judge) as fake:
        yield fake


def add_run(store: Store, run_id: str, outputs: Mapping[tuple[str, str], str | None]) -> None:
    store.create_run(run_id, "suite", {})
    for (case_id, model), output in outputs.items():
        store.add_result(
            ResultRow(
                run_id=run_id,
                case_id=case_id,
                model=model,
                epoch=0,
                status="pass",
                score=None,
                output=output,
                error=None,
                error_kind=None,
                latency_ms=None,
                input_tokens=None,
                output_tokens=None,
                cost_usd=None,
                cached=False,
                attempts=None,
                trace_id=None,
                case_data={"fields": {"question": f"{case_id}?"}, "expected": "ok", "metadata": {}},
                detail={"messages": [{"role": "user", "content": f"Question {case_id}?"}]},
                scores=[],
            )
        )
    store.flush()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    db = Store.open(tmp_path / "evals.db")
    add_run(db, "base", {(c, "m"): pair[0] for c, pair in OUTPUTS.items()})
    add_run(
        db,
        "cand",
        {(c, "m2"): pair[1] for c, pair in OUTPUTS.items()} | {("only-candidate", "m2"): "ok"},
    )
    two_models: dict[tuple[str, str], str | None] = {("no-output", "A"): None}
    two_models |= {(c, "A"): pair[0] for c, pair in OUTPUTS.items()}
    two_models |= {(c, "B"): pair[1] for c, pair in OUTPUTS.items()} | {("no-output", "B"): "ok"}
    add_run(db, "both", two_models)
    return db


def judge(server: FakeServer) -> ModelConfig:
    return ModelConfig(
        id="openai/fake-pairwise",
        api_base=server.url,
        api_key_env=KEY_ENV,
        max_attempts=1,
        timeout_s=5.0,
    )


@pytest.mark.parametrize(
    ("first", "second", "outcome", "followed"),
    [
        ("A", "B", "base", False),  # base shown first won, then base shown second won
        ("B", "A", "candidate", False),
        ("A", "A", "tie", True),  # always the first slot: position decided
        ("B", "B", "tie", True),
        ("tie", "tie", "tie", False),
        ("A", "tie", "tie", False),
        ("tie", "A", "tie", False),
        ("B", "tie", "tie", False),
        ("tie", "B", "tie", False),
    ],
)
def test_pairwise_decision(first: str, second: str, outcome: str, followed: bool) -> None:
    assert pairwise_decision(first, second) == (outcome, followed)


async def test_both_orders_are_asked_and_combined(server: FakeServer, store: Store) -> None:
    rubric = load_rubric("correctness", ROOT)
    report = await compare(store, "base", "cand", rubric, judge(server))
    outcomes = {c.case_id: c.outcome for c in report.cases}
    assert outcomes == {"both": "tie", "candidate": "candidate", "base": "base", "neither": "tie"}
    assert len(server.requests) == 8  # 4 shared cases x 2 orders
    summary = report.summary()
    assert (summary["n"], summary["wins"], summary["ties"], summary["losses"]) == (4, 1, 2, 1)
    assert summary["position_bias_rate"] == 0.0 and summary["errors"] == 0
    assert summary["judge"]["calls"] == 8
    assert stored_outcomes(store, report.comparison_id) == {"tie": 2, "candidate": 1, "base": 1}
    # The rubric version is registered with its content.
    assert get_version(store, "rubric", "correctness", rubric.version) is not None
    # Orders really swapped: each output was shown first once.
    shown_first: dict[str, set[str]] = {}
    for request in server.requests:
        prompt = request.body["messages"][1]["content"]
        case = re.search(r"Question (\w+)\?", prompt).group(1)  # type: ignore[union-attr]
        shown_first.setdefault(case, set()).add(response(prompt, "a"))
    assert shown_first == {case: set(pair) for case, pair in OUTPUTS.items()}


async def test_a_position_biased_judge_yields_ties_and_full_bias(
    server: FakeServer, store: Store
) -> None:
    server.responder = always("A")
    report = await compare(store, "base", "cand", load_rubric("correctness", ROOT), judge(server))
    summary = report.summary()
    assert summary["ties"] == 4 and summary["wins"] == summary["losses"] == 0
    assert summary["position_bias_rate"] == 1.0


async def test_two_models_of_one_run(server: FakeServer, store: Store) -> None:
    report = await compare(
        store,
        "both",
        "both",
        load_rubric("correctness", ROOT),
        judge(server),
        base_model="A",
        candidate_model="B",
    )
    summary = report.summary()
    assert (summary["wins"], summary["losses"], summary["ties"]) == (1, 1, 2)
    assert summary["skipped"] == 1  # "no-output" has no base output
    with pytest.raises(ConfigError, match="two different models"):
        await compare(store, "both", "both", load_rubric("correctness", ROOT), judge(server))
    with pytest.raises(ConfigError, match="no results for model 'C'"):
        await compare(
            store,
            "both",
            "both",
            load_rubric("correctness", ROOT),
            judge(server),
            base_model="A",
            candidate_model="C",
        )


async def test_an_unusable_verdict_is_an_error_not_a_tie(server: FakeServer, store: Store) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        prompt = body["messages"][1]["content"]
        return Reply("no idea") if "Question candidate?" in prompt else content_judge(body)

    server.responder = respond
    report = await compare(
        store, "base", "cand", load_rubric("correctness", ROOT), judge(server), max_reasks=1
    )
    outcome = {c.case_id: c for c in report.cases}["candidate"]
    assert outcome.outcome == "error" and "no usable judge verdict" in (outcome.error or "")
    summary = report.summary()
    assert summary["errors"] == 1 and summary["n"] == 3


def test_pair_results_by_model_when_runs_hold_several() -> None:
    def row(case: str, model: str, output: str | None = "x") -> ResultRow:
        return ResultRow(
            "r",
            case,
            model,
            0,
            "pass",
            None,
            output,
            None,
            None,
            None,
            None,
            None,
            None,
            False,
            None,
            None,
            {},
            None,
            [],
        )

    base = [row("a", "m1"), row("a", "m2"), row("b", "m1", None)]
    candidate = [row("a", "m1"), row("a", "m2"), row("b", "m1")]
    pairs, skipped = pair_results(base, candidate)
    assert [(b.model, c.model) for b, c in pairs] == [("m1", "m1"), ("m2", "m2")]
    assert skipped == 1


def test_cli_pairwise_json(store: Store, tmp_path: Path) -> None:
    store.close()
    handle = FakeServer(responder=content_judge).run_in_thread()
    try:
        result = CliRunner().invoke(
            app,
            [
                "judge",
                "pairwise",
                "base",
                "cand",
                "--rubric",
                "correctness",
                "--judge",
                "openai/fake-pairwise",
                "--judge-api-base",
                handle.url,
                "--judge-api-key-env",
                KEY_ENV,
                "--store",
                str(tmp_path / "evals.db"),
                "--json",
            ],
        )
        table = CliRunner().invoke(
            app,
            [
                "judge",
                "pairwise",
                "both",
                "--models",
                "A,B",
                "--rubric",
                "correctness",
                "--judge",
                "openai/fake-pairwise",
                "--judge-api-base",
                handle.url,
                "--judge-api-key-env",
                KEY_ENV,
                "--store",
                str(tmp_path / "evals.db"),
            ],
        )
        missing = CliRunner().invoke(
            app,
            [
                "judge",
                "pairwise",
                "base",
                "--rubric",
                "correctness",
                "--judge",
                "x/y",
                "--store",
                str(tmp_path / "evals.db"),
            ],
        )
    finally:
        handle.stop()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["summary"]["wins"] == 1 and report["summary"]["position_bias_rate"] == 0.0
    assert table.exit_code == 0 and "position bias" in table.stdout
    assert missing.exit_code == 2 and "--models" in missing.stderr
