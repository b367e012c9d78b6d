"""Tests of harness/calibrate.py: labels, agreement/TPR/FPR/kappa against hand-computed values,
matching a run's judge scores to labels, stored records, latest_kappa, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.calibrate import (
    calibrate,
    calibrations,
    cohen_kappa,
    latest_kappa,
    load_labels,
    metrics,
    parse_label,
)
from harness.cli import app
from harness.errors import ConfigError, StoreError
from harness.store import ResultRow, ScoreRow, Store

# Hand-computed: tp=4 (0,1,2,8), fn=1 (3), fp=2 (6,9), tn=3 (4,5,7).
# agreement 7/10; TPR 4/5; FPR 2/5; p_e = .5*.6 + .5*.4 = .5, kappa = (.7-.5)/(1-.5) = .4
HUMAN = [True, True, True, True, False, False, False, False, True, False]
JUDGE = [True, True, True, False, False, False, True, False, True, True]


def test_metrics_match_hand_computed_values() -> None:
    figures = metrics(HUMAN, JUDGE)
    assert figures["n"] == 10
    assert figures["agreement"] == pytest.approx(0.7)
    assert figures["tpr"] == pytest.approx(0.8)
    assert figures["fpr"] == pytest.approx(0.4)
    assert figures["kappa"] == pytest.approx(0.4)
    assert figures["confusion"] == {"tp": 4, "fn": 1, "fp": 2, "tn": 3}


def test_perfect_and_inverted_agreement() -> None:
    assert cohen_kappa(HUMAN, HUMAN) == pytest.approx(1.0)
    assert cohen_kappa(HUMAN, [not h for h in HUMAN]) == pytest.approx(-1.0)


def test_undefined_rates_are_none_not_zero() -> None:
    figures = metrics([True, True], [True, True])
    assert figures["tpr"] == 1.0 and figures["fpr"] is None
    assert figures["kappa"] is None  # one class on both sides: kappa is undefined
    assert metrics([], [])["agreement"] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pass", True),
        ("FAIL", False),
        ("1", True),
        (0, False),
        (True, True),
        ("yes", True),
        ("false", False),
        ("maybe", None),
        (2, None),
        ("", None),
    ],
)
def test_parse_label(value: Any, expected: bool | None) -> None:
    assert parse_label(value) is expected


def test_load_labels_csv_and_jsonl(tmp_path: Path) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("case_id,label,model,epoch\na,pass,,\nb,0,m1,1\n", encoding="utf-8")
    labels = load_labels(csv_file)
    assert [(x.case_id, x.passed, x.model, x.epoch) for x in labels] == [
        ("a", True, None, None),
        ("b", False, "m1", 1),
    ]
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text(
        '{"case_id": "a", "label": true}\n\n{"id": "b", "label": "fail"}\n', encoding="utf-8"
    )
    assert [(x.case_id, x.passed) for x in load_labels(jsonl)] == [("a", True), ("b", False)]


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("case_id,label\na,pass\nb,perhaps\n", "not pass/fail", 3),
        ("case_id,label\na,pass\na,fail\n", "duplicate label", 3),
        ("case_id,label\n,pass\n", "missing case_id", 2),
        ("case_id,label,epoch\na,pass,x\n", "not an integer", 2),
        ("case_id,label\n", "no labels", None),
    ],
)
def test_bad_labels_name_the_line(
    tmp_path: Path, text: str, message: str, line: int | None
) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_labels(path)
    assert info.value.line == line


# --- against a stored run ---------------------------------------------------------------------


def judge_score(
    status: str,
    model: str = "judge-a",
    version: str = "v1",
    rubric: str = "correctness",
    scorer: str = "judge",
) -> ScoreRow:
    if status == "error":
        return ScoreRow(scorer, "error", None, "judge_error", {"kind": "judge_error", "raw": "?"})
    detail = {
        "unstable": False,
        "judge": {"rubric": rubric, "rubric_version": version, "model": model},
    }
    return ScoreRow(scorer, status, 1.0 if status == "pass" else 0.0, "r", detail)


def add_result(
    store: Store,
    run_id: str,
    case_id: str,
    scores: list[ScoreRow],
    model: str = "sut",
    epoch: int = 0,
    output: str | None = "out",
) -> None:
    store.add_result(
        ResultRow(
            run_id=run_id,
            case_id=case_id,
            model=model,
            epoch=epoch,
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
            case_data={"fields": {"question": f"q {case_id}?"}, "expected": "ref", "metadata": {}},
            detail=None,
            scores=scores,
        )
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    db = Store.open(tmp_path / "evals.db")
    db.create_run("run1", "suite", {})
    for index, (human, judged) in enumerate(zip(HUMAN, JUDGE, strict=True)):
        scores = [
            judge_score("pass" if judged else "fail"),
            # a second judge model on the same rubric: always passes
            judge_score("pass", model="judge-b", scorer="judge_b"),
            judge_score("fail", rubric="helpfulness", scorer="helpful"),
        ]
        add_result(db, "run1", f"c{index}", scores)
        del human
    add_result(
        db,
        "run1",
        "unlabelled",
        [judge_score("pass"), judge_score("pass", "judge-b", scorer="judge_b")],
    )
    add_result(
        db,
        "run1",
        "errored",
        [judge_score("error"), judge_score("pass", "judge-b", scorer="judge_b")],
    )
    db.flush()
    return db


def write_labels(tmp_path: Path, labels: list[bool], extra: str = "") -> Path:
    path = tmp_path / "labels.csv"
    rows = [f"c{i},{'pass' if h else 'fail'}" for i, h in enumerate(labels)]
    path.write_text(
        "case_id,label\n" + "\n".join(rows) + "\nerrored,pass\n" + extra, encoding="utf-8"
    )
    return path


def test_calibrate_a_run_per_judge_model(store: Store, tmp_path: Path) -> None:
    labels = write_labels(tmp_path, HUMAN, "ghost,pass\n")
    records = {r.judge_model: r for r in calibrate(store, "run1", "correctness", labels)}
    assert set(records) == {"judge-a", "judge-b"}
    a = records["judge-a"]
    assert (a.n, a.rubric_version, a.run_id) == (10, "v1", "run1")
    assert a.agreement == pytest.approx(0.7) and a.kappa == pytest.approx(0.4)
    assert a.tpr == pytest.approx(0.8) and a.fpr == pytest.approx(0.4)
    assert a.detail["unlabelled"] == 1 and a.detail["judge_errors"] == 1
    assert a.detail["unmatched_labels"] == 1  # "ghost" matches nothing
    b = records["judge-b"]
    assert b.n == 11 and b.tpr == 1.0 and b.fpr == 1.0  # "errored" is judged by judge-b
    assert b.kappa == pytest.approx(0.0)
    assert latest_kappa(store, "correctness", "judge-a") == pytest.approx(0.4)
    assert latest_kappa(store, "correctness", "judge-a", rubric_version="v2") is None
    assert latest_kappa(store, "correctness", "nobody") is None
    assert len(calibrations(store, "correctness")) == 2


def test_latest_kappa_is_the_newest_record(store: Store, tmp_path: Path) -> None:
    calibrate(store, "run1", "correctness", write_labels(tmp_path, HUMAN))
    calibrate(store, "run1", "correctness", write_labels(tmp_path, JUDGE))
    assert latest_kappa(store, "correctness", "judge-a") == pytest.approx(1.0)


def test_nothing_to_calibrate_and_ambiguous_labels(store: Store, tmp_path: Path) -> None:
    labels = write_labels(tmp_path, HUMAN)
    with pytest.raises(StoreError, match="no judge scores for rubric 'faithfulness'"):
        calibrate(store, "run1", "faithfulness", labels)
    add_result(store, "run1", "c0", [judge_score("pass")], model="other-sut")
    store.flush()
    with pytest.raises(ConfigError, match="names no model"):
        calibrate(store, "run1", "correctness", labels)
    with_model = tmp_path / "model_labels.jsonl"
    with_model.write_text(
        '{"case_id": "c0", "model": "other-sut", "label": "fail"}\n', encoding="utf-8"
    )
    records = {
        r.judge_model: r for r in calibrate(store, "run1", "correctness", with_model, save=False)
    }
    assert records["judge-a"].n == 1 and records["judge-a"].agreement == 0.0


def test_cli_calibrate_json_and_min_kappa(store: Store, tmp_path: Path) -> None:
    labels = write_labels(tmp_path, HUMAN)
    store.close()
    runner = CliRunner()
    args = [
        "judge",
        "calibrate",
        "correctness",
        "--run",
        "run1",
        "--labels",
        str(labels),
        "--store",
        str(tmp_path / "evals.db"),
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    records = {r["judge_model"]: r for r in json.loads(result.stdout)}
    assert records["judge-a"]["kappa"] == pytest.approx(0.4)
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "judge-a" in table.stdout and "0.400" in table.stdout
    gated = runner.invoke(app, [*args, "--min-kappa", "0.5"])
    assert gated.exit_code == 1
    missing = runner.invoke(
        app,
        [
            "judge",
            "calibrate",
            "correctness",
            "--labels",
            str(tmp_path / "nope.csv"),
            "--store",
            str(tmp_path / "evals.db"),
        ],
    )
    assert missing.exit_code == 2 and "cannot read labels" in missing.stderr
