"""Write comparisons and gate decisions as Markdown (pull-request comments) and JUnit XML.

Model outputs are untrusted text: Markdown cells are escaped (HTML, table pipes, mentions,
links) and XML drops the characters XML 1.0 cannot carry. The HTML report is report_html.
"""

from __future__ import annotations

import html
import re
import socket
import time
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any

from harness.compare import OVERALL, Comparison, MetricComparison
from harness.gate import GateDecision
from harness.runrefs import LoadedRun

STATUS_MARK = {"pass": "✅ pass", "regression": "❌ regression", "unmeasurable": "⚠️ unmeasurable"}
CHECK_MARK = {"ok": "ok", "regression": "**regression**", "unmeasurable": "**unmeasurable**"}
MAX_FLIPS = 50
MAX_ERRORS = 30
CELL_CHARS = 160
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def md_cell(text: Any, limit: int = CELL_CHARS) -> str:
    """Untrusted text as one inert Markdown table cell."""
    value = "" if text is None else str(text)
    value = " ".join(value.split())
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    value = html.escape(value, quote=False)
    value = _MD_SPECIAL.sub(r"\\\1", value)
    return value.replace("@", "&#64;").replace(":/", "&#58;/")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def pts(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}"


def change(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"


def p_text(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.4g}{unit}"


def cost(value: float | None, complete: bool) -> str:
    if value is None:
        return "unknown"
    return f"${value:.4f}" + ("" if complete else " +?")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _metric_rows(metrics: list[MetricComparison], with_slice: bool = False) -> list[list[str]]:
    rows = []
    for m in metrics:
        est = m.pass_rate
        ci = "-" if est.ci_low is None else f"{pts(est.ci_low)} to {pts(est.ci_high)}"
        score = (
            "-" if m.score.diff is None else f"{m.score.diff:+.3f} (p {p_text(m.score.p_value)})"
        )
        row = [
            md_cell(m.model),
            md_cell(m.metric),
            pct(m.base.pass_rate),
            pct(m.cand.pass_rate),
            pts(est.diff),
            ci,
            p_text(est.p_value),
            score,
            str(m.n_both),
            f"{m.n_errors_base}/{m.n_errors_cand}",
        ]
        rows.append(([md_cell(m.slice)] if with_slice else []) + row)
    return rows


METRIC_HEADER = [
    "model",
    "metric",
    "baseline",
    "candidate",
    "Δ pts (paired)",
    "95% CI",
    "p",
    "Δ mean score",
    "n both",
    "errors b/c",
]


def comparison_markdown(comparison: Comparison, *, heading: str = "##") -> str:
    """The comparison as Markdown: what changed, pass rates, slices, cost, flips, errors."""
    base, cand = comparison.base, comparison.cand
    lines = [
        f"{heading} evals compare: `{md_cell(cand.id)}` vs baseline `{md_cell(base.id)}`",
        "",
        f"Suite **{md_cell(cand.suite)}**: candidate {cand.results} results "
        f"({cand.errors} errors), baseline {base.results} results ({base.errors} errors).",
        "",
    ]
    lines += [f"> {md_cell(note)}" for note in comparison.notes]
    if comparison.changes:
        lines += ["**What changed**", ""]
        lines += [f"- {md_cell(c.what)}: {md_cell(c.summary, 200)}" for c in comparison.changes] + [
            ""
        ]
    else:
        lines += ["**What changed:** nothing in the recorded lineage.", ""]
    lines += [f"{heading}# Pass rates", ""]
    lines += _table(METRIC_HEADER, _metric_rows(comparison.metrics))
    lines.append(
        f"Paired on (case, model, epoch); Δ = candidate − baseline on cases both ran; "
        f"{comparison.settings.resamples} bootstrap resamples (seed "
        f"{comparison.settings.seed}); p: exact McNemar for pass/fail, Wilcoxon "
        f"signed-rank for scores. `{OVERALL}` = every scorer passed."
    )
    lines.append("")
    if comparison.slices:
        lines += [f"{heading}# By {', '.join(comparison.by)}", ""]
        lines += _table(["slice", *METRIC_HEADER], _metric_rows(comparison.slices, True))
    lines += [f"{heading}# Cost and latency", ""]
    lines += _table(
        [
            "model",
            "cost base",
            "cost cand",
            "Δ total",
            "Δ per case",
            "p50 base → cand",
            "Δ p50",
            "p95 base → cand",
            "Δ p95",
        ],
        [
            [
                md_cell(c.model),
                cost(c.base_cost, c.base_cost_complete),
                cost(c.cand_cost, c.cand_cost_complete),
                change(c.cost_change),
                change(c.cost_per_case_change),
                f"{num(c.base_p50_ms, ' ms')} → {num(c.cand_p50_ms, ' ms')}",
                change(c.p50_change),
                f"{num(c.base_p95_ms, ' ms')} → {num(c.cand_p95_ms, ' ms')}",
                change(c.p95_change),
            ]
            for c in comparison.costs
        ],
    )
    lines += flips_markdown(comparison, heading) + errors_markdown(comparison, heading)
    return "\n".join(lines)


def flips_markdown(comparison: Comparison, heading: str = "##") -> list[str]:
    counts = Counter(f.kind for f in comparison.flips)
    if not comparison.flips:
        return [f"{heading}# Case flips", "", "No case flipped.", ""]
    summary = ", ".join(f"{counts[k]} {k}" for k in ("regressed", "improved", "flaky") if counts[k])
    rows = [
        [
            md_cell(f.case_id),
            md_cell(f.model),
            f.kind,
            f"{f.base} ({f.base_passes})",
            f"{f.cand} ({f.cand_passes})",
            md_cell(f.base_output, 100),
            md_cell(f.cand_output, 100),
            md_cell(f.cand_reason, 100),
        ]
        for f in comparison.flips[:MAX_FLIPS]
    ]
    more = len(comparison.flips) - MAX_FLIPS
    return [
        f"{heading}# Case flips",
        "",
        f"<details><summary>{summary}</summary>",
        "",
        *_table(
            [
                "case",
                "model",
                "kind",
                "baseline",
                "candidate",
                "baseline output",
                "candidate output",
                "why (candidate)",
            ],
            rows,
        ),
        *([f"… and {more} more (see --json)", ""] if more > 0 else []),
        "Flaky: mixed outcomes over repeats on either side, not blamed on the change.",
        "",
        "</details>",
        "",
    ]


def errors_markdown(comparison: Comparison, heading: str = "##") -> list[str]:
    if not comparison.errors:
        return []
    rows = [
        [
            e.side,
            md_cell(e.model),
            md_cell(e.case_id),
            str(e.epoch),
            md_cell(e.kind),
            md_cell(e.message, 120),
        ]
        for e in comparison.errors[:MAX_ERRORS]
    ]
    counts = Counter(e.side for e in comparison.errors)
    return [
        f"{heading}# Errors ({counts['base']} baseline, {counts['cand']} candidate)",
        "",
        *_table(["side", "model", "case", "epoch", "kind", "message"], rows),
    ]


def gate_markdown(decision: GateDecision, comparison: Comparison) -> str:
    """A pull-request comment: the verdict and its checks first, then the comparison."""
    lines = [f"## evals gate: {STATUS_MARK[decision.status]}", ""]
    lines += [f"> {md_cell(note)}" for note in decision.notes]
    failing = decision.failing()
    shown = failing or decision.checks
    lines += _table(
        ["check", "subject", "status", "detail"],
        [[c.kind, md_cell(c.subject), CHECK_MARK[c.status], md_cell(c.detail, 400)] for c in shown],
    )
    if failing and len(failing) < len(decision.checks):
        lines += [f"{len(decision.checks) - len(failing)} other checks passed.", ""]
    lines.append(comparison_markdown(comparison, heading="###"))
    return "\n".join(lines)


def _xml_text(text: Any) -> str:
    return _XML_INVALID.sub("\ufffd", "" if text is None else str(text))


def _case(parent: ET.Element, classname: str, name: str, seconds: float) -> ET.Element:
    return ET.SubElement(
        parent,
        "testcase",
        classname=_xml_text(classname),
        name=_xml_text(name),
        time=f"{seconds:.3f}",
    )


def _finish(suite: ET.Element, counts: Counter[str], seconds: float) -> None:
    suite.set("tests", str(counts["tests"]))
    suite.set("failures", str(counts["failures"]))
    suite.set("errors", str(counts["errors"]))
    suite.set("skipped", "0")
    suite.set("time", f"{seconds:.3f}")
    ET.SubElement(suite, "system-out")
    ET.SubElement(suite, "system-err")


def junit_xml(run: LoadedRun, decision: GateDecision | None = None) -> str:
    """JUnit XML: one testcase per eval case × scorer (failure for fail, error for error),
    plus one per gate check when a decision is given."""
    root = ET.Element("testsuites", name=_xml_text(f"evals {run.suite}"))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(run.record.get("created_at") or 0))
    suites = []
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_xml_text(run.suite),
        timestamp=stamp,
        hostname=_xml_text(socket.gethostname()),
        id="0",
        package="evals",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="run_id", value=_xml_text(run.id))
    scorer_names = [str(s.get("name") or s.get("type")) for s in run.manifest.get("scorers") or []]
    repeat = int(run.manifest.get("repeat") or 1)
    counts: Counter[str] = Counter()
    total = 0.0
    for result in run.results:
        epoch = f" [epoch {result.epoch}]" if repeat > 1 else ""
        by_name = {s.scorer: s for s in result.scores}
        names = list(by_name) or scorer_names or ["result"]
        seconds = (result.latency_ms or 0.0) / 1000 / len(names)
        for name in names:
            case = _case(
                suite, f"{run.suite}.{result.model}", f"{result.case_id} · {name}{epoch}", seconds
            )
            total += seconds
            counts["tests"] += 1
            score = by_name.get(name)
            status = score.status if score else "error"
            if status == "fail":
                counts["failures"] += 1
                failure = ET.SubElement(
                    case,
                    "failure",
                    type="fail",
                    message=_xml_text((score.reason if score else "")[:500]),
                )
                failure.text = _xml_text(f"output: {result.output}")
            elif status == "error":
                counts["errors"] += 1
                message = (score.reason if score else None) or result.error or "error"
                error = ET.SubElement(
                    case,
                    "error",
                    type=_xml_text(result.error_kind or "error"),
                    message=_xml_text(message[:500]),
                )
                error.text = _xml_text(result.error or message)
    _finish(suite, counts, total)
    suites.append(counts)
    if decision is not None:
        gate = ET.SubElement(
            root,
            "testsuite",
            name=_xml_text(f"{run.suite}.gate"),
            timestamp=stamp,
            hostname=_xml_text(socket.gethostname()),
            id="1",
            package="evals",
        )
        ET.SubElement(gate, "properties")
        gate_counts: Counter[str] = Counter()
        for check in decision.checks:
            case = _case(gate, f"{run.suite}.gate.{check.kind}", check.subject, 0.0)
            gate_counts["tests"] += 1
            if check.status == "regression":
                gate_counts["failures"] += 1
                ET.SubElement(
                    case, "failure", type="regression", message=_xml_text(check.detail)
                ).text = _xml_text(check.detail)
            elif check.status == "unmeasurable":
                gate_counts["errors"] += 1
                ET.SubElement(
                    case, "error", type="unmeasurable", message=_xml_text(check.detail)
                ).text = _xml_text(check.detail)
        _finish(gate, gate_counts, 0.0)
        suites.append(gate_counts)
    for key in ("tests", "failures", "errors"):
        root.set(key, str(sum(c[key] for c in suites)))
    root.set("skipped", "0")
    root.set("time", f"{total:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
