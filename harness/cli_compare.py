"""The compare, gate, baseline, merge and report commands (thin: parse, call, render, exit).

Registered on the main `evals` app by harness.cli. Heavy modules (scipy, numpy, plotly, the
runner) are imported inside the commands so `evals --help` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from harness.errors import ConfigError, HarnessError

out = Console()
err = Console(stderr=True)

STORE_OPTION = typer.Option(
    None, "--store", help="Run store file (default .evals/evals.db, or $EVALS_HOME/evals.db)."
)
BY_OPTION = typer.Option(
    [], "--by", help="Also compare per value of this case metadata field (repeatable)."
)
RESAMPLES_OPTION = typer.Option(5000, "--resamples", min=2000, help="Bootstrap resamples.")
BOOT_SEED_OPTION = typer.Option(0, "--bootstrap-seed", help="Seed of the bootstrap.")
baseline_app = typer.Typer(
    help="The committed baseline run file a suite's gate compares to.", no_args_is_help=True
)


def _fail(exc: HarnessError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _store_path(store: Path | None) -> Path:
    from harness.store import default_store_path

    return store if store is not None else default_store_path()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    err.print(f"wrote {path}", highlight=False)


def compare(
    base: str = typer.Argument(
        ...,
        metavar="BASE",
        help="Run id, prefix, last, last~N, a run "
        "file (.jsonl/.parquet), or 'baseline' (the suite's).",
    ),
    candidate: str = typer.Argument(..., metavar="CANDIDATE", help="The run to judge."),
    by: list[str] = BY_OPTION,
    json_output: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Also write Markdown here."),
    resamples: int = RESAMPLES_OPTION,
    bootstrap_seed: int = BOOT_SEED_OPTION,
    store: Path | None = STORE_OPTION,
) -> None:
    """Compare two runs case by case: what changed, paired differences with intervals and
    p-values, slices, flipped cases, cost, latency and errors."""
    from harness.compare import Settings, compare_runs
    from harness.render_compare import comparison_parts
    from harness.report import comparison_markdown
    from harness.runrefs import resolve_pair

    try:
        base_run, cand_run = resolve_pair(
            base, candidate, store_path=_store_path(store), project_dir=Path.cwd()
        )
        comparison = compare_runs(
            base_run,
            cand_run,
            by=list(by),
            settings=Settings(resamples=resamples, seed=bootstrap_seed),
        )
    except HarnessError as exc:
        raise _fail(exc) from None
    if markdown is not None:
        _write(markdown, comparison_markdown(comparison))
    if json_output:
        print(json.dumps(comparison.to_dict(), indent=2, default=str))
        return
    for part in comparison_parts(comparison):
        out.print(part)


def gate(
    suite: Path | None = typer.Argument(
        None, help="Suite to run as the candidate (and whose gate: policy applies)."
    ),
    baseline: str = typer.Option(
        "baseline",
        "--baseline",
        help="Run id, label, run file, or 'baseline' (reports/baseline/<suite>.jsonl).",
    ),
    candidate: str | None = typer.Option(
        None, "--candidate", help="Judge this existing run instead of running the suite."
    ),
    max_drop: float | None = typer.Option(
        None,
        "--max-drop",
        min=0,
        max=1,
        help="Allowed pass-rate drop, as a fraction (0.02 = 2 points).",
    ),
    alpha: float | None = typer.Option(None, "--alpha", help="Significance level (0.05)."),
    correction: str | None = typer.Option(None, "--correction", help="holm (default) or none."),
    max_cost_increase: float | None = typer.Option(
        None, "--max-cost-increase", min=0, help="Total cost budget (0.1 = +10%)."
    ),
    max_cost_per_case_increase: float | None = typer.Option(
        None, "--max-cost-per-case-increase", min=0, help="Cost per case budget."
    ),
    max_latency_increase: float | None = typer.Option(
        None, "--max-latency-increase", min=0, help="p95 latency budget (0.2 = +20%)."
    ),
    critical: list[str] = typer.Option(
        [], "--critical", help="A case id that must pass (repeatable)."
    ),
    max_error_rate: float | None = typer.Option(None, "--max-error-rate", min=0, max=1),
    min_kappa: float | None = typer.Option(
        None, "--min-kappa", help="Judges must be calibrated to at least this Cohen's kappa."
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML here."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Write Markdown here."),
    json_output: bool = typer.Option(False, "--json", help="Print decision + comparison JSON."),
    by: list[str] = BY_OPTION,
    model: list[str] = typer.Option([], "--model", "-m", help="Run these models instead."),
    repeat: int | None = typer.Option(None, "--repeat", min=1),
    limit: int | None = typer.Option(None, "--limit", min=1),
    filters: list[str] = typer.Option([], "--filter", help="key=value on case metadata."),
    shard: str | None = typer.Option(None, "--shard", help="Run shard i/n of the cases."),
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", min=1),
    cache: str = typer.Option("auto", "--cache", help="auto|on|off|read-only|refresh."),
    resamples: int = RESAMPLES_OPTION,
    bootstrap_seed: int = BOOT_SEED_OPTION,
    store: Path | None = STORE_OPTION,
) -> None:
    """Gate CI: run (or take) a candidate, compare it with the baseline, apply the policy.
    Exit 0 pass, 1 regression, 3 unmeasurable (too many errors, no overlap, ...)."""
    from harness.compare import Settings, compare_runs
    from harness.config import GatePolicy
    from harness.gate import GateCheck, decide
    from harness.gate_policy import calibration_lookup, load_policy, with_overrides
    from harness.render_compare import comparison_parts, gate_parts
    from harness.report import gate_markdown, junit_xml
    from harness.runrefs import resolve_run

    project_dir, store_path = Path.cwd(), _store_path(store)
    try:
        if suite is None and candidate is None:
            raise ConfigError("give a suite to run, or --candidate RUN")
        policy, notes = GatePolicy(), []
        if suite is not None:
            policy, _ = load_policy(suite)
        if candidate is not None:
            cand_run = resolve_run(candidate, store_path=store_path, project_dir=project_dir)
            recorded = project_dir / str((cand_run.manifest.get("suite") or {}).get("path", ""))
            if suite is None and recorded.is_file():
                policy, _ = load_policy(recorded)
            elif suite is None:
                notes.append("no suite file found for the candidate: default gate policy")
        policy = with_overrides(
            policy,
            {
                "max_drop": max_drop,
                "alpha": alpha,
                "correction": correction,
                "max_cost_increase": max_cost_increase,
                "max_cost_per_case_increase": max_cost_per_case_increase,
                "max_latency_increase": max_latency_increase,
                "critical": list(critical),
                "max_error_rate": max_error_rate,
                "min_kappa": min_kappa,
            },
        )
        aborted: str | None = None
        if candidate is None:
            assert suite is not None
            run_id, aborted = _run_suite(
                suite,
                store_path,
                policy.max_error_rate,
                model=model,
                repeat=repeat,
                limit=limit,
                filters=filters,
                shard=shard,
                concurrency=concurrency,
                cache=cache,
            )
            cand_run = resolve_run(run_id, store_path=store_path, project_dir=project_dir)
        base_run = resolve_run(
            baseline, store_path=store_path, project_dir=project_dir, suite=cand_run.suite
        )
        comparison = compare_runs(
            base_run,
            cand_run,
            by=list(by),
            settings=Settings(resamples=resamples, seed=bootstrap_seed),
        )
        decision = decide(
            comparison,
            cand_run.results,
            policy,
            cand_manifest=cand_run.manifest,
            kappa_lookup=calibration_lookup(project_dir, store_path),
        )
        decision.notes[:0] = notes
        if aborted is not None:  # the engine stopped the run: it could not measure
            decision.checks.insert(0, GateCheck("errors", "candidate run", "unmeasurable", aborted))
            decision.status = "unmeasurable"
    except HarnessError as exc:
        raise _fail(exc) from None
    summary_md = gate_markdown(decision, comparison)
    if junit is not None:
        _write(junit, junit_xml(cand_run, decision))
    if markdown is not None:
        _write(markdown, summary_md)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary_md + "\n")
    if json_output:
        print(
            json.dumps(
                {"decision": decision.to_dict(), "comparison": comparison.to_dict()},
                indent=2,
                default=str,
            )
        )
    else:
        for part in [*comparison_parts(comparison), *gate_parts(decision)]:
            out.print(part)
    raise typer.Exit(decision.exit_code)


def _run_suite(
    suite: Path, store_path: Path, max_error_rate: float, **given: Any
) -> tuple[str, str | None]:
    """Run the suite through the engine (as `evals run` does): (run id, why it aborted).

    A run the engine aborts (its error rate) is still judged, so CI gets its reports.
    """
    from harness.errors import RunAborted
    from harness.execute import execute
    from harness.providers import CACHE_MODES
    from harness.runner import Runner, RunOptions
    from harness.suite import Selection, parse_shard

    if given["cache"] not in CACHE_MODES:
        raise ConfigError(f"--cache must be one of {', '.join(CACHE_MODES)}")
    options = RunOptions(
        repeat=given["repeat"],
        concurrency=given["concurrency"],
        cache_mode=given["cache"],
        max_error_rate=max_error_rate,
        selection=Selection(
            limit=given["limit"],
            filters=list(given["filters"]),
            shard=parse_shard(given["shard"]) if given["shard"] else None,
        ),
    )
    started: list[str] = []

    def on_start(runner: Runner) -> None:
        started.append(runner.run_id)

    try:
        with err.status(f"running {suite} ..."):
            outcome = execute(
                suite,
                project_dir=Path.cwd(),
                store_path=store_path,
                options=options,
                model_ids=list(given["model"]),
                on_start=on_start,
            )
    except RunAborted as exc:
        if not started:
            raise
        err.print(f"candidate run {started[0]} aborted: {exc}", highlight=False)
        return started[0], str(exc)
    err.print(f"candidate run {outcome.run_id} ({outcome.status})", highlight=False)
    return outcome.run_id, None


@baseline_app.command("set")
def baseline_set(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, prefix, last, or run file."),
    suite: str | None = typer.Option(None, "--suite", help="Suite name (default: the run's)."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Write reports/baseline/<suite>.jsonl from a run, for you to commit."""
    from harness.runrefs import baseline_path, resolve_run, save_run_file

    try:
        run = resolve_run(run_ref, store_path=_store_path(store), project_dir=Path.cwd())
        path = baseline_path(suite or run.suite, Path.cwd())
        save_run_file(run.record, run.results, path)
    except HarnessError as exc:
        raise _fail(exc) from None
    err.print(
        f"baseline of {suite or run.suite} is now run {run.id}: {path} (commit it)", highlight=False
    )


@baseline_app.command("show")
def baseline_show(
    suite: str | None = typer.Argument(None, help="Suite name (default: list every baseline)."),
) -> None:
    """Show a suite's baseline run, or list every committed baseline."""
    from harness import render
    from harness.runrefs import BASELINE_DIR, baseline_path, load_run_file

    try:
        if suite is None:
            files = sorted((Path.cwd() / BASELINE_DIR).glob("*.jsonl"))
            if not files:
                raise ConfigError(f"no baselines in {BASELINE_DIR}/ (see `evals baseline set`)")
            out.print(render.runs_table([load_run_file(f).record for f in files]))
            return
        run = load_run_file(baseline_path(suite, Path.cwd()))
    except HarnessError as exc:
        raise _fail(exc) from None
    for part in render.run_details(run.record, run.results, failures=0):
        out.print(part)


def merge(
    files: list[Path] = typer.Argument(..., help="Shard run files of one suite."),
    output: Path = typer.Option(..., "--output", "-o", help="Merged run file to write."),
) -> None:
    """Join the run files of one run's shards (`evals run --shard i/n`) into one run file."""
    from harness.merge import merge_run_files

    try:
        record, warnings = merge_run_files(list(files), output)
    except HarnessError as exc:
        raise _fail(exc) from None
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    err.print(f"merged {len(files)} files into run {record['id']}: {output}", highlight=False)


def report(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, prefix, last, or run file."),
    compare_to: str | None = typer.Option(
        None, "--compare", help="Also compare with this baseline run (or 'baseline')."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="HTML file (default reports/<run>.html)."
    ),
    by: list[str] = BY_OPTION,
    store: Path | None = STORE_OPTION,
) -> None:
    """Write a self-contained HTML report (opens without a network)."""
    from harness.compare import compare_runs
    from harness.report_html import html_report
    from harness.runrefs import resolve_run

    store_path, project_dir = _store_path(store), Path.cwd()
    try:
        run = resolve_run(run_ref, store_path=store_path, project_dir=project_dir)
        comparison, base = None, None
        if compare_to is not None:
            base = resolve_run(
                compare_to, store_path=store_path, project_dir=project_dir, suite=run.suite
            )
            comparison = compare_runs(base, run, by=list(by))
        page = html_report(run, comparison, base=base, by=list(by))
    except HarnessError as exc:
        raise _fail(exc) from None
    _write(output or project_dir / "reports" / f"{run.id}.html", page)


def register(app: typer.Typer) -> None:
    """Add these commands to the `evals` app."""
    app.command("compare")(compare)
    app.command("gate")(gate)
    app.command("merge")(merge)
    app.command("report")(report)
    app.add_typer(baseline_app, name="baseline")
