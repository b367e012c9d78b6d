"""The `evals` command line: parse arguments, call the library, render; no logic of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from harness.errors import ConfigError, HarnessError

app = typer.Typer(
    name="evals",
    help="Evaluate LLM and RAG features: run suites, compare runs, gate CI, view traces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


@app.callback()
def _environment() -> None:
    # Variables of the nearest `.env` (the current directory, else its parents), loaded before
    # anything runs; a variable already set wins. litellm's import loads a `.env` too, but
    # which one depends on the process (a run's worker processes found the project's, the
    # `evals` process only one above its virtualenv), so one run's processes disagreed.
    from dotenv import find_dotenv, load_dotenv

    path = find_dotenv(usecwd=True)
    if path:
        load_dotenv(path, override=False)


STORE_OPTION = typer.Option(
    None, "--store", help="Run store file (default .evals/evals.db, or $EVALS_HOME/evals.db)."
)


def _fail(exc: HarnessError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _store_path(store: Path | None) -> Path:
    from harness.store import default_store_path

    return store if store is not None else default_store_path()


@app.command()
def run(
    suite: Path | None = typer.Argument(None, help="Suite file, e.g. evalsets/demo.yaml."),
    model: list[str] = typer.Option(
        [], "--model", "-m", help="Run these litellm models instead of the suite's (repeatable)."
    ),
    repeat: int | None = typer.Option(None, "--repeat", min=1, help="Epochs per case."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N cases."),
    sample: int | None = typer.Option(None, "--sample", min=1, help="A seeded random sample."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for --sample."),
    filters: list[str] = typer.Option(
        [], "--filter", help="key=value on case metadata; tag=x for tags (repeatable, ANDed)."
    ),
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", min=1),
    cache: str = typer.Option(
        "auto", "--cache", help="auto|on|off|read-only|refresh (auto: on for temperature 0)."
    ),
    max_error_rate: float | None = typer.Option(
        None,
        "--max-error-rate",
        min=0.0,
        max=1.0,
        help="Exit 3 above this error rate (default: the suite's max_error_rate, else 0.10).",
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        min=0,
        max=16,
        help="Processes sharing the run (0 = auto: every core for runs of 2,000+ remote calls).",
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        help="Run shard i of n (e.g. 2/4) of the "
        "selected cases; join shard run files with `evals merge`.",
    ),
    resume: str | None = typer.Option(None, "--resume", help="Continue a run: RUN_ID or last."),
    store: Path | None = STORE_OPTION,
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    trace: bool = typer.Option(True, "--trace/--no-trace", help="Record OpenTelemetry spans."),
    capture_content: bool = typer.Option(
        True,
        "--content/--no-content",
        help="Keep prompt and completion text in spans (metadata stays).",
    ),
    otlp_endpoint: str | None = typer.Option(
        None,
        "--otlp-endpoint",
        help="Also export spans over OTLP/HTTP (or OTEL_EXPORTER_OTLP_ENDPOINT).",
    ),
    chroma_url: str | None = typer.Option(
        None,
        "--chroma-url",
        help="A chroma server for a rag suite's index (default: .evals/chroma files).",
    ),
) -> None:
    """Run a suite: every case x model x epoch, scored, stored and summarised."""
    from harness import render
    from harness.errors import RunAborted
    from harness.execute import execute
    from harness.providers import CACHE_MODES
    from harness.runner import Runner, RunOptions
    from harness.suite import Selection, parse_shard
    from tracing.setup import check_otlp_endpoint

    if cache not in CACHE_MODES:
        raise _fail(ConfigError(f"--cache must be one of {', '.join(CACHE_MODES)}"))
    try:
        shard_spec = parse_shard(shard) if shard else None
        if trace:
            check_otlp_endpoint(otlp_endpoint, "--otlp-endpoint")
    except ConfigError as exc:
        raise _fail(exc) from None
    except ValueError as exc:
        raise _fail(ConfigError(str(exc))) from None
    options = RunOptions(
        repeat=repeat,
        concurrency=concurrency,
        cache_mode=cache,  # type: ignore[arg-type]
        max_error_rate=max_error_rate,
        trace=trace,
        capture_content=capture_content,
        workers=workers,
        otlp_endpoint=otlp_endpoint,
        chroma_url=chroma_url,
        selection=Selection(
            limit=limit, sample=sample, seed=seed, filters=list(filters), shard=shard_spec
        ),
    )
    bar: Any = None
    started: list[Runner] = []

    def on_start(runner: Runner) -> None:
        started.append(runner)

    def on_progress(progress: Any) -> None:
        nonlocal bar
        if bar is None:  # shown once the run is planned: a refused run prints only its error
            bar = render.progress_bar(err, progress)
            bar.start()
            bar.add_task(started[0].suite.name, total=None)
        bar.update(bar.task_ids[0], completed=progress.done, total=progress.total)

    try:
        outcome = execute(
            suite,
            project_dir=Path.cwd(),
            store_path=_store_path(store),
            options=options,
            model_ids=list(model),
            resume=resume,
            on_start=on_start,
            on_progress=on_progress,
            install_signals=_install_signals,
        )
    except KeyboardInterrupt:  # a Ctrl-C outside the run's own handler: while it loads, or
        # after its loop ended (recording its versions, flushing its spans)
        runner = started[0] if started else None
        if runner is not None and runner.outcome is not None:
            ended = runner.outcome
            err.print(f"interrupted after run {ended.run_id} ended ({ended.status}): "
                      f"`evals show {ended.run_id}` prints it")  # fmt: skip
        elif resume is None and not (runner and runner.recorded):
            err.print("interrupted before the run started: no run was recorded")
        else:
            run_id = runner.run_id if runner else resume
            err.print(f"interrupted: resume with `evals run --resume {run_id}`")
        raise typer.Exit(130) from None
    except HarnessError as exc:
        aborted = started[0].outcome if started and isinstance(exc, RunAborted) else None
        if aborted is None:
            if bar is not None:
                bar.stop()
            raise _fail(exc) from None
        outcome = aborted  # an aborted run is still summarised (JSON too), then exits 3
    finally:
        if bar is not None:
            bar.stop()
    summary = outcome.summary
    if json_output:
        print(
            json.dumps(
                {"run_id": outcome.run_id, "status": outcome.status, **summary},
                indent=2,
                default=str,
            )
        )
    else:
        out.print(render.summary_table(summary, f"run {outcome.run_id} ({outcome.status})"))
        out.print(render.cost_table(summary))
        for line in render.threshold_lines(summary):
            out.print(line, highlight=False)
    if outcome.reason is not None:  # aborted early, or completed above the error-rate limit
        err.print(
            f"run {outcome.run_id} could not measure ({outcome.status}): {outcome.reason}; "
            f"`evals run --resume {outcome.run_id}` runs its errors again",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(3)
    if outcome.status == "interrupted":
        err.print(f"interrupted: resume with `evals run --resume {outcome.run_id}`")
        raise typer.Exit(130)
    raise typer.Exit(0 if summary["thresholds_ok"] else 1)


def _install_signals(stop: Any, flush: Any) -> None:
    """First Ctrl-C: stop scheduling, finish in-flight calls. Second: save and quit now."""
    loop = asyncio.get_running_loop()
    pressed = {"count": 0}

    def on_signal() -> None:
        pressed["count"] += 1
        if pressed["count"] == 1:
            err.print("\nstopping: finishing in-flight calls (Ctrl-C again to quit now)")
            stop()
        else:
            flush()
            os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)


@app.command()
def runs(
    suite: str | None = typer.Option(None, "--suite", help="Only runs of this suite."),
    limit: int = typer.Option(20, "--limit", min=1),
    store: Path | None = STORE_OPTION,
) -> None:
    """List runs, newest first."""
    from harness import render
    from harness.store import Store

    try:
        with Store.open(_store_path(store), create=False) as db:
            out.print(render.runs_table(db.list_runs(suite=suite, limit=limit)))
    except HarnessError as exc:
        raise _fail(exc) from None


@app.command()
def show(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix, or 'last'."),
    failures: int = typer.Option(10, "--failures", help="How many failing cases to list."),
    json_output: bool = typer.Option(False, "--json"),
    store: Path | None = STORE_OPTION,
) -> None:
    """Show one run: lineage, summary, and its failing and errored cases."""
    from harness import render
    from harness.store import Store

    try:
        with Store.open(_store_path(store), create=False) as db:
            record = db.get_run(run_ref)
            results = db.results(record["id"])
    except HarnessError as exc:
        raise _fail(exc) from None
    if json_output:
        print(
            json.dumps(
                {"run": record, "results": [r.to_dict() for r in results]}, indent=2, default=str
            )
        )
        return
    for renderable in render.run_details(record, results, failures=failures):
        out.print(renderable)


@app.command("export")
def export_run(
    run_ref: str = typer.Argument(..., metavar="RUN"),
    output: Path = typer.Option(..., "--output", "-o", help="File to write (.jsonl or .parquet)."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Write a portable run file (lineage + results) for another machine or a CI baseline."""
    from harness.runfile import write_run_file
    from harness.store import Store

    try:
        with Store.open(_store_path(store), create=False) as db:
            run_record = write_run_file(db, run_ref, output)
    except HarnessError as exc:
        raise _fail(exc) from None
    err.print(f"wrote run {run_record['id']} to {output}")


@app.command("import")
def import_run(
    file: Path = typer.Argument(..., help="A run file written by `evals export`."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Read a run file into the store."""
    from harness.runfile import import_run_file, read_run_file
    from harness.store import Store

    try:
        read_run_file(file)  # a bad file must not even create the store
        with Store.open(_store_path(store)) as db:
            header, count = import_run_file(db, file)
    except HarnessError as exc:
        raise _fail(exc) from None
    err.print(f"imported run {header['run']['id']} ({count} results, with its versions and labels)")


@app.command()
def schema(kind: str = typer.Argument("suite", help="suite or prompt")) -> None:
    """Print the JSON Schema of suite (or prompt) files, for editor autocomplete."""
    from harness.config import schema_for

    try:
        print(json.dumps(schema_for(kind), indent=2))
    except ConfigError as exc:
        raise _fail(exc) from None


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


# --- sub-command groups (each in its own module) ----------------------------------------------
from harness.cli_judge import judge_app  # noqa: E402

app.add_typer(judge_app, name="judge")

from harness import cli_compare  # noqa: E402

cli_compare.register(app)  # compare, gate, merge, report, baseline

from harness import cli_releases, cli_versions  # noqa: E402

app.add_typer(cli_versions.prompt_app, name="prompt")
app.add_typer(cli_versions.rubric_app, name="rubric")
app.add_typer(cli_versions.retrieval_app, name="retrieval")
app.add_typer(cli_releases.release_app, name="release")
app.command("diff")(cli_versions.diff_runs)

from harness import cli_traces  # noqa: E402

cli_traces.register(app)  # traces, trace, dataset from-traces

from harness import cli_index  # noqa: E402

app.add_typer(cli_index.index_app, name="index")  # index build, list, show, diff

from harness import cli_view  # noqa: E402

cli_view.register(app)  # view, annotations export
