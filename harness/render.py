"""Terminal rendering of runs and summaries (rich); the CLI's presentation layer."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from harness.runner import Progress as RunProgress


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def money(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


class _Stats(ProgressColumn):
    def __init__(self, state: RunProgress) -> None:
        super().__init__()
        self.state = state

    def render(self, task: Task) -> Text:
        s = self.state
        settled = s.passed + s.failed
        rate = pct(s.passed / settled) if settled else "-"
        return Text(f"pass {rate}  errors {s.errors}  cached {s.cached}  cost {money(s.cost_usd)}")


def progress_bar(console: Console, state: RunProgress) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        _Stats(state),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def summary_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("model", "scorer", "pass rate", "95% CI", "mean", "errors"):
        table.add_column(column, justify="right" if column not in ("model", "scorer") else "left")
    for model, block in summary.get("models", {}).items():
        table.add_row(
            model,
            "[b]all scorers[/b]",
            pct(block["pass_rate"]),
            _ci(block),
            "-",
            str(block["errors"]),
        )
        for name, sblock in block.get("scorers", {}).items():
            mean = "-" if sblock.get("mean_score") is None else f"{sblock['mean_score']:.3f}"
            table.add_row(
                "", name, pct(sblock["pass_rate"]), _ci(sblock), mean, str(sblock["errors"])
            )
    return table


def cost_table(summary: dict[str, Any]) -> Table:
    """Cost, tokens and latency of the system under test; judge usage in its own columns."""
    models = summary.get("models", {})
    judged = any(block.get("judge") for block in models.values())
    table = Table(title="cost and latency", title_justify="left")
    columns = ["model", "results", "cached", "cost", "tokens in/out", "p50", "p95"]
    if judged:
        columns += ["judge calls", "judge cost"]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for model, block in models.items():
        cost = money(block["cost_usd"])
        if block["cost_usd"] is not None and not block.get("cost_complete", True):
            cost += " (partial)"
        row = [
            model,
            str(block["results"]),
            str(block["cached"]),
            cost,
            f"{block['input_tokens']}/{block['output_tokens']}",
            ms(block["latency_p50_ms"]),
            ms(block["latency_p95_ms"]),
        ]
        if judged:
            judge = block.get("judge") or {}
            row += [str(judge.get("calls", 0)), money(judge.get("cost_usd"))]
        table.add_row(*row)
    return table


def _ci(block: dict[str, Any]) -> str:
    if block.get("ci_low") is None:
        return "-"
    return f"{block['ci_low'] * 100:.1f}–{block['ci_high'] * 100:.1f}%"


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="runs", title_justify="left")
    for column in (
        "run",
        "suite",
        "status",
        "started",
        "models",
        "pass",
        "errors",
        "cost",
        "commit",
    ):
        # Ids are what users copy into the next command: never wrap or cut them.
        table.add_column(column, no_wrap=column == "run", min_width=22 if column == "run" else None)
    for run in runs:
        summary = run.get("summary") or {}
        models = summary.get("models", {})
        passed = sum(m["passed"] for m in models.values())
        settled = sum(m["n"] for m in models.values())
        cost = [m["cost_usd"] for m in models.values()]
        git = (run.get("manifest") or {}).get("git") or {}
        commit = (git.get("commit") or "-")[:8] + ("*" if git.get("dirty") else "")
        table.add_row(
            run["id"],
            run["suite"],
            run["status"],
            when(run["created_at"]),
            ", ".join(models) or "-",
            pct(passed / settled) if settled else "-",
            str(summary.get("errors", "-")),
            money(sum(c for c in cost if c is not None)) if cost else "-",
            commit,
        )
    return table


def threshold_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for check in summary.get("thresholds", []):
        mark = "ok  " if check["ok"] else "FAIL"
        lines.append(
            f"{mark} threshold {check['scorer']} on {check['model']}: "
            f"{pct(check['actual'])} (required {pct(check['required'])})"
        )
    return lines


def lineage_table(manifest: dict[str, Any]) -> Table:
    table = Table(title="lineage", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("version / value")
    suite = manifest.get("suite") or {}
    table.add_row("suite", f"{suite.get('name')} @ {suite.get('version')} ({suite.get('path')})")
    dataset = manifest.get("dataset") or {}
    table.add_row(
        "dataset",
        f"{dataset.get('source')} @ {dataset.get('version')} "
        f"({dataset.get('selected')} of {dataset.get('rows')} cases)",
    )
    prompt = manifest.get("prompt")
    if prompt:
        table.add_row("prompt", f"{prompt['name']} @ {prompt['version']}")
    for model in manifest.get("models") or []:
        table.add_row("model", f"{model.get('name') or model['id']} {model.get('params') or ''}")
    table.add_row(
        "scorers", ", ".join(s.get("name") or s["type"] for s in manifest.get("scorers") or [])
    )
    git = manifest.get("git") or {}
    table.add_row("git", f"{git.get('commit') or '-'}{' (dirty)' if git.get('dirty') else ''}")
    env = manifest.get("environment") or {}
    table.add_row("harness", f"{env.get('harness')} on Python {env.get('python')}")
    table.add_row("command", " ".join(manifest.get("command") or []))
    return table


def failures_table(results: list[Any], limit: int) -> Table:
    table = Table(title="failing and errored cases", title_justify="left")
    for column in ("case", "model", "epoch", "status", "why", "output"):
        table.add_column(column, overflow="fold")
    shown = 0
    for result in results:
        if result.status == "pass" or shown >= limit:
            continue
        shown += 1
        if result.status == "error":
            why = result.error or ""
        else:
            why = "; ".join(f"{s.scorer}: {s.reason}" for s in result.scores if s.status != "pass")
        output = (result.output or "")[:120]
        table.add_row(
            result.case_id, result.model, str(result.epoch), result.status, Text(why), Text(output)
        )
    return table


def run_details(run: dict[str, Any], results: list[Any], *, failures: int) -> list[Any]:
    parts: list[Any] = [
        Text(
            f"run {run['id']}  suite {run['suite']}  status {run['status']}  "
            f"started {when(run['created_at'])}"
        ),
        lineage_table(run.get("manifest") or {}),
    ]
    summary = run.get("summary")
    if summary:
        parts += [summary_table(summary, "summary"), cost_table(summary)]
        parts += [Text(line) for line in threshold_lines(summary)]
    if failures:
        parts.append(failures_table(results, failures))
    return parts
