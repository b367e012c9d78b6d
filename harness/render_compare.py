"""Terminal rendering (rich) of comparisons and gate decisions; the CLI's presentation layer.

Every cell is a rich Text, never a markup string: model outputs and case ids are untrusted and
must not be able to style (or hide) the report.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.compare import Comparison, MetricComparison
from harness.gate import GateDecision
from harness.report import change, cost, num, p_text, pct, pts

MAX_ROWS = 40
OUTPUT_CHARS = 200
STATUS_STYLE = {
    "pass": "bold green",
    "regression": "bold red",
    "unmeasurable": "bold yellow",
    "ok": "green",
}


def _t(value: Any, style: str = "") -> Text:
    return Text("" if value is None else str(value), style=style)


def _clip(text: str | None) -> str:
    if not text:
        return ""
    return text if len(text) <= OUTPUT_CHARS else text[:OUTPUT_CHARS] + "…"


def changes_table(comparison: Comparison) -> Table | Text:
    if not comparison.changes:
        return Text("what changed: nothing in the recorded lineage")
    table = Table(title="what changed", title_justify="left")
    for column in ("what", "baseline -> candidate"):
        table.add_column(column, overflow="fold")
    for item in comparison.changes:
        table.add_row(_t(item.what), _t(item.summary))
    return table


def _delta_style(metric: MetricComparison, alpha: float = 0.05) -> str:
    diff, p = metric.pass_rate.diff, metric.pass_rate.p_value
    if diff is None or p is None or p >= alpha or diff == 0:
        return ""
    return "red" if diff < 0 else "green"


def metrics_table(metrics: list[MetricComparison], title: str) -> Table:
    with_slice = any(m.slice for m in metrics)
    table = Table(title=title, title_justify="left")
    columns = (["slice"] if with_slice else []) + [
        "model",
        "metric",
        "base",
        "cand",
        "Δ pts [95% CI]",
        "p",
        "Δ score (p)",
        "n both",
        "err b/c",
    ]
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in ("slice", "model", "metric") else "right",
            overflow="fold",
        )
    unpaired = 0
    for m in metrics:
        est = m.pass_rate
        ci = "" if est.ci_low is None else f" [{pts(est.ci_low)}, {pts(est.ci_high)}]"
        score = "-" if m.score.diff is None else f"{m.score.diff:+.3f} ({p_text(m.score.p_value)})"
        row = [_t(m.slice)] if with_slice else []
        row += [
            _t(m.model),
            _t(m.metric),
            _t(pct(m.base.pass_rate)),
            _t(pct(m.cand.pass_rate)),
            _t(pts(est.diff) + ci, _delta_style(m)),
            _t(p_text(est.p_value)),
            _t(score),
            _t(m.n_both),
            _t(f"{m.n_errors_base}/{m.n_errors_cand}"),
        ]
        table.add_row(*row)
        unpaired += m.n_only_base + m.n_only_cand
    if unpaired:
        table.caption = f"{unpaired} results had no counterpart in the other run (not paired)"
    return table


def _pair(base: str, cand: str, delta: str) -> Text:
    return _t(f"{base} → {cand} ({delta})")


def costs_table(comparison: Comparison) -> Table:
    table = Table(title="cost and latency", title_justify="left")
    for column in ("model", "cost total", "cost per case", "p50 latency", "p95 latency"):
        table.add_column(column, overflow="fold")
    for c in comparison.costs:
        table.add_row(
            _t(c.model),
            _pair(
                cost(c.base_cost, c.base_cost_complete),
                cost(c.cand_cost, c.cand_cost_complete),
                change(c.cost_change),
            ),
            _pair(
                num(c.base_cost_per_case), num(c.cand_cost_per_case), change(c.cost_per_case_change)
            ),
            _pair(num(c.base_p50_ms, " ms"), num(c.cand_p50_ms, " ms"), change(c.p50_change)),
            _pair(num(c.base_p95_ms, " ms"), num(c.cand_p95_ms, " ms"), change(c.p95_change)),
        )
    return table


def flips_table(comparison: Comparison) -> Table | Text:
    if not comparison.flips:
        return Text("case flips: none")
    counts = Counter(f.kind for f in comparison.flips)
    title = "case flips: " + ", ".join(
        f"{counts[k]} {k}" for k in ("regressed", "improved", "flaky") if counts[k]
    )
    table = Table(title=title, title_justify="left")
    for column in (
        "case",
        "model",
        "kind",
        "base",
        "cand",
        "baseline output",
        "candidate output",
        "why (candidate)",
    ):
        table.add_column(column, overflow="fold")
    style = {"regressed": "red", "improved": "green", "flaky": "yellow"}
    for flip in comparison.flips[:MAX_ROWS]:
        table.add_row(
            _t(flip.case_id),
            _t(flip.model),
            _t(flip.kind, style[flip.kind]),
            _t(f"{flip.base} {flip.base_passes}"),
            _t(f"{flip.cand} {flip.cand_passes}"),
            _t(_clip(flip.base_output)),
            _t(_clip(flip.cand_output)),
            _t(_clip(flip.cand_reason)),
        )
    if len(comparison.flips) > MAX_ROWS:
        table.caption = f"{len(comparison.flips) - MAX_ROWS} more in --json / --markdown"
    return table


def gold_table(comparison: Comparison) -> Table | None:
    """RAG runs: the gold documents that left (or entered) each case's retrieved top k."""
    if not comparison.gold:
        return None
    dropped = sum(1 for g in comparison.gold if g.dropped)
    gained = sum(1 for g in comparison.gold if g.gained)
    title = f"gold documents in the top k: dropped in {dropped} case(s), gained in {gained}"
    table = Table(title=title, title_justify="left")
    for column in ("case", "dropped", "gained", "k base/cand"):
        table.add_column(column, overflow="fold")
    for item in comparison.gold[:MAX_ROWS]:
        table.add_row(
            _t(item.case_id),
            _t(", ".join(item.dropped), "red"),
            _t(", ".join(item.gained), "green"),
            _t(f"{item.base_k}/{item.cand_k}"),
        )
    if len(comparison.gold) > MAX_ROWS:
        table.caption = f"{len(comparison.gold) - MAX_ROWS} more in --json"
    return table


def errors_table(comparison: Comparison) -> Table | None:
    if not comparison.errors:
        return None
    counts = Counter(e.side for e in comparison.errors)
    table = Table(
        title=f"errors: {counts['base']} baseline, {counts['cand']} candidate", title_justify="left"
    )
    for column in ("side", "model", "case", "epoch", "kind", "message"):
        table.add_column(column, overflow="fold")
    for item in comparison.errors[:MAX_ROWS]:
        table.add_row(
            _t(item.side),
            _t(item.model),
            _t(item.case_id),
            _t(item.epoch),
            _t(item.kind),
            _t(_clip(item.message)),
        )
    return table


def comparison_parts(comparison: Comparison) -> list[Any]:
    """Renderables, in reading order: what changed first, then the numbers, then the cases."""
    base, cand = comparison.base, comparison.cand
    parts: list[Any] = [
        Text(
            f"candidate {cand.id} ({cand.results} results, {cand.errors} errors) vs baseline "
            f"{base.id} ({base.results} results, {base.errors} errors), suite {cand.suite}"
        ),
        *[Text(f"note: {note}", style="yellow") for note in comparison.notes],
        changes_table(comparison),
        metrics_table(comparison.metrics, "pass rates (paired on cases both ran)"),
    ]
    if comparison.slices:
        parts.append(metrics_table(comparison.slices, f"by {', '.join(comparison.by)}"))
    parts += [costs_table(comparison), flips_table(comparison)]
    gold = gold_table(comparison)
    if gold is not None:
        parts.append(gold)
    errors = errors_table(comparison)
    if errors is not None:
        parts.append(errors)
    return parts


def gate_parts(decision: GateDecision) -> list[Any]:
    table = Table(title="gate checks", title_justify="left")
    for column in ("check", "subject", "status", "detail"):
        table.add_column(column, overflow="fold")
    for check in decision.checks:
        table.add_row(
            _t(check.kind),
            _t(check.subject),
            _t(check.status, STATUS_STYLE.get(check.status, "")),
            _t(check.detail),
        )
    verdict = Text(
        f"gate: {decision.status} (exit {decision.exit_code})", style=STATUS_STYLE[decision.status]
    )
    return [table, *[Text(f"note: {n}", style="yellow") for n in decision.notes], verdict]
