"""The `evals release` commands: record the versions a run approved, and show what is running.

Thin typer commands over `releases`. `evals release NAME --run RUN` is short for
`evals release create NAME --run RUN`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from harness.cli_versions import STORE_OPTION, existing_store, fail, out, say, store_path
from harness.errors import HarnessError


class _ReleaseGroup(TyperGroup):
    """`evals release NAME --run RUN` is short for `evals release create NAME --run RUN`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["create", *args]
        return super().parse_args(ctx, args)


release_app = typer.Typer(
    cls=_ReleaseGroup,
    no_args_is_help=True,
    help="Release records: `evals release NAME --run RUN` records the exact versions a run "
    "approved; `evals release show NAME` says what is running and why.",
)


@release_app.command("create")
def release_create(
    name: str = typer.Argument(..., help="The release, e.g. support-bot."),
    run_ref: str = typer.Option(..., "--run", help="Run id, prefix, last, or a run file."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Record file (default releases/NAME.yaml)."
    ),
    note: str | None = typer.Option(None, "--note", help="Why it was approved."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Release a run that is not completed "
        "or failed a threshold (the reasons are recorded).",
    ),
    store: Path | None = STORE_OPTION,
) -> None:
    """Record the exact versions of RUN as release NAME (store + a file to commit)."""
    from harness import registry, releases
    from harness.runrefs import resolve_run
    from harness.store import Store

    project_dir, path = Path.cwd(), store_path(store)
    try:
        run = resolve_run(run_ref, store_path=path, project_dir=project_dir)
        record = releases.build_release(
            name, run, author=registry.current_author(project_dir), note=note, force=force
        )
        target = output or releases.release_file(name, project_dir)
        with Store.open(path) as db:
            releases.write_release_file(record, target)
            releases.save_release(db, record)
    except HarnessError as exc:
        raise fail(exc) from None
    if record["forced"]:
        say("forced: " + "; ".join(record["forced"]))
    say(f"released {name}: run {run.id}; wrote {target}")


@release_app.command("show")
def release_show(
    name: str = typer.Argument(..., help="A release name or a release record file."),
    json_output: bool = typer.Option(False, "--json", help="Print the record as JSON."),
    store: Path | None = STORE_OPTION,
) -> None:
    """What is running under NAME, and the run that approved it."""
    from harness import releases

    try:
        record, count = releases.find_release(
            name, store_path=store_path(store), project_dir=Path.cwd()
        )
    except HarnessError as exc:
        raise fail(exc) from None
    if json_output:
        print(json.dumps(record, indent=2, ensure_ascii=False, default=str))
        return
    for key, value in _release_lines(record, count):
        out.print(f"[bold]{key:<10}[/bold] ", end="")
        out.print(value, markup=False, soft_wrap=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _release_lines(record: dict[str, Any], count: int) -> list[tuple[str, str]]:
    approved = record.get("approved_by") or {}
    suite = approved.get("suite") or {}
    code = approved.get("code") or {}
    times = f" (released {count} times; newest shown)" if count > 1 else ""
    lines = [
        ("release", f"{record['release']}{times}"),
        ("released", f"{record.get('created_at')} by {record.get('author') or '-'}"),
    ]
    if record.get("note"):
        lines.append(("note", str(record["note"])))
    for kind, entries in (record.get("versions") or {}).items():
        for entry in entries:
            lines.append((kind, f"{entry.get('name')}@{entry.get('version')}"))
    for model in record.get("models") or []:
        lines.append(("model", f"{model.get('id')} params {json.dumps(model.get('params') or {})}"))
    lines.append(
        (
            "run",
            f"{approved.get('run')} ({suite.get('name')}@{suite.get('version')}, "
            f"{approved.get('status')}, finished {approved.get('finished_at')})",
        )
    )
    commit = code.get("commit")
    lines.append(
        ("code", "-" if not commit else commit[:10] + (" (dirty)" if code.get("dirty") else ""))
    )
    for model, rates in (approved.get("pass_rates") or {}).items():
        low, high = rates.get("ci95") or [None, None]
        lines.append(
            (
                "pass rate",
                f"{model}: {_pct(rates.get('pass_rate'))} (95% CI "
                f"{_pct(low)}-{_pct(high)}, n={rates.get('n')}, "
                f"errors {rates.get('errors')})",
            )
        )
    for check in approved.get("thresholds") or []:
        verdict = "ok" if check.get("ok") else "FAILED"
        lines.append(
            (
                "threshold",
                f"{verdict} {check.get('scorer')} on {check.get('model')}: "
                f"{_pct(check.get('actual'))} (required "
                f"{_pct(check.get('required'))})",
            )
        )
    if record.get("forced"):
        lines.append(("forced", "; ".join(record["forced"])))
    return lines


@release_app.command("list")
def release_list(store: Path | None = STORE_OPTION) -> None:
    """Every release name with its newest record."""
    from harness import releases

    try:
        with existing_store(store) as db:
            records = [] if db is None else releases.list_releases(db)
    except HarnessError as exc:
        raise fail(exc) from None
    if not records:
        say("no releases yet (`evals release NAME --run RUN`)")
        return
    table = Table("release", "released", "run", "author")
    for record in records:
        table.add_row(
            record["release"],
            record.get("created_at") or "-",
            (record.get("approved_by") or {}).get("run") or "-",
            record.get("author") or "-",
        )
    out.print(table)
