"""Tests of harness/gate.py and harness/gate_policy.py: policy loading, decisions, the
noise/power simulation, and gate exit codes end to end through the CLI against the fake server
(tmp stores via EVALS_HOME)."""

from __future__ import annotations

import hashlib
import json
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.compare import Settings, compare_runs
from harness.config import GatePolicy
from harness.errors import ConfigError
from harness.fakeserver import FakeServer, ThreadedFakeServer
from harness.gate import decide
from harness.gate_policy import (
    calibration_lookup,
    file_kappa_lookup,
    load_policy,
    with_overrides,
)
from tests.test_compare import row, run

FAST = Settings(resamples=2000, seed=0)

# --- policy -------------------------------------------------------------------------------


def write_suite(
    path: Path,
    gate: str = "",
    *,
    url: str = "http://127.0.0.1:9/v1",
    model: str = "openai/fake-model",
    price: float = 1.0,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        textwrap.dedent(f"""\
        name: sim
        dataset: data/cases.jsonl
        prompt: q
        target: chat
        models:
          - id: {model}
            name: m
            api_base: {url}
            api_key_env: FAKE_KEY
            max_attempts: 1
            price: {{input_per_million: {price}, output_per_million: {price}}}
        scorers:
          - type: icontains
            value: "{{{{ expected }}}}"
        """)
        + gate,
        encoding="utf-8",
    )
    return path


def test_gate_block_loads_with_percentages(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path / "s.yaml",
        textwrap.dedent("""\
        gate:
          max_drop: {icontains: 5%, default: 0.02}
          alpha: 0.01
          max_cost_increase: 10%
          max_latency_increase: 0.2
          critical: [c0001]
          min_kappa: 0.6
        """),
    )
    policy, name = load_policy(suite)
    assert name == "sim"
    assert policy.drop_for("icontains") == pytest.approx(0.05)
    assert policy.drop_for("all") == pytest.approx(0.02)
    assert policy.max_cost_increase == pytest.approx(0.1)
    assert (policy.alpha, policy.critical, policy.min_kappa) == (0.01, ["c0001"], 0.6)
    assert load_policy(write_suite(tmp_path / "t.yaml"))[0] == GatePolicy()


@pytest.mark.parametrize(
    ("block", "line", "field"),
    [
        ("gate:\n  alpha: 2\n", 16, "gate.alpha"),
        ("gate:\n  max_dorp: 0.1\n", 16, "gate.max_dorp"),
        ("gate:\n  max_drop: {icontain: 0.1}\n", 16, "gate.max_drop"),
        ("gate:\n  max_drop: 150%\n", 16, "gate.max_drop"),
    ],
)
def test_bad_gate_blocks_name_file_line_and_field(
    tmp_path: Path, block: str, line: int, field: str
) -> None:
    suite = write_suite(tmp_path / "s.yaml", block)
    with pytest.raises(ConfigError) as caught:
        load_policy(suite)
    assert caught.value.line == line
    assert caught.value.field is not None and caught.value.field.startswith(field)


def test_command_line_overrides_are_validated() -> None:
    policy = with_overrides(
        GatePolicy(critical=["a"]), {"alpha": 0.1, "critical": ["b"], "max_drop": None}
    )
    assert (policy.alpha, policy.critical) == (0.1, ["a", "b"])
    with pytest.raises(ConfigError, match="--alpha"):
        with_overrides(GatePolicy(), {"alpha": 5})


# --- decisions ----------------------------------------------------------------------------


def outcomes(n: int, rate: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["pass" if u < rate else "fail" for u in rng.random(n)]


def gate_on(
    base_statuses: list[str], cand_statuses: list[str], policy: GatePolicy, **kwargs: Any
) -> Any:
    base = run(
        "b", [row(f"c{i:04d}", s, cost=0.01, latency=100.0) for i, s in enumerate(base_statuses)]
    )
    cand = run(
        "c", [row(f"c{i:04d}", s, cost=0.01, latency=100.0) for i, s in enumerate(cand_statuses)]
    )
    comparison = compare_runs(base, cand, settings=FAST)
    return decide(comparison, cand.results, policy, **kwargs)


def test_noise_is_not_flagged_and_a_real_drop_is() -> None:
    """Simulation: same-rate runs with different seeds pass in at least 95 of 100 trials;
    a real 10-point drop at N=400 is flagged (and is flagged in most trials: power)."""
    policy = GatePolicy(max_drop=0.02)
    false_alarms = sum(
        gate_on(outcomes(400, 0.8, 2 * t), outcomes(400, 0.8, 2 * t + 1), policy).status != "pass"
        for t in range(100)
    )
    assert false_alarms <= 5
    detected = sum(
        gate_on(outcomes(400, 0.8, 1000 + t), outcomes(400, 0.7, 2000 + t), policy).status
        == "regression"
        for t in range(100)
    )
    assert detected >= 80
    decision = gate_on(outcomes(400, 0.8, 7), outcomes(400, 0.7, 8), policy)
    assert decision.status == "regression" and decision.exit_code == 1


def test_a_drop_within_the_allowed_drop_passes_even_if_significant() -> None:
    base = ["pass"] * 1000
    cand = ["fail"] * 30 + ["pass"] * 970  # -3 points, p ~ 2e-9
    assert gate_on(base, cand, GatePolicy(max_drop=0.05)).status == "pass"
    assert gate_on(base, cand, GatePolicy(max_drop=0.02)).status == "regression"


def test_a_large_but_insignificant_drop_passes() -> None:
    # 2 of 5 cases flip: a 40-point drop that 5 cases cannot show is real.
    decision = gate_on(["pass"] * 5, ["fail", "fail", "pass", "pass", "pass"], GatePolicy())
    assert decision.status == "pass"


def test_too_many_errors_is_unmeasurable_even_with_a_regression() -> None:
    base = ["pass"] * 100
    cand = ["error"] * 20 + ["fail"] * 80
    decision = gate_on(base, cand, GatePolicy(max_error_rate=0.1))
    assert decision.status == "unmeasurable" and decision.exit_code == 3
    assert any(c.kind == "errors" and c.status == "unmeasurable" for c in decision.checks)


def test_no_overlapping_cases_is_unmeasurable() -> None:
    base = run("b", [row("a", "pass"), row("b", "pass")])
    cand = run("c", [row("x", "pass"), row("y", "pass")])
    decision = decide(compare_runs(base, cand, settings=FAST), cand.results, GatePolicy())
    assert decision.status == "unmeasurable"
    assert any(c.kind == "overlap" for c in decision.failing())


def test_cost_and_latency_budgets() -> None:
    base = run("b", [row(f"c{i}", "pass", cost=0.010, latency=100.0 + i) for i in range(20)])
    cand = run("c", [row(f"c{i}", "pass", cost=0.012, latency=130.0 + i) for i in range(20)])
    comparison = compare_runs(base, cand, settings=FAST)
    for policy, status in [
        (GatePolicy(max_cost_increase=0.1), "regression"),
        (GatePolicy(max_cost_increase=0.25), "pass"),
        (GatePolicy(max_cost_per_case_increase=0.1), "regression"),
        (GatePolicy(max_latency_increase=0.2), "regression"),
        (GatePolicy(max_latency_increase=0.5), "pass"),
    ]:
        assert decide(comparison, cand.results, policy).status == status, policy


def test_unknown_cost_under_a_cost_budget_is_unmeasurable() -> None:
    base = run("b", [row("a", "pass", cost=None)])
    cand = run("c", [row("a", "pass", cost=None)])
    decision = decide(
        compare_runs(base, cand, settings=FAST), cand.results, GatePolicy(max_cost_increase=0.1)
    )
    assert decision.status == "unmeasurable"
    assert "cost is unknown" in decision.failing()[0].detail


def test_critical_cases_must_pass() -> None:
    statuses = ["pass"] * 50
    failing = ["fail"] + ["pass"] * 49
    assert gate_on(statuses, failing, GatePolicy(critical=["c0001"])).status == "pass"
    decision = gate_on(statuses, failing, GatePolicy(critical=["c0000"]))
    assert decision.status == "regression"
    assert decision.failing()[0].kind == "critical"
    assert gate_on(statuses, statuses, GatePolicy(critical=["nope"])).status == "unmeasurable"
    errored = ["error"] + ["pass"] * 49
    assert gate_on(statuses, errored, GatePolicy(critical=["c0000"])).status == "unmeasurable"


def test_min_kappa_needs_a_calibration_record(tmp_path: Path) -> None:
    judge = {
        "type": "judge",
        "name": "correct",
        "rubric": "correctness@abcd1234",
        "judge": {"id": "openai/gpt-4o-mini"},
    }
    manifest = {"scorers": [judge]}
    lookup = file_kappa_lookup(tmp_path)
    decision = gate_on(
        ["pass"] * 5,
        ["pass"] * 5,
        GatePolicy(min_kappa=0.6),
        cand_manifest=manifest,
        kappa_lookup=lookup,
    )
    assert decision.status == "unmeasurable"
    assert "no calibration record" in decision.failing()[0].detail
    folder = tmp_path / "reports" / "calibration"
    folder.mkdir(parents=True)
    (folder / "correctness.json").write_text(
        json.dumps(
            [
                {
                    "rubric": "correctness",
                    "rubric_version": "abcd1234",
                    "judge": "openai/gpt-4o-mini",
                    "kappa": 0.4,
                    "created_at": 1,
                },
                {
                    "rubric": "correctness",
                    "rubric_version": "abcd1234",
                    "judge": "openai/gpt-4o-mini",
                    "kappa": 0.75,
                    "created_at": 2,
                },
            ]
        )
    )
    lookup = file_kappa_lookup(tmp_path)
    assert lookup(judge) == 0.75  # the newest record
    ok = gate_on(
        ["pass"] * 5,
        ["pass"] * 5,
        GatePolicy(min_kappa=0.6),
        cand_manifest=manifest,
        kappa_lookup=lookup,
    )
    assert ok.status == "pass"
    low = gate_on(
        ["pass"] * 5,
        ["pass"] * 5,
        GatePolicy(min_kappa=0.8),
        cand_manifest=manifest,
        kappa_lookup=lookup,
    )
    assert low.status == "unmeasurable" and "below min_kappa" in low.failing()[0].detail
    plain = gate_on(["pass"] * 5, ["pass"] * 5, GatePolicy(min_kappa=0.8))
    assert plain.status == "pass" and "no judge scorers" in plain.notes[0]


def test_kappa_comes_from_the_store_before_committed_records(tmp_path: Path) -> None:
    from harness.calibrate import CalibrationRecord, record_calibration
    from harness.store import Store

    judge = {"type": "judge", "rubric": "correctness@abcd1234", "judge": {"id": "local/j"}}
    store_path = tmp_path / "evals.db"
    assert calibration_lookup(tmp_path, store_path)(judge) is None
    with Store.open(store_path) as store:
        record_calibration(
            store,
            CalibrationRecord(
                rubric="correctness",
                rubric_version="abcd1234",
                judge_model="local/j",
                run_id=None,
                labels="labels.csv",
                n=40,
                agreement=0.9,
                tpr=0.9,
                fpr=0.1,
                kappa=0.8,
            ),
        )
    assert calibration_lookup(tmp_path, store_path)(judge) == 0.8


# --- end to end through the CLI, against the fake server --------------------------------------


class KnownRateModel:
    """A responder that answers 'yes' (correct) for a seeded, known fraction of questions."""

    def __init__(self) -> None:
        self.rate, self.seed, self.wrong = 1.0, 0, set[str]()

    def __call__(self, body: dict[str, Any]) -> str:
        question = str(body["messages"][-1]["content"])
        draw = int(hashlib.sha256(f"{self.seed}:{question}".encode()).hexdigest()[:12], 16)
        correct = draw / 16**12 < self.rate and question not in self.wrong
        return "yes" if correct else "no"


@pytest.fixture(scope="module")
def model_server() -> Iterator[tuple[ThreadedFakeServer, KnownRateModel]]:
    model = KnownRateModel()
    handle = FakeServer(responder=model, latency_ms=0, seed=0).run_in_thread()
    yield handle, model
    handle.stop()


@pytest.fixture
def project(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model_server: tuple[ThreadedFakeServer, KnownRateModel],
) -> Any:
    handle, model = model_server
    model.rate, model.seed, model.wrong = 1.0, 0, set()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FAKE_KEY", "sk-fake-test")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "q.yaml").write_text(
        'name: q\nmessages:\n  - role: user\n    content: "{{ question }}"\n'
    )

    def setup(n: int, gate: str = "", **suite: Any) -> Path:
        data = tmp_path / "evalsets" / "data" / "cases.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text(
            "".join(
                json.dumps(
                    {
                        "id": f"c{i:04d}",
                        "question": f"question {i}",
                        "expected": "yes",
                        "metadata": {"difficulty": "hard" if i % 3 == 0 else "easy"},
                    }
                )
                + "\n"
                for i in range(n)
            )
        )
        return write_suite(tmp_path / "evalsets" / "sim.yaml", gate, url=handle.url, **suite)

    return setup, model


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def baseline_run(suite: Path) -> None:
    result = cli("run", str(suite), "--cache", "off")
    assert result.exit_code in (0, 1), result.output
    result = cli("baseline", "set", "last")
    assert result.exit_code == 0, result.output


def test_gate_end_to_end_flags_a_real_ten_point_drop(
    project: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, model = project
    suite = setup(400, "gate:\n  max_drop: 0.02\n")
    model.rate, model.seed = 0.8, 1
    baseline_run(suite)
    assert (tmp_path / "reports" / "baseline" / "sim.jsonl").is_file()
    model.rate, model.seed = 0.7, 2
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = cli(
        "gate",
        str(suite),
        "--cache",
        "off",
        "--junit",
        "out/junit.xml",
        "--markdown",
        "out/gate.md",
    )
    assert result.exit_code == 1, result.output
    assert "regression" in (tmp_path / "out" / "gate.md").read_text()
    assert summary.read_text().startswith("## evals gate: ❌ regression")
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    cases = root.find("testsuite")
    assert cases is not None and cases.get("tests") == "400"
    assert int(cases.get("failures") or 0) == len(cases.findall("testcase/failure")) > 80


def test_gate_exit_codes_end_to_end(project: Any, tmp_path: Path) -> None:
    setup, model = project
    suite = setup(30)
    model.rate, model.seed = 0.9, 5
    baseline_run(suite)

    same = cli("gate", str(suite), "--cache", "off")
    assert same.exit_code == 0, same.output

    model.wrong = {"question 4"}
    critical = cli("gate", str(suite), "--cache", "off", "--critical", "c0004")
    assert critical.exit_code == 1, critical.output
    assert "critical" in critical.output
    model.wrong = set()

    write_suite(suite, url=model_server_url(project), price=2.0)
    budget = cli("gate", str(suite), "--cache", "off", "--max-cost-increase", "0.1")
    assert budget.exit_code == 1, budget.output

    write_suite(suite, url=model_server_url(project), model="openai/fake-500")
    errors = cli("gate", str(suite), "--cache", "off", "--junit", "errors.xml")
    assert errors.exit_code == 3, errors.output
    assert "aborted" in errors.output and "gate: unmeasurable" in errors.output
    junit = ET.parse(tmp_path / "errors.xml").getroot()
    assert int(junit.get("errors") or 0) >= 1

    candidate = cli("gate", "--candidate", "last", "--baseline", "baseline", "--json")
    assert candidate.exit_code in (1, 3)


def model_server_url(project: Any) -> str:
    text = (Path.cwd() / "evalsets" / "sim.yaml").read_text()
    return text.split("api_base: ")[1].split("\n")[0]


def test_gate_refuses_a_missing_baseline_with_a_config_error(project: Any) -> None:
    setup, _ = project
    suite = setup(5)
    result = cli("gate", str(suite), "--cache", "off")
    assert result.exit_code == 2
    assert "evals baseline set" in result.output


def test_shards_merge_into_one_comparable_run(project: Any, tmp_path: Path) -> None:
    setup, model = project
    suite = setup(24)
    model.rate, model.seed = 0.8, 3
    files = []
    for index in (1, 2):
        result = cli("run", str(suite), "--cache", "off", "--shard", f"{index}/2")
        assert result.exit_code == 0, result.output
        path = tmp_path / f"shard{index}.jsonl"
        assert cli("export", "last", "-o", str(path)).exit_code == 0
        files.append(str(path))
    merged = cli("merge", *files, "-o", "merged.jsonl")
    assert merged.exit_code == 0, merged.output
    full = cli("run", str(suite), "--cache", "off")
    assert full.exit_code == 0
    compared = cli("compare", "merged.jsonl", "last", "--json")
    data = json.loads(compared.output)
    overall = data["metrics"][0]
    assert overall["n_both"] == 24 and overall["pass_rate"]["diff"] == 0.0
    assert cli("merge", files[0], files[0], "-o", "twice.jsonl").exit_code == 2
    assert cli("run", str(suite), "--shard", "3/2").exit_code == 2
