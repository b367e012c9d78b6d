"""Decide a CI gate: apply a GatePolicy to a comparison; pass, regression or unmeasurable.

A quality regression is flagged only when a metric's paired pass-rate drop exceeds the allowed
drop AND its p-value (Holm-adjusted across the gated metrics by default) is below alpha: a gate
that fails on noise gets disabled. Cost and latency are budgets on relative increases. A run
that could not measure (too many errors, no overlapping cases, unknown cost under a cost
budget, an uncalibrated judge under `min_kappa`) is not a pass: it is `unmeasurable`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from harness import stats
from harness.compare import OVERALL, Comparison
from harness.config import GatePolicy
from harness.gate_policy import CALIBRATION_DIR, KappaLookup
from harness.store import ResultRow

CheckStatus = Literal["ok", "regression", "unmeasurable"]
EXIT_CODES = {"pass": 0, "regression": 1, "unmeasurable": 3}
JUDGE_TYPES = ("judge", "pairwise")
_EPSILON = 1e-12  # float slack when a drop equals the allowed drop exactly


@dataclass
class GateCheck:
    kind: str  # errors | overlap | quality | cost | latency | critical | kappa
    subject: str
    status: CheckStatus
    detail: str


@dataclass
class GateDecision:
    status: Literal["pass", "regression", "unmeasurable"]
    checks: list[GateCheck]
    policy: GatePolicy
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def failing(self) -> list[GateCheck]:
        return [c for c in self.checks if c.status != "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "checks": [asdict(c) for c in self.checks],
            "policy": self.policy.model_dump(),
            "notes": list(self.notes),
        }


def _pts(value: float) -> str:
    return f"{value * 100:+.1f} pts"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _error_checks(comparison: Comparison, policy: GatePolicy) -> list[GateCheck]:
    checks = []
    for side, info in (("baseline", comparison.base), ("candidate", comparison.cand)):
        if info.results == 0:
            checks.append(GateCheck("errors", side, "unmeasurable", f"the {side} has no results"))
            continue
        rate = info.errors / info.results
        status: CheckStatus = "unmeasurable" if rate > policy.max_error_rate else "ok"
        checks.append(
            GateCheck(
                "errors",
                side,
                status,
                f"{info.errors}/{info.results} results errored ({_pct(rate)}; "
                f"max {_pct(policy.max_error_rate)})",
            )
        )
    return checks


def _quality_checks(comparison: Comparison, policy: GatePolicy) -> list[GateCheck]:
    gated = [m for m in comparison.metrics if m.base.results and m.cand.results]
    if not gated:
        return [
            GateCheck(
                "overlap", "all models", "unmeasurable", "no model and metric appears in both runs"
            )
        ]
    raw = [m.pass_rate.p_value for m in gated]
    adjusted = stats.holm_adjust(raw) if policy.correction == "holm" else raw
    checks = []
    for metric, p_adj in zip(gated, adjusted, strict=True):
        subject = f"{metric.model} · {metric.metric}"
        estimate = metric.pass_rate
        if metric.n_both == 0 or estimate.diff is None or p_adj is None:
            checks.append(
                GateCheck(
                    "overlap",
                    subject,
                    "unmeasurable",
                    f"no case settled in both runs ({metric.n_errors_base} "
                    f"baseline and {metric.n_errors_cand} candidate errors)",
                )
            )
            continue
        drop, allowed = -estimate.diff, policy.drop_for(metric.metric)
        significant = p_adj < policy.alpha
        status: CheckStatus = "regression" if drop > allowed + _EPSILON and significant else "ok"
        p_text = f"p={p_adj:.3g}" + (" (Holm)" if policy.correction == "holm" else "")
        detail = (
            f"{_pct(estimate.base)} → {_pct(estimate.cand)} on {metric.n_both} paired cases "
            f"({_pts(estimate.diff)}, 95% CI {_pts(estimate.ci_low or 0)} to "
            f"{_pts(estimate.ci_high or 0)}, {p_text}, {estimate.test}); allowed drop "
            f"{allowed * 100:.1f} pts at alpha {policy.alpha}"
        )
        checks.append(GateCheck("quality", subject, status, detail))
    return checks


def _budget(
    kind: str,
    subject: str,
    base: float | None,
    cand: float | None,
    limit: float,
    unit: str,
    unknown: str | None,
) -> GateCheck:
    if unknown is not None:
        return GateCheck(kind, subject, "unmeasurable", unknown)
    assert base is not None and cand is not None
    change = stats.relative_change(base, cand)
    if change is None:  # a zero baseline: any increase is over budget
        change = 0.0 if cand <= base else float("inf")
    status: CheckStatus = "regression" if change > limit + _EPSILON else "ok"
    shown = "+inf" if change == float("inf") else f"{change * 100:+.1f}%"
    return GateCheck(
        kind,
        subject,
        status,
        f"{base:.6g} → {cand:.6g} {unit} ({shown}; budget +{limit * 100:.0f}%)",
    )


def _budget_checks(comparison: Comparison, policy: GatePolicy) -> list[GateCheck]:
    checks = []
    in_both = {
        m.model
        for m in comparison.metrics
        if m.metric == OVERALL and m.base.results and m.cand.results
    }
    for row in comparison.costs:
        if row.model not in in_both:
            continue
        if policy.max_cost_increase is not None:
            incomplete = not (row.base_cost_complete and row.cand_cost_complete)
            unknown = (
                "cost is unknown for some results (price the model with `price:`)"
                if incomplete or row.base_cost is None or row.cand_cost is None
                else None
            )
            checks.append(
                _budget(
                    "cost",
                    f"{row.model} · total",
                    row.base_cost,
                    row.cand_cost,
                    policy.max_cost_increase,
                    "USD",
                    unknown,
                )
            )
        if policy.max_cost_per_case_increase is not None:
            unknown = (
                None
                if row.paired_cost_results
                else "no paired result has a known cost on both sides"
            )
            checks.append(
                _budget(
                    "cost",
                    f"{row.model} · per case",
                    row.base_cost_per_case,
                    row.cand_cost_per_case,
                    policy.max_cost_per_case_increase,
                    "USD",
                    unknown,
                )
            )
        if policy.max_latency_increase is not None:
            unknown = (
                None
                if row.base_p95_ms is not None and row.cand_p95_ms is not None
                else "no uncached latencies on one side (cached replies have none; "
                "run with --cache off)"
            )
            checks.append(
                _budget(
                    "latency",
                    f"{row.model} · p95",
                    row.base_p95_ms,
                    row.cand_p95_ms,
                    policy.max_latency_increase,
                    "ms",
                    unknown,
                )
            )
    return checks


def _critical_checks(cand: list[ResultRow], policy: GatePolicy) -> list[GateCheck]:
    checks = []
    for case_id in policy.critical:
        rows = [r for r in cand if r.case_id == case_id]
        failed = [r for r in rows if r.status == "fail"]
        errored = [r for r in rows if r.status == "error"]
        if not rows:
            checks.append(
                GateCheck(
                    "critical",
                    case_id,
                    "unmeasurable",
                    "the candidate run has no result for this critical case",
                )
            )
        elif failed:
            why = "; ".join(
                f"{s.scorer}: {s.reason}" for s in failed[0].scores if s.status != "pass"
            )
            checks.append(
                GateCheck(
                    "critical",
                    case_id,
                    "regression",
                    f"failed on {len(failed)}/{len(rows)} results ({why})",
                )
            )
        elif errored:
            checks.append(
                GateCheck(
                    "critical",
                    case_id,
                    "unmeasurable",
                    f"errored on {len(errored)}/{len(rows)} results: {errored[0].error}",
                )
            )
        else:
            checks.append(GateCheck("critical", case_id, "ok", f"passed {len(rows)}/{len(rows)}"))
    return checks


def _kappa_checks(
    manifest: dict[str, Any], policy: GatePolicy, lookup: KappaLookup | None
) -> list[GateCheck]:
    if policy.min_kappa is None:
        return []
    judges = [s for s in manifest.get("scorers") or [] if s.get("type") in JUDGE_TYPES]
    checks = []
    for scorer in judges:
        name = str(scorer.get("name") or scorer.get("type"))
        kappa = lookup(scorer) if lookup else None
        if kappa is None:
            checks.append(
                GateCheck(
                    "kappa",
                    name,
                    "unmeasurable",
                    f"no calibration record for rubric {scorer.get('rubric')} with this judge, "
                    f"so its verdicts cannot gate (min_kappa {policy.min_kappa}); calibrate it "
                    f"against human labels first (records are read from {CALIBRATION_DIR}/)",
                )
            )
        elif kappa < policy.min_kappa:
            checks.append(
                GateCheck(
                    "kappa",
                    name,
                    "unmeasurable",
                    f"Cohen's kappa {kappa:.2f} is below min_kappa "
                    f"{policy.min_kappa}: this judge cannot gate",
                )
            )
        else:
            checks.append(
                GateCheck("kappa", name, "ok", f"Cohen's kappa {kappa:.2f} >= {policy.min_kappa}")
            )
    return checks


def decide(
    comparison: Comparison,
    cand_results: list[ResultRow],
    policy: GatePolicy,
    *,
    cand_manifest: dict[str, Any] | None = None,
    kappa_lookup: KappaLookup | None = None,
) -> GateDecision:
    """Apply the policy. Unmeasurable error rates or overlap outrank everything (nothing else
    can be trusted then); otherwise any regression fails, then anything unmeasurable."""
    base_checks = _error_checks(comparison, policy)
    quality = _quality_checks(comparison, policy)
    checks = [
        *base_checks,
        *quality,
        *_budget_checks(comparison, policy),
        *_critical_checks(cand_results, policy),
        *_kappa_checks(cand_manifest or {}, policy, kappa_lookup),
    ]
    notes = list(comparison.notes)
    for metric in comparison.metrics:
        if bool(metric.base.results) != bool(metric.cand.results):
            side = "baseline" if metric.base.results else "candidate"
            notes.append(f"{metric.model} · {metric.metric} is only in the {side}: not gated")
    if policy.min_kappa is not None and not any(c.kind == "kappa" for c in checks):
        notes.append("min_kappa is set but the suite has no judge scorers")
    foundation = [c for c in checks if c.kind in ("errors", "overlap")]
    if any(c.status == "unmeasurable" for c in foundation):
        status: Literal["pass", "regression", "unmeasurable"] = "unmeasurable"
    elif any(c.status == "regression" for c in checks):
        status = "regression"
    elif any(c.status == "unmeasurable" for c in checks):
        status = "unmeasurable"
    else:
        status = "pass"
    return GateDecision(status, checks, policy, notes)
