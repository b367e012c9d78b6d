"""The trace commands: `evals traces`, `evals trace` and `evals dataset from-traces`.

Thin: parse, call `tracing`'s queries or `harness.trace_dataset`, render with
`harness.render_traces`, exit. Registered on the main `evals` app by harness.cli; `tracing`
(the OpenTelemetry SDK) is imported inside the commands, so `evals --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from harness.errors import ConfigError, HarnessError, StoreError

out = Console()
err = Console(stderr=True)

STORE_OPTION = typer.Option(
    None, "--store", help="Run store file (default .evals/evals.db, or $EVALS_HOME/evals.db)."
)
VERDICTS = ("pass", "fail", "error")

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


def traces(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix, or 'last'."),
    verdict: str | None = typer.Option(None, "--verdict", help="Only pass, fail or error."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most N traces."),
    json_output: bool = typer.Option(False, "--json", help="Print the traces as JSON."),
    store: Path | None = STORE_OPTION,
) -> None:
    """List a run's traces: case, model, epoch, verdict, duration, tokens, cost, spans."""
    import tracing
    from harness.render_traces import TRACE_ID_SHOWN, traces_table

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
    title = f"run {run_id}: {len(rows)} of {total} traces{which}"
    out.print(traces_table(rows, title, out.width))
    if total == 0 and tracing.count_traces(store_path, run_id) == 0:
        err.print("this run recorded no traces (was it run with --no-trace?)", highlight=False)
    elif rows:
        err.print(f"show one: evals trace {rows[0]['trace_id'][:TRACE_ID_SHOWN]}", highlight=False)


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
    import tracing
    from harness.render_traces import span_tree_view, trace_title, trace_totals
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
    out.print(span_tree_view(roots, trace_title(trace_id, totals), all_attributes))


@dataset_app.command("from-traces")
def from_traces(
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file to write."),
    run_ref: str | None = typer.Option(
        None, "--run", help="Only traces of this run (id, prefix or last)."
    ),
    verdict: str | None = typer.Option(None, "--verdict", help="Only pass, fail or error."),
    trace_refs: list[str] = typer.Option(
        [], "--trace", help="This trace (id or unique prefix; repeatable)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N (the newest)."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Turn traces (e.g. a run's failures, or production traces recorded with the `tracing`
    helpers) into dataset cases with their source trace, run, case and verdict."""
    from harness.trace_dataset import cases_from_traces, select_trace_ids, write_jsonl

    try:
        _check_verdict(verdict)
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
        what = "no traces matched" if not ids else f"none of {len(ids)} trace(s) gave a case"
        err.print(f"{what}: nothing written", highlight=False)
        raise typer.Exit(1)
    write_jsonl(made.rows, output)
    err.print(f"wrote {len(made.rows)} case(s) to {output}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add these commands to the `evals` app."""
    app.command("traces")(traces)
    app.command("trace")(trace)
    app.add_typer(dataset_app, name="dataset")
