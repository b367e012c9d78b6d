"""Write one self-contained HTML report of a run (optionally against a baseline), with plots.

Self-contained: plotly's JavaScript is inlined from the installed package, so the file opens
with no network. Everything shown is escaped (Jinja2 autoescape; plotly JSON-escapes its data):
model outputs are untrusted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import jinja2

from harness.compare import OVERALL, Comparison, outcome, slice_values
from harness.runrefs import LoadedRun
from harness.store import ResultRow
from harness.summary import summarize

MAX_FAILURES = 200
MAX_SLICE_VALUES = 12
OUTPUT_CHARS = 600

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>evals report · {{ run.suite }} · {{ run.id }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
 padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:600} .good{color:#0a7a2f;font-weight:600}
pre{white-space:pre-wrap;word-break:break-word;margin:0;max-height:12em;overflow:auto}
.meta{color:#555} h2{margin-top:2rem;border-bottom:1px solid #eee}
</style>
<script>{{ plotly_js | safe }}</script>
</head><body>
<h1>{{ run.suite }}: run {{ run.id }}</h1>
<p class="meta">status {{ run.record.status }} · started {{ started }} · {{ summary.results }}
results, {{ summary.errors }} errors · prompt {{ prompt }} · dataset {{ dataset }} ·
commit {{ commit }}</p>
<h2>Summary</h2>
<table><tr><th>model</th><th>metric</th><th>pass rate</th><th>95% CI (Wilson)</th>
<th>mean score</th><th>n</th><th>errors</th><th>cost</th><th>p50 / p95 latency</th></tr>
{% for row in summary_rows %}<tr><td>{{ row.model }}</td><td>{{ row.metric }}</td>
<td class="num">{{ row.rate }}</td><td class="num">{{ row.ci }}</td>
<td class="num">{{ row.mean }}</td><td class="num">{{ row.n }}</td>
<td class="num">{{ row.errors }}</td><td class="num">{{ row.cost }}</td>
<td class="num">{{ row.latency }}</td></tr>{% endfor %}</table>
{% if comparison %}
<h2>Against baseline {{ comparison.base.id }}</h2>
{% if comparison.changes %}<p>What changed:</p><ul>{% for c in comparison.changes %}
<li>{{ c.what }}: <code>{{ c.summary }}</code></li>{% endfor %}</ul>
{% else %}<p>What changed: nothing in the recorded lineage.</p>{% endif %}
<table><tr><th>model</th><th>metric</th><th>baseline</th><th>candidate</th>
<th>Δ pts (paired)</th><th>95% CI</th><th>p</th><th>n both</th><th>errors b/c</th></tr>
{% for m in paired %}<tr><td>{{ m.model }}</td><td>{{ m.metric }}</td>
<td class="num">{{ m.base }}</td><td class="num">{{ m.cand }}</td>
<td class="num {{ m.style }}">{{ m.diff }}</td><td class="num">{{ m.ci }}</td>
<td class="num">{{ m.p }}</td><td class="num">{{ m.n }}</td>
<td class="num">{{ m.errors }}</td></tr>{% endfor %}</table>
{% if flips %}<p>Case flips ({{ flips|length }}):</p>
<table><tr><th>case</th><th>model</th><th>kind</th><th>baseline</th><th>candidate</th></tr>
{% for f in flips %}<tr><td>{{ f.case_id }}</td><td>{{ f.model }}</td><td>{{ f.kind }}</td>
<td><pre>{{ f.base_output }}</pre></td><td><pre>{{ f.cand_output }}</pre>
<div class="meta">{{ f.cand_reason }}</div></td></tr>{% endfor %}</table>{% endif %}
{% endif %}
{% for table in slice_tables %}
<h2>By {{ table.field }}</h2>
<table><tr><th>{{ table.field }}</th><th>model</th><th>n</th><th>pass rate</th><th>errors</th>
</tr>{% for row in table.rows %}<tr><td>{{ row.value }}</td><td>{{ row.model }}</td>
<td class="num">{{ row.n }}</td><td class="num">{{ row.rate }}</td>
<td class="num">{{ row.errors }}</td></tr>{% endfor %}</table>
{% endfor %}
<h2>Plots</h2>
{% for plot in plots %}{{ plot | safe }}{% endfor %}
<h2>Failing and errored cases ({{ failures|length }}{% if more_failures %} of
{{ failures|length + more_failures }}{% endif %})</h2>
<table><tr><th>case</th><th>model</th><th>epoch</th><th>status</th><th>why</th><th>output</th>
</tr>{% for f in failures %}<tr><td>{{ f.case_id }}</td><td>{{ f.model }}</td>
<td class="num">{{ f.epoch }}</td><td>{{ f.status }}</td><td>{{ f.why }}</td>
<td><pre>{{ f.output }}</pre></td></tr>{% endfor %}</table>
<p class="meta">Generated {{ generated }} by evals-harness.</p>
</body></html>
"""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _clip(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= OUTPUT_CHARS else text[:OUTPUT_CHARS] + "…"


def _summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for model, block in summary["models"].items():
        cost = block.get("cost_usd")
        latency = (
            f"{block['latency_p50_ms']:.0f} / {block['latency_p95_ms']:.0f} ms"
            if block.get("latency_p50_ms") is not None
            else "-"
        )
        metrics = [(OVERALL, block), *block.get("scorers", {}).items()]
        for name, item in metrics:
            ci = (
                "-"
                if item.get("ci_low") is None
                else f"{_pct(item['ci_low'])}–{_pct(item['ci_high'])}"
            )
            mean = item.get("mean_score")
            rows.append(
                {
                    "model": model,
                    "metric": name,
                    "rate": _pct(item["pass_rate"]),
                    "ci": ci,
                    "mean": "-" if mean is None else f"{mean:.3f}",
                    "n": item["n"],
                    "errors": item["errors"],
                    "cost": ("unknown" if cost is None else f"${cost:.4f}")
                    if name == OVERALL
                    else "",
                    "latency": latency if name == OVERALL else "",
                }
            )
    return rows


def _slice_fields(results: list[ResultRow], by: list[str]) -> list[str]:
    """The requested fields, else metadata fields with 2..12 distinct values."""
    if by:
        return by
    values: dict[str, set[str]] = defaultdict(set)
    for result in results:
        for key, value in ((result.case_data or {}).get("metadata") or {}).items():
            if isinstance(value, str | int | bool):
                values[key].add(str(value))
    return sorted(k for k, v in values.items() if 2 <= len(v) <= MAX_SLICE_VALUES)


def _slice_tables(results: list[ResultRow], by: list[str]) -> list[dict[str, Any]]:
    tables = []
    for field_name in _slice_fields(results, by):
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for result in results:
            for value in slice_values(result, field_name):
                index = {"pass": 0, "fail": 1}.get(result.status, 2)
                counts[(value, result.model)][index] += 1
        rows = [
            {
                "value": value,
                "model": model,
                "n": p + f,
                "rate": _pct(p / (p + f) if p + f else None),
                "errors": e,
            }
            for (value, model), (p, f, e) in sorted(counts.items())
        ]
        tables.append({"field": field_name, "rows": rows})
    return tables


def _plots(run: LoadedRun, base: LoadedRun | None) -> list[str]:
    import plotly.graph_objects as go
    import plotly.io as pio

    runs = [("candidate" if base else "run", run)] + ([("baseline", base)] if base else [])
    scores, points, latency = go.Figure(), go.Figure(), go.Figure()
    for side, item in runs:
        by_model: dict[str, list[ResultRow]] = defaultdict(list)
        for result in item.results:
            by_model[result.model].append(result)
        for model, rows in sorted(by_model.items()):
            name = f"{model} ({side})" if base else model
            values = [o[1] for r in rows if (o := outcome(r, OVERALL)) and o[1] is not None]
            scores.add_trace(go.Histogram(x=values, name=name, opacity=0.6, nbinsx=20))
            settled = [r for r in rows if r.status != "error"]
            known = [r.cost_usd for r in rows if r.cost_usd is not None]
            if settled:
                rate = sum(r.status == "pass" for r in settled) / len(settled)
                per_case = sum(known) / len(known) if known else 0.0
                points.add_trace(
                    go.Scatter(
                        x=[per_case], y=[rate * 100], name=name, mode="markers", marker={"size": 14}
                    )
                )
            times = [
                r.latency_ms
                for r in rows
                if r.latency_ms is not None and not r.cached and r.status != "error"
            ]
            latency.add_trace(go.Histogram(x=times, name=name, opacity=0.6, nbinsx=30))
    scores.update_layout(
        title="Score distribution (weighted score per result)",
        barmode="overlay",
        xaxis_title="score",
        yaxis_title="results",
    )
    points.update_layout(
        title="Cost vs quality per model",
        xaxis_title="mean cost per result (USD; unknown cost counts as 0)",
        yaxis_title="pass rate (%)",
    )
    latency.update_layout(
        title="Latency (uncached results)",
        barmode="overlay",
        xaxis_title="ms",
        yaxis_title="results",
    )
    html = []
    for figure in (scores, points, latency):
        figure.update_layout(template="plotly_white", height=380)
        html.append(pio.to_html(figure, full_html=False, include_plotlyjs=False))
    return html


def _failures(results: list[ResultRow]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        if result.status == "pass":
            continue
        why = (
            (result.error or "error")
            if result.status == "error"
            else "; ".join(f"{s.scorer}: {s.reason}" for s in result.scores if s.status != "pass")
        )
        rows.append(
            {
                "case_id": result.case_id,
                "model": result.model,
                "epoch": result.epoch,
                "status": result.status,
                "why": _clip(why),
                "output": _clip(result.output),
            }
        )
    return rows


def html_report(
    run: LoadedRun,
    comparison: Comparison | None = None,
    *,
    base: LoadedRun | None = None,
    by: list[str] | None = None,
) -> str:
    """The report page as one HTML string."""
    from plotly.offline import get_plotlyjs

    manifest = run.manifest
    summary = summarize(run.results, manifest.get("thresholds") or {})
    prompt = manifest.get("prompt") or {}
    dataset = manifest.get("dataset") or {}
    paired = []
    for m in comparison.metrics if comparison else []:
        est = m.pass_rate
        significant = est.p_value is not None and est.p_value < 0.05 and est.diff
        paired.append(
            {
                "model": m.model,
                "metric": m.metric,
                "base": _pct(m.base.pass_rate),
                "cand": _pct(m.cand.pass_rate),
                "diff": "-" if est.diff is None else f"{est.diff * 100:+.1f}",
                "ci": "-"
                if est.ci_low is None
                else f"{est.ci_low * 100:+.1f} to {(est.ci_high or 0) * 100:+.1f}",
                "p": "-" if est.p_value is None else f"{est.p_value:.3g}",
                "n": m.n_both,
                "errors": f"{m.n_errors_base}/{m.n_errors_cand}",
                "style": ("bad" if (est.diff or 0) < 0 else "good") if significant else "",
            }
        )
    failures = _failures(run.results)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_PAGE).render(
        run=run,
        summary=summary,
        summary_rows=_summary_rows(summary),
        started=time.strftime("%Y-%m-%d %H:%M", time.localtime(run.record.get("created_at") or 0)),
        prompt=f"{prompt.get('name')}@{prompt.get('version')}" if prompt else "-",
        dataset=f"{dataset.get('source')}@{dataset.get('version')}" if dataset else "-",
        commit=str((manifest.get("git") or {}).get("commit") or "-")[:10],
        comparison=comparison,
        paired=paired,
        flips=[
            {**f.__dict__, "base_output": _clip(f.base_output), "cand_output": _clip(f.cand_output)}
            for f in (comparison.flips if comparison else [])
        ][:MAX_FAILURES],
        slice_tables=_slice_tables(run.results, list(by or [])),
        plots=_plots(run, base),
        plotly_js=get_plotlyjs(),
        failures=failures[:MAX_FAILURES],
        more_failures=max(0, len(failures) - MAX_FAILURES),
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
