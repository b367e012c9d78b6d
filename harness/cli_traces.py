"""The trace commands: `evals traces`, `evals trace` and `evals dataset from-traces`.

Thin: parse, call `tracing`'s queries or `harness.trace_dataset`, render with rich, exit.
Registered on the main `evals` app by harness.cli. Trace content is shown as plain text (never
as rich markup) with control characters replaced, so a trace cannot restyle the terminal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

import tracing
from tracing import conventions as names

from harness.errors import ConfigError, HarnessError, StoreError

out = Console()
err = Console(stderr=True)

STORE_OPTION = typer.Option(
    None, "--store", help="Run store file (default .evals/evals.db, or $EVALS_HOME/evals.db)."
)
VERDICTS = ("pass", "fail", "error")
SHORT_VALUE = 160
TRACE_ID_SHOWN = 16
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

dataset_app = typer.Typer(help="Build dataset files for the next suite.", no_args_is_help=True)


def _fail(exc: HarnessError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _store_path(store: Path | None) -> Path:
    from harness.store import default_store_path

    path = store if store is not None else default_store_path()
    if not path.exists():
        raise StoreError(f"no run store at {path} (run `evals run` first, or pass --store)")
    return path


def _run_id(store_path: Path, ref: str) -> str:
    from harness.store import Store

    with Store.open(store_path, create=False) as db:
        return str(db.get_run(ref)["id"])


def _check_verdict(verdict: str | None) -> None:
    if verdict is not None and verdict not in VERDICTS:
        raise ConfigError(f"--verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")


# --- formatting -------------------------------------------------------------------------------


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


# --- evals traces -----------------------------------------------------------------------------


def traces_table(rows: list[tracing.TraceSummary], title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for name, justify in (
        ("case", "left"), ("model", "left"), ("epoch", "right"), ("verdict", "left"),
        ("duration", "right"), ("tokens", "right"), ("cost", "right"), ("spans", "right"),
        ("trace", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=name == "trace")  # type: ignore[arg-type]
    for row in rows:
        verdict = row["verdict"] or ("error" if row["status"] == "ERROR" else "-")
        table.add_row(
            Text(clean(row["case_id"] or row["root_name"] or "-", 60)),
            Text(clean(row["model"] or "-", 40)),
            "-" if row["epoch"] is None else str(row["epoch"]),
            Text(verdict, style=_VERDICT_STYLE.get(verdict, "")),
            duration(row["duration_ms"]),
            tokens(row["input_tokens"], row["output_tokens"]),
            money(row["cost_usd"]),
            str(row["span_count"]),
            row["trace_id"][:TRACE_ID_SHOWN],  # a unique prefix: `evals trace` takes it
        )
    return table


def traces(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix, or 'last'."),
    verdict: str | None = typer.Option(None, "--verdict", help="Only pass, fail or error."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most N traces."),
    json_output: bool = typer.Option(False, "--json", help="Print the traces as JSON."),
    store: Path | None = STORE_OPTION,
) -> None:
    """List a run's traces: case, model, epoch, verdict, duration, tokens, cost, spans."""
    try:
        _check_verdict(verdict)
        store_path = _store_path(store)
        run_id = _run_id(store_path, run_ref)
        total = tracing.count_traces(store_path, run_id, verdict=verdict)
        rows = tracing.list_traces(
            store_path, run_id, limit=limit, verdict=verdict, newest_first=False
        )
    except HarnessError as exc:
        raise _fail(exc) from None
    if json_output:
        print(json.dumps({"run_id": run_id, "total": total, "traces": rows}, indent=2))
        return
    which = f" with verdict {verdict}" if verdict else ""
    out.print(traces_table(rows, f"run {run_id}: {len(rows)} of {total} traces{which}"))
    if total == 0 and tracing.count_traces(store_path, run_id) == 0:
        err.print("this run recorded no traces (was it run with --no-trace?)", highlight=False)
    elif rows:
        err.print(f"show one: evals trace {rows[0]['trace_id'][:TRACE_ID_SHOWN]}", highlight=False)


# --- evals trace ------------------------------------------------------------------------------


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


def trace(
    trace_ref: str = typer.Argument(..., metavar="TRACE_ID", help="A trace id or unique prefix."),
    all_attributes: bool = typer.Option(
        False, "--attributes", help="Show every attribute (and event) of every span, in full."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the span tree as JSON."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Print one trace as a tree of spans with durations, tokens, cost, status and the key
    attributes of each step."""
    from harness.trace_dataset import resolve_trace_id

    try:
        store_path = _store_path(store)
        trace_id = resolve_trace_id(store_path, trace_ref)
        spans = tracing.get_trace(store_path, trace_id)
    except HarnessError as exc:
        raise _fail(exc) from None
    totals = trace_totals(spans)
    roots = tracing.span_tree(spans)
    if json_output:
        print(json.dumps({"trace_id": trace_id, **totals, "roots": roots}, indent=2))
        return
    title = Text(f"trace {trace_id}", style="bold")
    title.append(
        f"  {totals['spans']} spans  {duration(totals['duration_ms'])}  "
        f"{tokens(totals['input_tokens'], totals['output_tokens'])} tok  "
        f"cost {money(totals['cost_usd'])}"
    )
    if totals["errors"]:
        title.append(f"  {totals['errors']} error span(s)", style="red")
    out.print(span_tree_view(roots, title, all_attributes))


# --- evals dataset from-traces ----------------------------------------------------------------


@dataset_app.command("from-traces")
def from_traces(
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file to write."),
    run_ref: str | None = typer.Option(None, "--run", help="Only traces of this run (id, "
                                       "prefix or last)."),  # fmt: skip
    verdict: str | None = typer.Option(None, "--verdict", help="Only pass, fail or error."),
    trace_refs: list[str] = typer.Option([], "--trace", help="This trace (id or unique prefix; "
                                         "repeatable)."),  # fmt: skip
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N (the newest)."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Turn traces (e.g. a run's failures, or production traces recorded with the `tracing`
    helpers) into dataset cases with their source trace, run, case and verdict."""
    from harness.trace_dataset import cases_from_traces, select_trace_ids, write_jsonl

    try:
        store_path = _store_path(store)
        run_id = _run_id(store_path, run_ref) if run_ref is not None else None
        ids = select_trace_ids(
            store_path, run_id=run_id, verdict=verdict, trace_refs=trace_refs, limit=limit
        )
        made = cases_from_traces(store_path, ids)
    except HarnessError as exc:
        raise _fail(exc) from None
    for trace_id, why in made.skipped:
        err.print(f"skipped trace {trace_id}: {why}", highlight=False)
    if not made.rows:
        err.print("no traces matched: nothing written", highlight=False)
        raise typer.Exit(1)
    write_jsonl(made.rows, output)
    err.print(f"wrote {len(made.rows)} case(s) to {output}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add these commands to the `evals` app."""
    app.command("traces")(traces)
    app.command("trace")(trace)
    app.add_typer(dataset_app, name="dataset")
