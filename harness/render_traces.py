"""Terminal rendering of traces (rich): the run's trace table and one trace's span tree.

Trace content is shown as plain text, never as rich markup, with control characters escaped, so
a recorded span cannot restyle or take over the terminal.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

import tracing
from tracing import conventions as names

SHORT_VALUE = 160
TRACE_ID_SHOWN = 12  # a unique prefix in practice (48 bits); `evals trace` takes prefixes
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_VERDICT_STYLE = {"pass": "green", "fail": "yellow", "error": "red"}

# The attributes `evals trace` shows under a span of each kind (all with --attributes).
KEY_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    names.KIND_CHAIN: (
        names.EVALS_RUN_ID, names.EVALS_CASE_ID, names.EVALS_MODEL, names.EVALS_EPOCH,
        names.EVALS_VERDICT, names.EVALS_SCORE, names.OUTPUT_VALUE,
    ),
    names.KIND_LLM: (
        names.GEN_AI_REQUEST_MODEL, names.GEN_AI_RESPONSE_FINISH_REASONS, names.EVALS_CACHE_HIT,
        names.EVALS_RETRIES, names.OUTPUT_VALUE,
    ),
    names.KIND_TOOL: (
        names.GEN_AI_TOOL_NAME, names.GEN_AI_TOOL_CALL_ARGUMENTS, names.GEN_AI_TOOL_CALL_RESULT,
    ),
    names.KIND_EVALUATOR: (
        names.EVALS_SCORER_TYPE, names.EVALS_SCORE, names.EVALS_PASSED, names.EVALS_REASON,
    ),
    names.KIND_RETRIEVER: (
        names.GEN_AI_DATA_SOURCE_ID, names.EVALS_RETRIEVAL_QUERY, names.EVALS_RETRIEVAL_TOP_K,
    ),
    names.KIND_EMBEDDING: (names.EMBEDDING_MODEL_NAME, names.EVALS_EMBEDDING_INPUTS),
    names.KIND_AGENT: ("evals.agent.steps", names.OUTPUT_VALUE),
}  # fmt: skip


def clean(value: Any, limit: int | None = SHORT_VALUE) -> str:
    """Text safe for one terminal line: control characters escaped, long values cut."""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    value = value.replace("\n", "\\n").replace("\t", " ")
    value = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1:
        return f"{ms:.2f} ms"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.6f}" if value < 0.01 else f"${value:,.4f}"


def tokens(input_tokens: int | None, output_tokens: int | None) -> str:
    if input_tokens is None and output_tokens is None:
        return "-"
    return f"{input_tokens or 0}→{output_tokens or 0}"


_TRACE_COLUMNS = (
    ("case", "left"), ("model", "left"), ("ep", "right"), ("verdict", "left"),
    ("time", "right"), ("tokens", "right"), ("cost", "right"), ("spans", "right"),
    ("trace", "left"),
)  # fmt: skip
_MIN_WIDTH = {"case": 5, "model": 8, "trace": TRACE_ID_SHOWN}


def traces_table(rows: list[tracing.TraceSummary], title: str, width: int | None = None) -> Table:
    """A run's traces, a line each. Figures and the trace id prefix (which `evals trace` takes)
    are shown whole; in `width` columns, case and model names give way (cut with an
    ellipsis) instead."""
    cells = []
    for row in rows:
        verdict = row["verdict"] or ("error" if row["status"] == "ERROR" else "-")
        cells.append(
            [
                Text(clean(row["case_id"] or row["root_name"] or "-", 60)),
                Text(clean(row["model"] or "-", 40)),
                Text("-" if row["epoch"] is None else str(row["epoch"])),
                Text(verdict, style=_VERDICT_STYLE.get(verdict, "")),
                Text(duration(row["duration_ms"])),
                Text(tokens(row["input_tokens"], row["output_tokens"])),
                Text(money(row["cost_usd"])),
                Text(str(row["span_count"])),
                Text(row["trace_id"][:TRACE_ID_SHOWN]),
            ]
        )
    widest = [
        max([len(name), *(line[i].cell_len for line in cells)])
        for i, (name, _) in enumerate(_TRACE_COLUMNS)
    ]
    limits: dict[str, int] = {}
    if width is not None:  # what the figures leave, shared by case and model
        room = width - sum(widest[2:]) - 2 * (len(_TRACE_COLUMNS) - 1)
        half = max(_MIN_WIDTH["case"], min(widest[0], room // 2))
        model = max(_MIN_WIDTH["model"], min(widest[1], room - half))
        limits = {"case": max(_MIN_WIDTH["case"], min(widest[0], room - model)), "model": model}
    # Collapsed padding: one space each side of the column rule, not two.
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for name, justify in _TRACE_COLUMNS:
        flexible = name in ("case", "model")
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=not flexible,
            overflow="ellipsis" if flexible else "fold",
            min_width=_MIN_WIDTH.get(name),
            max_width=limits.get(name),
        )
    for line in cells:
        table.add_row(*line)
    return table


def _kind(span: tracing.SpanRecord) -> str:
    return span["span_kind"] or span["kind"]


def span_label(span: tracing.SpanNode, all_attributes: bool = False) -> Text:
    """A span's line (name, kind, duration, tokens, cost, status) and its key attributes."""
    kind = _kind(span)
    label = Text()
    label.append(clean(span["name"], 80), style="bold")
    label.append(f"  {kind}", style="cyan")
    label.append(f"  {duration(span['duration_ms'])}")
    if span["input_tokens"] is not None or span["output_tokens"] is not None:
        label.append(f"  {tokens(span['input_tokens'], span['output_tokens'])} tok")
    if span["cost_usd"] is not None:
        label.append(f"  {money(span['cost_usd'])}")
    attributes = span["attributes"]
    verdict = attributes.get(names.EVALS_VERDICT)
    if isinstance(verdict, str):
        label.append(f"  {verdict}", style=_VERDICT_STYLE.get(verdict, ""))
    if span["status_code"] == "ERROR":
        error_type = attributes.get(names.ERROR_TYPE, "error")
        label.append(f"  ERROR {clean(error_type, 60)}", style="bold red")
        if span["status_message"]:
            label.append(f": {clean(span['status_message'])}", style="red")
    if all_attributes:
        shown = sorted(attributes)
    else:
        shown = [key for key in KEY_ATTRIBUTES.get(kind, ()) if key in attributes]
    for key in shown:
        limit = None if all_attributes else SHORT_VALUE
        label.append(f"\n  {key} = {clean(attributes[key], limit)}", style="dim")
    if all_attributes:
        for event in span["events"]:
            label.append(f"\n  event {clean(event.get('name'))}", style="dim")
            for key, value in sorted((event.get("attributes") or {}).items()):
                label.append(f"\n    {key} = {clean(value, None)}", style="dim")
    return label


def span_tree_view(roots: list[tracing.SpanNode], title: Text, all_attributes: bool) -> Tree:
    tree = Tree(title, guide_style="dim")

    def add(parent: Tree, node: tracing.SpanNode) -> None:
        branch = parent.add(span_label(node, all_attributes))
        for child in node["children"]:
            add(branch, child)

    for root in roots:
        add(tree, root)
    return tree


def trace_totals(spans: list[tracing.SpanRecord]) -> dict[str, Any]:
    """Span count, wall time and the tokens and cost of the trace's model calls."""
    calls = [s for s in spans if s["span_kind"] in (names.KIND_LLM, names.KIND_EMBEDDING)]
    costs = [s["cost_usd"] for s in calls if s["cost_usd"] is not None]
    return {
        "spans": len(spans),
        "duration_ms": (max(s["end_ns"] for s in spans) - min(s["start_ns"] for s in spans)) / 1e6,
        "input_tokens": sum(s["input_tokens"] or 0 for s in calls),
        "output_tokens": sum(s["output_tokens"] or 0 for s in calls),
        "cost_usd": sum(costs) if costs else None,
        "errors": sum(s["status_code"] == "ERROR" for s in spans),
    }


def trace_title(trace_id: str, totals: dict[str, Any]) -> Text:
    """The line above a span tree: the trace's id and totals."""
    title = Text(f"trace {trace_id}", style="bold")
    title.append(
        f"  {totals['spans']} spans  {duration(totals['duration_ms'])}  "
        f"{tokens(totals['input_tokens'], totals['output_tokens'])} tok  "
        f"cost {money(totals['cost_usd'])}"
    )
    if totals["errors"]:
        title.append(f"  {totals['errors']} error span(s)", style="red")
    return title
