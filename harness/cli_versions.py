"""The versioning commands: `evals prompt|rubric|retrieval ...`, `evals diff`, `evals release`.

Thin typer commands over `registry`, `artifacts`, `lineage_diff` and `releases`: parse, call,
render. One factory builds the same sub-app (list, show, history, promote, rollback, diff,
register) for each artifact kind that has working copies.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from harness.errors import ConfigError, HarnessError

if TYPE_CHECKING:
    from harness.store import Store

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

STORE_OPTION = typer.Option(
    None, "--store", help="Run store file (default .evals/evals.db, or $EVALS_HOME/evals.db)."
)


def _fail(exc: HarnessError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _store_path(store: Path | None) -> Path:
    from harness.store import default_store_path

    return store if store is not None else default_store_path()


@contextmanager
def _existing(store: Path | None) -> Iterator[Store | None]:
    """The store if its file exists (reading never creates one), closed afterwards."""
    from harness.artifacts import open_existing

    db = open_existing(_store_path(store))
    try:
        yield db
    finally:
        if db is not None:
            db.close()


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _say(message: str) -> None:
    err.print(message, markup=False, soft_wrap=True)


def artifact_app(kind: str, plural: str) -> typer.Typer:
    """The `evals <kind> ...` commands for one artifact kind (prompt, rubric, retrieval)."""
    app = typer.Typer(
        help=f"Versions and labels of {plural}: list, show, history, promote, rollback, diff.",
        no_args_is_help=True,
    )
    ref_help = f"{kind.upper()} (working copy), {kind.upper()}@LABEL or {kind.upper()}@VERSION."

    @app.command("list")
    def list_versions(
        name: str | None = typer.Argument(None, help="Only this name."),
        store: Path | None = STORE_OPTION,
    ) -> None:
        """Registered versions, newest first, with their labels (* marks the working copy)."""
        from harness import artifacts, registry

        labels: dict[tuple[str, str], list[str]] = {}
        try:
            with _existing(store) as db:
                records = [] if db is None else registry.list_versions(db, kind, name)
                for record_name in {r.name for r in records}:
                    assert db is not None
                    for label, version in registry.labels_of(db, kind, record_name).items():
                        labels.setdefault((record_name, version), []).append(label)
        except HarnessError as exc:
            raise _fail(exc) from None
        if not records:
            _say(f"no {kind} versions registered yet (`evals {kind} register NAME`)")
            return
        working: dict[str, str] = {}
        for record_name in {r.name for r in records}:
            with suppress(HarnessError):  # no readable working copy: nothing to mark
                working[record_name] = artifacts.working_copy(kind, record_name, Path.cwd()).version
        table = Table(
            kind,
            "version",
            "labels",
            "first seen",
            "author",
            "commit",
            "",
            caption="* = the working copy",
        )
        for r in records:
            table.add_row(
                r.name,
                r.version,
                ", ".join(labels.get((r.name, r.version), [])),
                _when(r.first_seen),
                r.author or "-",
                (r.git_commit or "-")[:10],
                "*" if working.get(r.name) == r.version else "",
            )
        out.print(table)

    @app.command()
    def show(
        ref: str = typer.Argument(..., metavar="REF", help=ref_help),
        json_output: bool = typer.Option(False, "--json", help="Canonical JSON instead."),
        store: Path | None = STORE_OPTION,
    ) -> None:
        """Print the exact content of a version (the working copy when no @selector)."""
        from harness import artifacts
        from harness.versions import canonical_json

        try:
            with _existing(store) as db:
                found = artifacts.lookup(db, kind, ref, Path.cwd())
        except HarnessError as exc:
            raise _fail(exc) from None
        _say(f"{kind} {found.name}@{found.version} ({found.origin})")
        text = (
            canonical_json(found.content) + "\n"
            if json_output
            else artifacts.content_yaml(kind, found.content)
        )
        sys.stdout.write(text)

    @app.command()
    def history(
        name: str = typer.Argument(...),
        label: str | None = typer.Option(None, "--label", help="Only this label."),
        store: Path | None = STORE_OPTION,
    ) -> None:
        """Every label move of NAME: when, who, from, to."""
        from harness import registry

        try:
            with _existing(store) as db:
                moves = [] if db is None else registry.label_history(db, kind, name, label)
        except HarnessError as exc:
            raise _fail(exc) from None
        if not moves:
            _say(f"no label moves for {kind} {name}")
            return
        table = Table("when", "label", "action", "from", "to", "who")
        for move in moves:
            table.add_row(
                _when(move.at),
                move.label,
                move.action,
                move.from_version or "-",
                move.to_version,
                move.author or "-",
            )
        out.print(table)

    @app.command()
    def promote(
        name: str = typer.Argument(...),
        version: str = typer.Argument(
            ...,
            help="A version (unique prefix), a label, or "
            "'current' to register and promote the working copy.",
        ),
        label: str = typer.Option(..., "--label", "-l", help="The label to move."),
        store: Path | None = STORE_OPTION,
    ) -> None:
        """Point LABEL at VERSION of NAME (recorded in the label's history)."""
        from harness import artifacts, registry
        from harness.store import Store

        project_dir, path = Path.cwd(), _store_path(store)
        author = registry.current_author(project_dir)
        try:
            registry.check_label(label)
            if version == registry.WORKING_COPY:
                with Store.open(path) as db:
                    record, _ = artifacts.register_working(db, kind, name, project_dir)
                    if record.name != name:
                        raise ConfigError(
                            f"the working copy of {name!r} is named "
                            f"{record.name!r}; promote {record.name}"
                        )
                    record, move = registry.promote(
                        db, kind, name, record.version, label, author=author
                    )
            else:
                opened = artifacts.open_existing(path)
                if opened is None:
                    raise ConfigError(
                        f"no version registry at {path}; register a version "
                        f"first (`evals {kind} register {name}`)"
                    )
                with opened as db:
                    record, move = registry.promote(db, kind, name, version, label, author=author)
        except HarnessError as exc:
            raise _fail(exc) from None
        if move is None:
            _say(f"{kind} {name}: {label} already points at {record.version}")
        else:
            _say(f"{kind} {name}: {label} {move.from_version or '(new)'} -> {move.to_version}")

    @app.command()
    def rollback(
        name: str = typer.Argument(...),
        label: str = typer.Option(..., "--label", "-l", help="The label to move back."),
        store: Path | None = STORE_OPTION,
    ) -> None:
        """Undo LABEL's last promote still in effect (twice undoes two)."""
        from harness import artifacts, registry

        path = _store_path(store)
        try:
            opened = artifacts.open_existing(path)
            if opened is None:
                raise ConfigError(f"no version registry at {path}")
            with opened as db:
                move = registry.rollback(
                    db, kind, name, label, author=registry.current_author(Path.cwd())
                )
        except HarnessError as exc:
            raise _fail(exc) from None
        _say(f"{kind} {name}: {label} rolled back {move.from_version} -> {move.to_version}")

    @app.command()
    def diff(
        ref_a: str = typer.Argument(..., metavar="A", help=ref_help),
        ref_b: str | None = typer.Argument(None, metavar="[B]", help="Default: the working copy."),
        store: Path | None = STORE_OPTION,
    ) -> None:
        """Unified diff of two versions' content as YAML."""
        from harness import artifacts

        try:
            with _existing(store) as db:
                a = artifacts.lookup(db, kind, ref_a, Path.cwd())
                b = artifacts.lookup(db, kind, ref_b or a.name, Path.cwd())
        except HarnessError as exc:
            raise _fail(exc) from None
        text = artifacts.unified_diff(
            artifacts.content_yaml(kind, a.content),
            artifacts.content_yaml(kind, b.content),
            f"{a.name}@{a.version} ({a.origin})",
            f"{b.name}@{b.version} ({b.origin})",
        )
        if not text:
            _say(f"no differences: {a.name}@{a.version} and {b.name}@{b.version}")
        sys.stdout.write(text)

    @app.command()
    def register(
        ref: str = typer.Argument(..., metavar="NAME|FILE", help="A name, or a file path."),
        store: Path | None = STORE_OPTION,
    ) -> None:
        """Record the working copy's current content as a version."""
        from harness import artifacts
        from harness.store import Store

        try:
            with Store.open(_store_path(store)) as db:
                record, new = artifacts.register_working(db, kind, ref, Path.cwd())
        except HarnessError as exc:
            raise _fail(exc) from None
        state = "registered" if new else f"already registered ({_when(record.first_seen)})"
        _say(f"{kind} {record.name}@{record.version} {state}")

    return app


prompt_app = artifact_app("prompt", "prompts")
rubric_app = artifact_app("rubric", "rubrics")
retrieval_app = artifact_app("retrieval", "retrieval configs")


def diff_runs(
    run_a: str = typer.Argument(..., metavar="RUN_A", help="Run id, prefix, last~N or run file."),
    run_b: str = typer.Argument(..., metavar="RUN_B"),
    json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    store: Path | None = STORE_OPTION,
) -> None:
    """What changed between two runs' lineage, grouped by artifact, with content diffs."""
    from harness.lineage_diff import diff_runs as load_and_diff

    try:
        result = load_and_diff(run_a, run_b, store_path=_store_path(store), project_dir=Path.cwd())
    except HarnessError as exc:
        raise _fail(exc) from None
    if json_output:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False, default=str))
        return
    if not result.changes:
        out.print(
            f"no lineage differences between {result.a.label} and {result.b.label}", markup=False
        )
        return
    count = len(result.changes)
    out.print(
        f"a: {result.a.label}\nb: {result.b.label}\n{count} artifact"
        f"{'s' if count != 1 else ''} differ{'s' if count == 1 else ''}",
        markup=False,
    )
    for change in result.changes:
        out.print(f"\n[bold]{change.artifact}[/bold]: ", end="")
        out.print(change.summary, markup=False, soft_wrap=True)
        for line in change.diff.splitlines():
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else None
            out.print("    " + line, style=style, markup=False, soft_wrap=True)


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

    project_dir, path = Path.cwd(), _store_path(store)
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
        raise _fail(exc) from None
    if record["forced"]:
        _say("forced: " + "; ".join(record["forced"]))
    _say(f"released {name}: run {run.id}; wrote {target}")


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
            name, store_path=_store_path(store), project_dir=Path.cwd()
        )
    except HarnessError as exc:
        raise _fail(exc) from None
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
        with _existing(store) as db:
            records = [] if db is None else releases.list_releases(db)
    except HarnessError as exc:
        raise _fail(exc) from None
    if not records:
        _say("no releases yet (`evals release NAME --run RUN`)")
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
