"""The `evals judge` commands: calibrate a judge against human labels, compare outputs pairwise."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from harness.errors import ConfigError, HarnessError

judge_app = typer.Typer(
    name="judge",
    help="LLM judges: list rubrics, calibrate a judge against human labels, compare pairwise.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

STORE_OPTION = typer.Option(
    None, "--store", help="Run store file (default .evals/evals.db, or $EVALS_HOME/evals.db)."
)


def _fail(exc: HarnessError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _store_path(store: Path | None) -> Path:
    from harness.store import default_store_path

    return store if store is not None else default_store_path()


def _num(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if pct else f"{value:.3f}"


@judge_app.command("rubrics")
def list_rubrics() -> None:
    """List the rubrics a suite can name: the project's rubrics/ first, then the built-ins."""
    from harness.rubrics import builtin_names, load_rubric

    names = sorted({*builtin_names(), *(p.stem for p in Path("rubrics").glob("*.yaml"))})
    table = Table("rubric", "version", "scale", "uses", "source")
    for name in names:
        try:
            loaded = load_rubric(name, Path.cwd())
        except HarnessError as exc:
            table.add_row(name, "-", "-", "-", f"[red]{exc}[/red]")
            continue
        scale = loaded.rubric.scale.dump()
        table.add_row(
            name,
            loaded.version,
            scale
            if isinstance(scale, str)
            else f"{scale['min']}-{scale['max']} (pass {scale['pass']})",
            ", ".join(loaded.rubric.uses),
            loaded.source,
        )
    out.print(table)


@judge_app.command()
def calibrate(
    rubric: str = typer.Argument(..., help="Rubric name, e.g. correctness."),
    run: str = typer.Option("last", "--run", help="Run id, id prefix, or 'last'."),
    labels: Path = typer.Option(
        ...,
        "--labels",
        help="CSV or JSONL: case_id, label (pass/fail, 1/0, true/false), optional model, epoch.",
    ),
    min_kappa: float | None = typer.Option(
        None, "--min-kappa", help="Exit 1 when any judge's kappa is below this (or undefined)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the records as JSON."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Measure a judge against human labels: agreement, TPR, FPR, Cohen's kappa (stored)."""
    from harness.calibrate import calibrate as run_calibration
    from harness.store import Store

    try:
        with Store.open(_store_path(store), create=False) as db:
            records = run_calibration(db, run, rubric, labels)
    except HarnessError as exc:
        raise _fail(exc) from None
    if json_output:
        print(json.dumps([r.to_dict() for r in records], indent=2))
    else:
        table = Table(
            "judge model",
            "rubric version",
            "n",
            "agreement",
            "TPR",
            "FPR",
            "kappa",
            "unlabelled",
            "judge errors",
            title=f"calibration of {rubric} (run {records[0].run_id})",
        )
        for r in records:
            table.add_row(
                r.judge_model,
                r.rubric_version,
                str(r.n),
                _num(r.agreement),
                _num(r.tpr),
                _num(r.fpr),
                _num(r.kappa, pct=False),
                str(r.detail["unlabelled"]),
                str(r.detail["judge_errors"]),
            )
        out.print(table)
    if min_kappa is not None:
        low = [r for r in records if r.kappa is None or r.kappa < min_kappa]
        for r in low:
            err.print(
                f"{r.judge_model} on {rubric}@{r.rubric_version}: kappa "
                f"{_num(r.kappa, pct=False)} is below --min-kappa {min_kappa}",
                highlight=False,
            )
        if low:
            raise typer.Exit(1)


@judge_app.command()
def pairwise(
    base_run: str = typer.Argument(..., metavar="BASE_RUN", help="Run id, prefix, or 'last'."),
    candidate_run: str | None = typer.Argument(
        None, metavar="CANDIDATE_RUN", help="Omit with --models A,B on one run."
    ),
    rubric: str = typer.Option(..., "--rubric", help="Rubric name, e.g. helpfulness."),
    judge: str = typer.Option(
        ..., "--judge", help="Judge model (litellm id, e.g. local/smollm2 or openai/gpt-4o-mini)."
    ),
    models: str | None = typer.Option(
        None,
        "--models",
        help="BASE,CANDIDATE model names: compare two models (of one run, or one per run).",
    ),
    judge_api_base: str | None = typer.Option(None, "--judge-api-base"),
    judge_api_key_env: str | None = typer.Option(None, "--judge-api-key-env"),
    max_reasks: int = typer.Option(2, "--max-reasks", min=0, max=5),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Judge two outputs per shared case in both orders: win/tie/loss and position bias."""
    from harness.config import ModelConfig
    from harness.model_checks import check_model
    from harness.pairwise import compare
    from harness.rubrics import load_rubric
    from harness.store import Store

    try:
        base_model = candidate_model = None
        if models is not None:
            names = [m.strip() for m in models.split(",")]
            if len(names) != 2 or not all(names):
                raise ConfigError("--models takes two model names: BASE,CANDIDATE")
            base_model, candidate_model = names
        elif candidate_run is None:
            raise ConfigError("give CANDIDATE_RUN, or --models A,B to compare two models")
        judge_model = ModelConfig(id=judge, api_base=judge_api_base, api_key_env=judge_api_key_env)
        check_model(judge_model, where="--judge")
        loaded = load_rubric(rubric, Path.cwd())
        with Store.open(_store_path(store), create=False) as db:
            report = asyncio.run(
                compare(
                    db,
                    base_run,
                    candidate_run or base_run,
                    loaded,
                    judge_model,
                    base_model=base_model,
                    candidate_model=candidate_model,
                    max_reasks=max_reasks,
                )
            )
    except HarnessError as exc:
        raise _fail(exc) from None
    except RuntimeError as exc:  # the local judge model cannot run here
        raise _fail(ConfigError(str(exc), field="--judge")) from None
    if json_output:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return
    _print_pairwise(report.summary(), report)


def _print_pairwise(summary: dict[str, Any], report: Any) -> None:
    title = (
        f"{report.candidate_run} vs {report.base_run} - {report.rubric}@"
        f"{report.rubric_version}, judged by {report.judge_model}"
    )
    table = Table(
        "cases", "candidate wins", "ties", "base wins", "errors", "position bias", title=title
    )
    table.add_row(
        str(summary["n"]),
        f"{summary['wins']} ({_num(summary['win_rate'])})",
        f"{summary['ties']} ({_num(summary['tie_rate'])})",
        f"{summary['losses']} ({_num(summary['loss_rate'])})",
        str(summary["errors"]),
        _num(summary["position_bias_rate"]),
    )
    out.print(table)
    usage = summary["judge"]
    cost = "unknown" if usage["cost_usd"] is None else f"${usage['cost_usd']:.4f}"
    out.print(
        f"judge: {usage['calls']} calls, {usage['input_tokens']} input + "
        f"{usage['output_tokens']} output tokens, {cost}; stored as "
        f"{report.comparison_id}",
        highlight=False,
    )
    if summary["skipped"]:
        out.print(
            f"skipped {summary['skipped']} shared case(s) without an output on one side",
            highlight=False,
        )
