"""Run figures for the viewer: pass rates per model × scorer and per slice, verdict counts.

Per model × scorer figures come from the run's stored summary (harness.summary, written when a
run ends) when it covers every stored result; for a run still going they are aggregated in SQL.
Slices and verdict counts are aggregated in SQL. Errors are counted apart, never as fails;
intervals are 95% Wilson intervals from harness.summary.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from harness.stats import percentile
from harness.summary import wilson_interval

FIELD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .-]{0,63}$")
VERDICTS = ("fail", "error", "pass", "flaky")
MAX_SLICE_VALUES = 50


# --- per model × scorer --------------------------------------------------------------------------
@dataclass
class Rate:
    """Pass/fail/error counts with the pass rate (errors apart) and its 95% Wilson interval."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    value_sum: float = 0.0
    value_count: int = 0

    @property
    def n(self) -> int:
        return self.passed + self.failed

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.n if self.n else None

    @property
    def mean_score(self) -> float | None:
        return self.value_sum / self.value_count if self.value_count else None

    @property
    def interval(self) -> tuple[float | None, float | None]:
        return wilson_interval(self.passed, self.n)

    def add(self, status: str, count: int) -> None:
        if status == "pass":
            self.passed += count
        elif status == "fail":
            self.failed += count
        else:
            self.errors += count


@dataclass
class ModelMetrics:
    """One model's overall rate, per-scorer rates, and cost, tokens and latency."""

    model: str
    overall: Rate = field(default_factory=Rate)
    scorers: dict[str, Rate] = field(default_factory=dict)
    results: int = 0
    cost_usd: float | None = None
    cost_complete: bool = True
    input_tokens: int = 0
    output_tokens: int = 0
    cached: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None


def run_metrics(
    conn: sqlite3.Connection, run_id: str, summary: dict[str, Any] | None = None
) -> list[ModelMetrics]:
    """Per model × scorer figures: from `summary` when it is current, else from SQL."""
    if summary and isinstance(summary.get("models"), dict):
        # A resume replaces errored results in place, so the count alone cannot tell a
        # summary written before the resume from a current one.
        stored = conn.execute(
            "SELECT count(*), count(CASE WHEN status = 'error' THEN 1 END) FROM results "
            "WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if tuple(stored) == (summary.get("results"), summary.get("errors")):
            return [
                _from_summary(model, block) for model, block in sorted(summary["models"].items())
            ]
    return _aggregate(conn, run_id)


def _rate(block: dict[str, Any]) -> Rate:
    mean = block.get("mean_score")
    return Rate(
        passed=int(block.get("passed") or 0),
        failed=int(block.get("failed") or 0),
        errors=int(block.get("errors") or 0),
        value_sum=float(mean) if mean is not None else 0.0,
        value_count=0 if mean is None else 1,
    )


def _from_summary(model: str, block: dict[str, Any]) -> ModelMetrics:
    return ModelMetrics(
        model=model,
        overall=_rate({**block, "mean_score": None}),
        scorers={name: _rate(b) for name, b in (block.get("scorers") or {}).items()},
        results=int(block.get("results") or 0),
        cost_usd=block.get("cost_usd"),
        cost_complete=bool(block.get("cost_complete", True)),
        input_tokens=int(block.get("input_tokens") or 0),
        output_tokens=int(block.get("output_tokens") or 0),
        cached=int(block.get("cached") or 0),
        latency_p50_ms=block.get("latency_p50_ms"),
        latency_p95_ms=block.get("latency_p95_ms"),
    )


def _aggregate(conn: sqlite3.Connection, run_id: str) -> list[ModelMetrics]:
    """Per model × scorer figures aggregated in SQL, for a run without a current summary."""
    models: dict[str, ModelMetrics] = {}
    for model, status, count, cost, costs, tokens_in, tokens_out, cached in conn.execute(
        "SELECT model, status, count(*), sum(cost_usd), count(cost_usd), sum(input_tokens), "
        "sum(output_tokens), sum(cached) FROM results WHERE run_id = ? GROUP BY model, status",
        (run_id,),
    ):
        block = models.setdefault(model, ModelMetrics(model))
        block.overall.add(status, count)
        block.results += count
        if costs:
            block.cost_usd = (block.cost_usd or 0.0) + cost
        if costs < count and status != "error":
            block.cost_complete = False
        block.input_tokens += tokens_in or 0
        block.output_tokens += tokens_out or 0
        block.cached += cached or 0
    for model, scorer, status, count, value_sum, values in conn.execute(
        "SELECT model, scorer, status, count(*), sum(CASE WHEN status != 'error' THEN value END), "
        "count(CASE WHEN status != 'error' THEN value END) FROM scores WHERE run_id = ? "
        "GROUP BY model, scorer, status ORDER BY min(rowid)",
        (run_id,),
    ):
        block = models.setdefault(model, ModelMetrics(model))
        rate = block.scorers.setdefault(scorer, Rate())
        rate.add(status, count)
        rate.value_sum += value_sum or 0.0
        rate.value_count += values
    latencies: dict[str, list[float]] = {}
    for model, latency in conn.execute(
        "SELECT model, latency_ms FROM results WHERE run_id = ? AND status != 'error' "
        "AND cached = 0 AND latency_ms IS NOT NULL",
        (run_id,),
    ):
        latencies.setdefault(model, []).append(latency)
    for model, values in latencies.items():
        models[model].latency_p50_ms = percentile(values, 50)
        models[model].latency_p95_ms = percentile(values, 95)
    return [models[name] for name in sorted(models)]


def slice_fields(conn: sqlite3.Connection, run_id: str, sample: int = 500) -> list[str]:
    """Metadata keys of the run's cases (from its first `sample` results): the slice choices."""
    rows = conn.execute(
        "SELECT DISTINCT j.key FROM (SELECT case_data FROM results WHERE run_id = ? LIMIT ?) r, "
        "json_each(r.case_data, '$.metadata') j ORDER BY j.key",
        (run_id, sample),
    ).fetchall()
    return [str(row[0]) for row in rows if FIELD_NAME.match(str(row[0]))]


def slice_path(field_name: str) -> str:
    return f'$.metadata."{field_name}"'


# A metadata value as compare.slice_values names it: each item of a list, "(none)" when absent.
SLICE_TEXT = (
    "CASE WHEN j.type IS NULL OR j.type = 'null' THEN '(none)' WHEN j.type = 'true' THEN 'True' "
    "WHEN j.type = 'false' THEN 'False' ELSE CAST(j.value AS TEXT) END"
)


@dataclass
class SliceRow:
    value: str
    model: str
    rate: Rate


def slice_table(conn: sqlite3.Connection, run_id: str, field_name: str) -> list[SliceRow]:
    """Pass rates per value of one metadata field (list values: per item) and model."""
    if not FIELD_NAME.match(field_name):
        return []
    rates: dict[tuple[str, str], Rate] = {}
    for value, model, status, count in conn.execute(
        f"SELECT {SLICE_TEXT}, r.model, r.status, count(*) FROM results r "
        "LEFT JOIN json_each(r.case_data, ?) j ON j.type IS NULL OR j.type NOT IN "
        "('object', 'array') WHERE r.run_id = ? GROUP BY 1, 2, 3",
        (slice_path(field_name), run_id),
    ):
        rates.setdefault((value, model), Rate()).add(status, count)
    ordered = sorted(rates.items(), key=lambda item: (-(item[1].n + item[1].errors), item[0]))
    return [SliceRow(v, m, rate) for (v, m), rate in ordered[:MAX_SLICE_VALUES]]


def names(metrics: list[ModelMetrics]) -> tuple[list[str], list[str]]:
    """(models, scorers) of a run's figures, for the filter menus."""
    scorers: list[str] = []
    for block in metrics:
        scorers += [name for name in block.scorers if name not in scorers]
    return [block.model for block in metrics], scorers


def verdict_counts(conn: sqlite3.Connection, run_id: str) -> dict[str, int]:
    """Results per verdict, and results of flaky cases (differing verdicts across epochs)."""
    counts = {verdict: 0 for verdict in VERDICTS}
    for status, count in conn.execute(
        "SELECT status, count(*) FROM results WHERE run_id = ? GROUP BY status", (run_id,)
    ):
        counts[status] = count
    repeated = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM results WHERE run_id = ? AND epoch > 0)", (run_id,)
    ).fetchone()[0]
    if not repeated:  # one epoch per case: nothing can be flaky (and the scan is skipped)
        return counts
    counts["flaky"] = conn.execute(
        "SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM results WHERE run_id = ? "
        "GROUP BY case_id, model HAVING count(DISTINCT CASE WHEN status != 'error' "
        "THEN status END) > 1)",
        (run_id,),
    ).fetchone()[0]
    return counts
