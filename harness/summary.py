"""Summarise a run's results per model and scorer: pass rates with intervals, cost, latency."""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import NormalDist, fmean
from typing import Any

from harness.store import ResultRow

CONFIDENCE = 0.95
_Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)


def wilson_interval(passed: int, n: int) -> tuple[float | None, float | None]:
    """95% Wilson score interval of a pass rate; (None, None) with no trials. The closed form
    (what scipy's `binomtest(...).proportion_ci(method="wilson")` gives, tested against it):
    it runs after every result and in every summary, and importing scipy.stats costs ~1.3 s."""
    if n == 0:
        return None, None
    p = passed / n
    denom = 1 + _Z * _Z / n
    centre = p + _Z * _Z / (2 * n)
    margin = _Z * math.sqrt(p * (1 - p) / n + _Z * _Z / (4 * n * n))
    return max(0.0, (centre - margin) / denom), min(1.0, (centre + margin) / denom)


def _percentile(values: list[float], q: float) -> float | None:
    """numpy's default (linear) percentile, without importing numpy (~100 ms) in every run
    and worker process for two numbers; tested against numpy."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def _rate_block(passed: int, failed: int, errors: int) -> dict[str, Any]:
    n = passed + failed
    low, high = wilson_interval(passed, n)
    return {
        "n": n,
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "pass_rate": passed / n if n else None,
        "ci_low": low,
        "ci_high": high,
    }


def summarize(
    results: list[ResultRow],
    thresholds: dict[str, float] | None = None,
    *,
    planned: int | None = None,
) -> dict[str, Any]:
    """Per-model and per-model-per-scorer figures; errors are counted apart, never as fails."""
    thresholds = thresholds or {}
    by_model: dict[str, list[ResultRow]] = defaultdict(list)
    for result in results:
        by_model[result.model].append(result)
    models: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []
    for model, rows in sorted(by_model.items()):
        statuses = [r.status for r in rows]
        block = _rate_block(statuses.count("pass"), statuses.count("fail"), statuses.count("error"))
        costs = [r.cost_usd for r in rows if r.status != "error" or r.cost_usd is not None]
        known = [c for c in costs if c is not None]
        latencies = [
            r.latency_ms
            for r in rows
            if r.latency_ms is not None and not r.cached and r.status != "error"
        ]
        block.update(
            {
                "results": len(rows),
                "cost_usd": float(sum(known)) if known else (0.0 if not costs else None),
                "cost_complete": len(known) == len(costs),
                "latency_p50_ms": _percentile(latencies, 50),
                "latency_p95_ms": _percentile(latencies, 95),
                "input_tokens": sum(r.input_tokens or 0 for r in rows),
                "output_tokens": sum(r.output_tokens or 0 for r in rows),
                "cached": sum(1 for r in rows if r.cached),
                "error_kinds": _count(r.error_kind or "error" for r in rows if r.status == "error"),
            }
        )
        scorers: dict[str, Any] = {}
        per_scorer: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            for score in row.scores:
                per_scorer[score.scorer].append(score)
        for name, scores in per_scorer.items():
            sblock = _rate_block(
                sum(1 for s in scores if s.status == "pass"),
                sum(1 for s in scores if s.status == "fail"),
                sum(1 for s in scores if s.status == "error"),
            )
            values = [s.value for s in scores if s.status != "error" and s.value is not None]
            sblock["mean_score"] = fmean(values) if values else None
            scorers[name] = sblock
            if name in thresholds:
                actual = sblock["pass_rate"]
                checks.append(
                    {
                        "model": model,
                        "scorer": name,
                        "required": thresholds[name],
                        "actual": actual,
                        "ok": actual is not None and actual >= thresholds[name],
                    }
                )
        block["scorers"] = scorers
        judge = judge_usage(rows)
        if judge is not None:  # judge calls are counted apart from the system under test's
            block["judge"] = judge
        models[model] = block
    total = len(results)
    errors = sum(1 for r in results if r.status == "error")
    return {
        "results": total,
        "planned": planned if planned is not None else total,
        "errors": errors,
        "error_rate": errors / total if total else 0.0,
        "models": models,
        "thresholds": checks,
        "thresholds_ok": all(c["ok"] for c in checks),
    }


def judge_usage(rows: list[ResultRow]) -> dict[str, Any] | None:
    """Tokens, cost and calls of LLM-judge scorers (from Score details), or None when none ran."""
    usages = [
        s.detail["judge"]
        for r in rows
        for s in r.scores
        if isinstance(s.detail, dict) and isinstance(s.detail.get("judge"), dict)
    ]
    if not usages:
        return None
    costs = [u.get("cost_usd") for u in usages]
    return {
        "calls": sum(int(u.get("calls") or 0) for u in usages),
        "input_tokens": sum(int(u.get("input_tokens") or 0) for u in usages),
        "output_tokens": sum(int(u.get("output_tokens") or 0) for u in usages),
        "cost_usd": None if any(c is None for c in costs) else float(sum(costs)),
        "cached": sum(int(u.get("cached") or 0) for u in usages),
        "unstable": sum(
            1
            for r in rows
            for s in r.scores
            if isinstance(s.detail, dict) and s.detail.get("unstable")
        ),
    }


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[item] += 1
    return dict(counts)
