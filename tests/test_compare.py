"""Tests of harness/compare.py and harness/stats.py: paired statistics against hand-computed and
scipy reference values, pairing and error accounting, flips, stability, slices, cost, latency."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.stats

from harness import stats
from harness.compare import OVERALL, Settings, compare_runs, lineage_changes
from harness.runrefs import LoadedRun
from harness.store import ResultRow, ScoreRow

FAST = Settings(resamples=2000, seed=0)


def row(
    case: str,
    status: str,
    *,
    epoch: int = 0,
    model: str = "m",
    value: float | None = None,
    scorer: str = "exact",
    output: str = "out",
    cost: float | None = None,
    latency: float | None = None,
    cached: bool = False,
    metadata: dict[str, Any] | None = None,
) -> ResultRow:
    """One result with one scorer; an `error` result has no scores (the target failed)."""
    score_value = value if value is not None else (1.0 if status == "pass" else 0.0)
    scores = [] if status == "error" else [ScoreRow(scorer, status, score_value, f"{status}!")]
    return ResultRow(
        run_id="r",
        case_id=case,
        model=model,
        epoch=epoch,
        status=status,
        score=None if status == "error" else score_value,
        output=output,
        error="boom" if status == "error" else None,
        error_kind="provider_error" if status == "error" else None,
        latency_ms=latency,
        input_tokens=1,
        output_tokens=1,
        cost_usd=cost,
        cached=cached,
        attempts=1,
        trace_id=None,
        case_data={"fields": {}, "expected": None, "metadata": metadata or {}},
        detail=None,
        scores=scores,
    )


def run(
    run_id: str,
    results: list[ResultRow],
    manifest: dict[str, Any] | None = None,
) -> LoadedRun:
    record = {
        "id": run_id,
        "suite": "s",
        "status": "completed",
        "created_at": 0.0,
        "manifest": manifest or {"scorers": [{"type": "exact"}], "repeat": 1},
    }
    return LoadedRun(record, results, "store")


# --- statistics against hand-computed values ------------------------------------------------


def test_mcnemar_exact_matches_hand_computed_binomial() -> None:
    # 1 improved, 9 regressed: P(X <= 1) + P(X >= 9) for X ~ Bin(10, 1/2) = 2 * 11 / 1024.
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == 1.0
    # 0 vs 6: 2 * (1/2)^6
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_wilcoxon_matches_hand_computed_and_scipy() -> None:
    # Five positive differences, all distinct: exact two-sided p = 2 / 2^5.
    assert stats.wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)
    rng = np.random.default_rng(7)
    diffs = np.round(rng.normal(0.1, 0.3, size=60), 3)
    diffs[:5] = 0.0  # zeros are dropped (Wilcox's method), as scipy's default
    expected = scipy.stats.wilcoxon(diffs, zero_method="wilcox").pvalue
    assert stats.wilcoxon_signed_rank(diffs) == pytest.approx(expected)


def test_wilcoxon_all_zero_differences_mean_no_evidence() -> None:
    assert stats.wilcoxon_signed_rank([0.0, 0.0, 0.0]) == 1.0
    assert stats.wilcoxon_signed_rank([]) == 1.0


def test_holm_adjustment_matches_hand_computed() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert stats.holm_adjust([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert stats.holm_adjust([0.9, 0.8]) == [1.0, 1.0]


def test_bootstrap_interval_is_seeded_and_agrees_with_normal_theory() -> None:
    diffs = np.r_[np.ones(60), -np.ones(100), np.zeros(240)]  # mean -0.1, n = 400
    first = stats.bootstrap_mean_ci(diffs, resamples=5000, seed=1)
    again = stats.bootstrap_mean_ci(diffs, resamples=5000, seed=1)
    assert first == again
    assert first is not None
    se = diffs.std(ddof=0) / np.sqrt(diffs.size)
    assert first.low == pytest.approx(-0.1 - 1.96 * se, abs=0.006)
    assert first.high == pytest.approx(-0.1 + 1.96 * se, abs=0.006)


def test_bootstrap_counts_path_agrees_with_index_resampling() -> None:
    """Pass/fail differences use multinomial counts; check them against plain resampling."""
    rng = np.random.default_rng(3)
    diffs = rng.choice([-1.0, 0.0, 1.0], p=[0.2, 0.6, 0.2], size=300)
    fast = stats.bootstrap_mean_ci(diffs, resamples=20_000, seed=5)
    index = np.random.default_rng(11).integers(0, diffs.size, size=(20_000, diffs.size))
    reference = np.percentile(diffs[index].mean(axis=1), [2.5, 97.5])
    assert fast is not None
    assert fast.low == pytest.approx(reference[0], abs=0.006)
    assert fast.high == pytest.approx(reference[1], abs=0.006)


def test_bootstrap_continuous_values_and_edge_cases() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0.05, 0.2, size=500)
    interval = stats.bootstrap_mean_ci(values, resamples=3000, seed=0)
    assert interval is not None
    se = values.std() / np.sqrt(values.size)
    assert interval.low == pytest.approx(values.mean() - 1.96 * se, abs=0.004)
    assert stats.bootstrap_mean_ci([]) is None
    assert stats.bootstrap_mean_ci([0.5, 0.5]) == stats.Interval(0.5, 0.5)


def test_percentile_and_relative_change() -> None:
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([], 95) is None
    assert stats.relative_change(100, 120) == pytest.approx(0.2)
    assert stats.relative_change(0, 1) is None


# --- pairing and accounting ---------------------------------------------------------------


def test_pairs_on_case_model_epoch_and_counts_errors_apart() -> None:
    base = run(
        "b",
        [
            row("a", "pass"),
            row("b", "pass"),
            row("c", "fail"),
            row("d", "error"),
            row("e", "pass"),
            row("only-base", "pass"),
        ],
    )
    cand = run(
        "c",
        [
            row("a", "pass"),
            row("b", "fail"),
            row("c", "pass"),
            row("d", "pass"),
            row("e", "error"),
            row("only-cand", "fail"),
        ],
    )
    comparison = compare_runs(base, cand, settings=FAST)
    metric = comparison.metric("m", "exact")
    assert metric is not None
    assert metric.n_both == 3  # a, b, c: d and e errored on one side
    assert (metric.n_errors_base, metric.n_errors_cand) == (1, 1)
    assert (metric.n_only_base, metric.n_only_cand) == (1, 1)
    assert (metric.improved, metric.regressed) == (1, 1)
    assert metric.pass_rate.base == pytest.approx(2 / 3)
    assert metric.pass_rate.cand == pytest.approx(2 / 3)
    assert metric.pass_rate.diff == 0
    assert metric.pass_rate.p_value == 1.0
    assert metric.pass_rate.test == "exact McNemar"
    # Whole-run figures keep every settled result; errors are never counted as fails.
    assert (metric.base.passed, metric.base.failed, metric.base.errors) == (4, 1, 1)
    assert metric.base.pass_rate == pytest.approx(4 / 5)
    assert len(comparison.errors) == 2
    assert {e.side for e in comparison.errors} == {"base", "cand"}


def test_a_drop_gets_mcnemar_p_and_bootstrap_interval() -> None:
    cases = [f"c{i:03d}" for i in range(100)]
    # 30 pass->fail, 5 fail->pass, the rest unchanged.
    base = run(
        "b", [row(c, "pass" if i < 30 or 35 <= i < 80 else "fail") for i, c in enumerate(cases)]
    )
    cand = run(
        "c",
        [row(c, "fail" if i < 30 else "pass" if i < 80 else "fail") for i, c in enumerate(cases)],
    )
    metric = compare_runs(base, cand, settings=FAST).metric("m", OVERALL)
    assert metric is not None
    assert (metric.improved, metric.regressed) == (5, 30)
    assert metric.pass_rate.diff == pytest.approx(-0.25)
    assert metric.drop == pytest.approx(0.25)
    assert metric.pass_rate.p_value == pytest.approx(scipy.stats.binomtest(5, 35, 0.5).pvalue)
    assert metric.pass_rate.ci_low < -0.25 < metric.pass_rate.ci_high < 0


def test_continuous_scores_use_wilcoxon_on_per_case_differences() -> None:
    base_values = [0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.3]
    deltas = [-0.1, -0.2, -0.05, -0.3, 0.02, -0.15, -0.25]
    base = run("b", [row(f"c{i}", "pass", value=v) for i, v in enumerate(base_values)])
    cand = run(
        "c",
        [
            row(f"c{i}", "pass", value=v + d)
            for i, (v, d) in enumerate(zip(base_values, deltas, strict=True))
        ],
    )
    metric = compare_runs(base, cand, settings=FAST).metric("m", "exact")
    assert metric is not None
    actual = np.array(base_values) + np.array(deltas) - np.array(base_values)
    assert metric.score.diff == pytest.approx(np.mean(deltas))
    assert metric.score.p_value == pytest.approx(scipy.stats.wilcoxon(actual).pvalue)
    assert metric.score.test == "wilcoxon"


def test_repeats_average_per_case_and_mark_flaky_cases() -> None:
    base = run(
        "b",
        [row("steady", "pass", epoch=e) for e in range(3)]
        + [row("wobbly", s, epoch=e) for e, s in enumerate(["pass", "fail", "pass"])]
        + [row("broke", "pass", epoch=e) for e in range(3)],
    )
    cand = run(
        "c",
        [row("steady", "pass", epoch=e) for e in range(3)]
        + [row("wobbly", s, epoch=e) for e, s in enumerate(["fail", "pass", "fail"])]
        + [row("broke", "fail", epoch=e) for e in range(3)],
    )
    comparison = compare_runs(base, cand, settings=FAST)
    metric = comparison.metric("m", "exact")
    assert metric is not None
    assert metric.n_both == 3  # cases, not epochs, are the unit
    assert metric.pass_rate.test.startswith("exact sign test")
    assert metric.pass_rate.diff == pytest.approx(((0 - 0) + (1 / 3 - 2 / 3) + (0 - 1)) / 3)
    kinds = {f.case_id: f for f in comparison.flips}
    assert kinds["broke"].kind == "regressed"
    assert (kinds["broke"].base_passes, kinds["broke"].cand_passes) == ("3/3", "0/3")
    assert kinds["wobbly"].kind == "flaky"  # not blamed on the change
    assert "steady" not in kinds


def test_flips_show_outputs_side_by_side() -> None:
    base = run("b", [row("a", "pass", output="Paris"), row("b", "fail", output="Lyon")])
    cand = run("c", [row("a", "fail", output="London"), row("b", "pass", output="Paris")])
    flips = compare_runs(base, cand, settings=FAST).flips
    assert [(f.case_id, f.kind, f.base_output, f.cand_output) for f in flips] == [
        ("a", "regressed", "Paris", "London"),
        ("b", "improved", "Lyon", "Paris"),
    ]
    assert flips[0].cand_reason == "exact: fail!"


def test_slices_by_metadata_field_reveal_a_hidden_drop() -> None:
    base, cand = [], []
    for i in range(40):
        level = "hard" if i % 4 == 0 else "easy"
        base.append(row(f"c{i}", "pass", metadata={"difficulty": level}))
        cand.append(
            row(f"c{i}", "fail" if level == "hard" else "pass", metadata={"difficulty": level})
        )
    comparison = compare_runs(run("b", base), run("c", cand), by=["difficulty"], settings=FAST)
    slices = {(m.slice, m.metric): m for m in comparison.slices}
    assert slices[("difficulty=hard", "exact")].pass_rate.diff == -1.0
    assert slices[("difficulty=hard", "exact")].n_both == 10
    assert slices[("difficulty=easy", "exact")].pass_rate.diff == 0.0
    assert comparison.to_dict()["by"] == ["difficulty"]


def test_cost_and_latency_deltas() -> None:
    base = run(
        "b",
        [row(f"c{i}", "pass", cost=0.01, latency=100.0 + i) for i in range(20)]
        + [row("cached", "pass", cost=0.01, latency=1.0, cached=True)],
    )
    cand = run(
        "c",
        [row(f"c{i}", "pass", cost=0.012, latency=200.0 + i) for i in range(20)]
        + [row("cached", "pass", cost=0.012, latency=1.0, cached=True)],
    )
    (item,) = compare_runs(base, cand, settings=FAST).costs
    assert item.base_cost == pytest.approx(0.21)
    assert item.cost_change == pytest.approx(0.2)
    assert item.cost_per_case_change == pytest.approx(0.2)
    assert item.latency_results_base == 20  # the cached result has no real latency
    assert item.base_p50_ms == pytest.approx(109.5)
    assert item.cand_p95_ms == pytest.approx(np.percentile([200.0 + i for i in range(20)], 95))
    assert item.p50_change == pytest.approx(100 / 109.5)


def test_unknown_cost_is_not_zero() -> None:
    base = run("b", [row("a", "pass", cost=None)])
    cand = run("c", [row("a", "pass", cost=0.5)])
    (item,) = compare_runs(base, cand, settings=FAST).costs
    assert item.base_cost is None and not item.base_cost_complete
    assert item.cost_change is None


def test_lineage_changes_list_what_differs() -> None:
    base = {
        "prompt": {"name": "qa", "version": "aaaa"},
        "models": [{"id": "x", "params": {}}],
        "scorers": [{"type": "exact"}],
        "repeat": 1,
        "git": {"commit": "1" * 40},
    }
    cand = {
        "prompt": {"name": "qa", "version": "bbbb"},
        "models": [{"id": "x", "params": {"temperature": 0.5}}],
        "scorers": [{"type": "exact"}],
        "repeat": 1,
        "git": {"commit": "1" * 40},
    }
    changes = {c.what: c.summary for c in lineage_changes(base, cand)}
    assert set(changes) == {"prompt", "models/params"}
    assert changes["prompt"] == "qa@aaaa -> qa@bbbb"
    assert "temperature: 0.5" in changes["models/params"]


def test_comparison_json_is_serialisable() -> None:
    import json

    base = run("b", [row("a", "pass")])
    cand = run("c", [row("a", "fail")])
    data = json.loads(json.dumps(compare_runs(base, cand, settings=FAST).to_dict()))
    assert data["metrics"][0]["drop"] == 1.0
    assert data["metrics"][0]["n_both"] == 1
