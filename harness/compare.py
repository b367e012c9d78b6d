"""Compare two runs case by case: paired pass-rate and score differences with honest statistics.

Results are matched on (case id, model, epoch). A pair counts only when neither side errored;
errors are counted on each side and never folded into a pass rate. With repeats, each case's
outcome is its mean over the paired epochs, so the case (not the epoch) is the unit of analysis:
the bootstrap resamples cases and the tests see one difference per case.

Tests: pass/fail uses the exact McNemar test (a binomial test on discordant cases; with repeats
the same exact sign test on per-case mean differences); continuous scores use the Wilcoxon
signed-rank test. Intervals are 95% paired-bootstrap percentile intervals (seeded).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness import stats
from harness.casediff import (
    CaseFlip,
    CostLatency,
    ErrorItem,
    GoldChange,
    case_flips,
    costs,
    errors,
    gold_changes,
)
from harness.lineage_diff import lineage_diff
from harness.runrefs import LoadedRun
from harness.store import ResultRow

OVERALL = "all"  # the metric "every scorer passed" (a result's own status and weighted score)
Key = tuple[str, int]  # (case id, epoch) within one model


@dataclass
class SideStats:
    """One run's figures for one model × metric (× slice): over all its results, not only pairs."""

    results: int
    passed: int
    failed: int
    errors: int
    pass_rate: float | None
    mean_score: float | None


@dataclass
class PairedEstimate:
    """Baseline and candidate means on paired cases, their difference, interval and p-value."""

    n: int
    base: float | None
    cand: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str


@dataclass
class MetricComparison:
    """One model × metric (× slice): both sides, the paired estimates and the accounting."""

    model: str
    metric: str
    slice: str | None
    base: SideStats
    cand: SideStats
    n_both: int  # cases with at least one epoch settled (pass/fail) on both sides
    n_errors_base: int  # results that errored on the baseline side
    n_errors_cand: int
    n_only_base: int  # results with no counterpart in the other run
    n_only_cand: int
    improved: int  # cases whose pass rate went up / down
    regressed: int
    pass_rate: PairedEstimate
    score: PairedEstimate

    @property
    def drop(self) -> float | None:
        """Pass-rate points lost on paired cases (negative: gained)."""
        return None if self.pass_rate.diff is None else -self.pass_rate.diff


@dataclass
class Change:
    """One artifact whose version or settings differ between the runs (harness.lineage_diff)."""

    what: str
    summary: str


def lineage_changes(base: dict[str, Any], cand: dict[str, Any]) -> list[Change]:
    """What changed between two manifests, grouped by artifact, most telling first."""
    return [Change(change.artifact, change.summary) for change in lineage_diff(base, cand)]


@dataclass
class RunInfo:
    id: str
    suite: str
    source: str
    status: str
    created_at: float | None
    results: int
    errors: int
    repeat: int | None


@dataclass
class Settings:
    resamples: int = stats.DEFAULT_RESAMPLES
    seed: int = stats.DEFAULT_SEED
    confidence: float = stats.CONFIDENCE


@dataclass
class Comparison:
    """Everything `evals compare` reports; `to_dict` is its JSON form."""

    base: RunInfo
    cand: RunInfo
    changes: list[Change]
    metrics: list[MetricComparison]
    slices: list[MetricComparison]
    by: list[str]
    flips: list[CaseFlip]
    costs: list[CostLatency]
    errors: list[ErrorItem]
    settings: Settings
    notes: list[str] = field(default_factory=list)
    gold: list[GoldChange] = field(default_factory=list)  # RAG runs: gold docs in/out of top k

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("metrics", "slices"):
            for block, metric in zip(data[key], getattr(self, key), strict=True):
                block["drop"] = metric.drop
        return data

    def metric(self, model: str, metric: str) -> MetricComparison | None:
        for item in self.metrics:
            if item.model == model and item.metric == metric:
                return item
        return None


def outcome(result: ResultRow, metric: str) -> tuple[str, float | None] | None:
    """(status, value) of one result for one metric; None when that scorer did not run."""
    if metric == OVERALL:
        return result.status, result.score if result.status != "error" else None
    for score in result.scores:
        if score.scorer == metric:
            return score.status, score.value if score.status != "error" else None
    return ("error", None) if result.status == "error" else None


def _index(results: Iterable[ResultRow]) -> dict[str, dict[Key, ResultRow]]:
    by_model: dict[str, dict[Key, ResultRow]] = defaultdict(dict)
    for result in results:
        by_model[result.model][(result.case_id, result.epoch)] = result
    return by_model


def _side_stats(outcomes: dict[Key, tuple[str, float | None]]) -> SideStats:
    statuses = [status for status, _ in outcomes.values()]
    passed, failed = statuses.count("pass"), statuses.count("fail")
    values = [v for s, v in outcomes.values() if s != "error" and v is not None]
    settled = passed + failed
    return SideStats(
        results=len(statuses),
        passed=passed,
        failed=failed,
        errors=statuses.count("error"),
        pass_rate=passed / settled if settled else None,
        mean_score=float(np.mean(values)) if values else None,
    )


def _estimate(
    base: list[float], cand: list[float], test: str, settings: Settings
) -> PairedEstimate:
    """Means, paired difference, bootstrap interval and p-value of per-case values."""
    if not base:
        return PairedEstimate(0, None, None, None, None, None, None, test)
    b, c = np.asarray(base), np.asarray(cand)
    diffs = c - b
    interval = stats.bootstrap_mean_ci(
        diffs, resamples=settings.resamples, seed=settings.seed, confidence=settings.confidence
    )
    if test == "wilcoxon":
        p_value = stats.wilcoxon_signed_rank(diffs)
    else:
        p_value = stats.mcnemar_exact(*stats.sign_counts(diffs))
    return PairedEstimate(
        n=len(base),
        base=float(b.mean()),
        cand=float(c.mean()),
        diff=float(diffs.mean()),
        ci_low=None if interval is None else interval.low,
        ci_high=None if interval is None else interval.high,
        p_value=p_value,
        test=test,
    )


def compare_metric(
    model: str,
    metric: str,
    base_rows: dict[Key, ResultRow],
    cand_rows: dict[Key, ResultRow],
    settings: Settings,
    slice_name: str | None = None,
) -> MetricComparison:
    """Pair one model's results for one metric and estimate the change."""
    base_out = {k: o for k, r in base_rows.items() if (o := outcome(r, metric)) is not None}
    cand_out = {k: o for k, r in cand_rows.items() if (o := outcome(r, metric)) is not None}
    passes: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    scores: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for key in sorted(base_out.keys() & cand_out.keys()):
        (b_status, b_value), (c_status, c_value) = base_out[key], cand_out[key]
        if "error" in (b_status, c_status):
            continue
        passes[key[0]][0].append(float(b_status == "pass"))
        passes[key[0]][1].append(float(c_status == "pass"))
        if b_value is not None and c_value is not None:
            scores[key[0]][0].append(b_value)
            scores[key[0]][1].append(c_value)

    def per_case(pairs: dict[str, tuple[list[float], list[float]]]) -> tuple[list[float], ...]:
        cases = sorted(pairs)
        return (
            [sum(pairs[c][0]) / len(pairs[c][0]) for c in cases],
            [sum(pairs[c][1]) / len(pairs[c][1]) for c in cases],
        )

    base_pass, cand_pass = per_case(passes)
    repeated = any(len(pair[0]) > 1 for pair in passes.values())
    pass_test = "exact sign test (per-case means)" if repeated else "exact McNemar"
    improved, regressed = stats.sign_counts(np.asarray(cand_pass) - np.asarray(base_pass))
    base_score, cand_score = per_case(scores)
    return MetricComparison(
        model=model,
        metric=metric,
        slice=slice_name,
        base=_side_stats(base_out),
        cand=_side_stats(cand_out),
        n_both=len(passes),
        n_errors_base=sum(1 for s, _ in base_out.values() if s == "error"),
        n_errors_cand=sum(1 for s, _ in cand_out.values() if s == "error"),
        n_only_base=len(base_out.keys() - cand_out.keys()),
        n_only_cand=len(cand_out.keys() - base_out.keys()),
        improved=improved,
        regressed=regressed,
        pass_rate=_estimate(base_pass, cand_pass, pass_test, settings),
        score=_estimate(base_score, cand_score, "wilcoxon", settings),
    )


def metric_names(base: LoadedRun, cand: LoadedRun) -> list[str]:
    """`all`, then every scorer either run used, baseline order first."""
    names: list[str] = []
    for run in (base, cand):
        for scorer in run.manifest.get("scorers") or []:
            name = str(scorer.get("name") or scorer.get("type"))
            if name not in names:
                names.append(name)
        for result in run.results:
            for score in result.scores:
                if score.scorer not in names:
                    names.append(score.scorer)
    return [OVERALL, *names]


def slice_values(result: ResultRow, by: str) -> list[str]:
    """The slice(s) a result's case belongs to for metadata field `by` (a list: each item)."""
    data = result.case_data or {}
    metadata = data.get("metadata") or {}
    fields = data.get("fields") or {}
    value = metadata[by] if by in metadata else fields.get(by)
    if isinstance(value, list | tuple):
        return [str(v) for v in value] or ["(none)"]
    return ["(none)" if value is None else str(value)]


def _run_info(run: LoadedRun) -> RunInfo:
    return RunInfo(
        id=run.id,
        suite=run.suite,
        source=run.source,
        status=str(run.record.get("status")),
        created_at=run.record.get("created_at"),
        results=len(run.results),
        errors=sum(1 for r in run.results if r.status == "error"),
        repeat=run.manifest.get("repeat"),
    )


def compare_runs(
    base: LoadedRun,
    cand: LoadedRun,
    *,
    by: list[str] | None = None,
    settings: Settings | None = None,
) -> Comparison:
    """The full comparison of a candidate run against a baseline run."""
    settings = settings or Settings()
    by = list(by or [])
    base_index, cand_index = _index(base.results), _index(cand.results)
    models = sorted(base_index.keys() | cand_index.keys())
    names = metric_names(base, cand)
    metrics = [
        compare_metric(model, name, base_index.get(model, {}), cand_index.get(model, {}), settings)
        for model in models
        for name in names
    ]
    slices: list[MetricComparison] = []
    for field_name in by:
        labels: dict[str, list[str]] = {}
        for result in [*cand.results, *base.results]:
            labels.setdefault(result.case_id, slice_values(result, field_name))
        for value in sorted({v for values in labels.values() for v in values}):
            chosen = {case for case, values in labels.items() if value in values}
            for model in models:
                base_rows = {k: r for k, r in base_index.get(model, {}).items() if k[0] in chosen}
                cand_rows = {k: r for k, r in cand_index.get(model, {}).items() if k[0] in chosen}
                for name in names:
                    slices.append(
                        compare_metric(
                            model,
                            name,
                            base_rows,
                            cand_rows,
                            settings,
                            slice_name=f"{field_name}={value}",
                        )
                    )
    notes = []
    if base.suite != cand.suite:
        notes.append(f"the runs are of different suites ({base.suite} vs {cand.suite})")
    return Comparison(
        base=_run_info(base),
        cand=_run_info(cand),
        changes=lineage_changes(base.manifest, cand.manifest),
        metrics=metrics,
        slices=slices,
        by=by,
        flips=case_flips(base_index, cand_index),
        costs=costs(base_index, cand_index, models),
        errors=errors(base.results, cand.results),
        settings=settings,
        notes=notes,
        gold=gold_changes(base.results, cand.results),
    )
