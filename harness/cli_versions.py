"""The versioning commands: `evals prompt|rubric|retrieval ...` and `evals diff`.

Thin typer commands over `registry`, `artifacts` and `lineage_diff`: parse, call, render. One
factory builds the same sub-app (list, show, history, promote, rollback, diff, register) for
each artifact kind that has working copies. `cli_releases` reuses the helpers here.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from harness.errors import ConfigError, HarnessError

if TYPE_CHECKING:
    from harness.store import Store

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

STORE_OPTION = typer.Option(
    None, "--store", help="Run store file (default .evals/evals.db, or $EVALS_HOME/evals.db)."
)


def fail(exc: HarnessError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def store_path(store: Path | None) -> Path:
    from harness.store import default_store_path

    return store if store is not None else default_store_path()


@contextmanager
def existing_store(store: Path | None) -> Iterator[Store | None]:
    """The store if its file exists (reading never creates one), closed afterwards."""
    from harness.artifacts import open_existing

    db = open_existing(store_path(store))
    try:
        yield db
    finally:
        if db is not None:
            db.close()


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def say(message: str) -> None:
    err.print(message, markup=False, soft_wrap=True)


def artifact_app(kind: str, plural: str, loaders: tuple[str, ...] = ()) -> typer.Typer:
    """The `evals <kind> ...` commands for one artifact kind (prompt, rubric, retrieval).

    `loaders`: modules that register the kind's working-copy loader (`register_kind`); they
    are imported before any command of the group runs, not when `evals --help` does.
    """
    app = typer.Typer(
        help=f"Versions and labels of {plural}: list, show, history, promote, rollback, diff.",
        no_args_is_help=True,
    )

    @app.callback()
    def load_kind() -> None:
        for module in loaders:
            importlib.import_module(module)

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
            with existing_store(store) as db:
                records = [] if db is None else registry.list_versions(db, kind, name)
                for record_name in {r.name for r in records}:
                    assert db is not None
                    for label, version in registry.labels_of(db, kind, record_name).items():
                        labels.setdefault((record_name, version), []).append(label)
        except HarnessError as exc:
            raise fail(exc) from None
        if not records:
            say(f"no {kind} versions registered yet (`evals {kind} register NAME`)")
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
            with existing_store(store) as db:
                found = artifacts.lookup(db, kind, ref, Path.cwd())
        except HarnessError as exc:
            raise fail(exc) from None
        say(f"{kind} {found.name}@{found.version} ({found.origin})")
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
            with existing_store(store) as db:
                moves = [] if db is None else registry.label_history(db, kind, name, label)
        except HarnessError as exc:
            raise fail(exc) from None
        if not moves:
            say(f"no label moves for {kind} {name}")
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

        project_dir, path = Path.cwd(), store_path(store)
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
            raise fail(exc) from None
        if move is None:
            say(f"{kind} {name}: {label} already points at {record.version}")
        else:
            say(f"{kind} {name}: {label} {move.from_version or '(new)'} -> {move.to_version}")

    @app.command()
    def rollback(
        name: str = typer.Argument(...),
        label: str = typer.Option(..., "--label", "-l", help="The label to move back."),
        store: Path | None = STORE_OPTION,
    ) -> None:
        """Undo LABEL's last promote still in effect (twice undoes two)."""
        from harness import artifacts, registry

        path = store_path(store)
        try:
            opened = artifacts.open_existing(path)
            if opened is None:
                raise ConfigError(f"no version registry at {path}")
            with opened as db:
                move = registry.rollback(
                    db, kind, name, label, author=registry.current_author(Path.cwd())
                )
        except HarnessError as exc:
            raise fail(exc) from None
        say(f"{kind} {name}: {label} rolled back {move.from_version} -> {move.to_version}")

    @app.command()
    def diff(
        ref_a: str = typer.Argument(..., metavar="A", help=ref_help),
        ref_b: str | None = typer.Argument(None, metavar="[B]", help="Default: the working copy."),
        store: Path | None = STORE_OPTION,
    ) -> None:
        """Unified diff of two versions' content as YAML."""
        from harness import artifacts

        try:
            with existing_store(store) as db:
                a = artifacts.lookup(db, kind, ref_a, Path.cwd())
                b = artifacts.lookup(db, kind, ref_b or a.name, Path.cwd())
        except HarnessError as exc:
            raise fail(exc) from None
        text = artifacts.unified_diff(
            artifacts.content_yaml(kind, a.content),
            artifacts.content_yaml(kind, b.content),
            f"{a.name}@{a.version} ({a.origin})",
            f"{b.name}@{b.version} ({b.origin})",
        )
        if not text:
            say(f"no differences: {a.name}@{a.version} and {b.name}@{b.version}")
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
            with Store.open(store_path(store)) as db:
                record, new = artifacts.register_working(db, kind, ref, Path.cwd())
        except HarnessError as exc:
            raise fail(exc) from None
        state = "registered" if new else f"already registered ({_when(record.first_seen)})"
        say(f"{kind} {record.name}@{record.version} {state}")

    return app


prompt_app = artifact_app("prompt", "prompts")
rubric_app = artifact_app("rubric", "rubrics", ("harness.rubrics",))
retrieval_app = artifact_app("retrieval", "retrieval configs", ("harness.rag.config",))


def diff_runs(
    run_a: str = typer.Argument(..., metavar="RUN_A", help="Run id, prefix, last~N or run file."),
    run_b: str = typer.Argument(..., metavar="RUN_B"),
    json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    store: Path | None = STORE_OPTION,
) -> None:
    """What changed between two runs' lineage, grouped by artifact, with content diffs."""
    from harness.lineage_diff import diff_runs as load_and_diff

    try:
        result = load_and_diff(run_a, run_b, store_path=store_path(store), project_dir=Path.cwd())
    except HarnessError as exc:
        raise fail(exc) from None
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
