"""The `evals index` commands: build an index from a retrieval config, list, show and diff them.

Thin typer commands over `harness.rag`: parse, call, render. Index versions live in the
version registry (kind `index`, named after the retrieval config) with their manifests, so
list, show and diff read the run store only; an argument naming a .yaml file instead reads
that config's corpus as it is now (chunked, not embedded).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from harness.cli_versions import STORE_OPTION, err, existing_store, fail, out, say, store_path
from harness.errors import ConfigError, HarnessError
from harness.versions import canonical_json

if TYPE_CHECKING:
    from harness.rag.manifest import IndexDiff
    from harness.store import Store

index_app = typer.Typer(
    help="Embedding indexes of retrieval configs: build, list, show, diff.",
    no_args_is_help=True,
)
MAX_LISTED = 20


@index_app.command("build")
def build(
    config: Path = typer.Argument(..., help="A retrieval config, e.g. retrieval/docs.yaml."),
    chroma_url: str | None = typer.Option(
        None, "--chroma-url", help="A chroma server (http://host:8000) instead of .evals/chroma."
    ),
    store: Path | None = STORE_OPTION,
) -> None:
    """Build (or find) the index of CONFIG's current version; record its lineage."""
    from harness.rag.config import load_retrieval_config
    from harness.rag.index import open_index
    from harness.rag.manifest import record_index
    from harness.registry import current_author, current_commit
    from harness.store import Store

    path = store_path(store)
    bar: Progress | None = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(
                TextColumn("embedding"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            bar.start()
            bar.add_task("chunks", total=total)
        bar.update(bar.task_ids[0], completed=done, total=total)

    started = time.perf_counter()
    try:
        retrieval = load_retrieval_config(config)
        try:
            index = open_index(
                retrieval,
                config_path=config,
                store_dir=path.parent,
                chroma_url=chroma_url,
                progress=on_progress,
            )
        finally:
            if bar is not None:
                bar.stop()
        with Store.open(path) as db:
            record_index(
                db,
                retrieval,
                index.version,
                index.manifest(),
                git_commit=current_commit(Path.cwd()),
                author=current_author(Path.cwd()),
            )
    except HarnessError as exc:
        raise fail(exc) from None
    stats = index.stats
    state = "built" if stats.built else "already built"
    say_out(
        f"index {index.name}@{index.version} {state} (retrieval config "
        f"{index.name}@{index.config_version}, model {index.model.name})"
    )
    table = Table.grid(padding=(0, 2))
    table.add_row("documents", str(stats.documents))
    table.add_row("chunks", str(stats.chunks))
    if stats.built:
        table.add_row("embedded", str(stats.embedded))
        table.add_row("reused", f"{stats.reused} (from the embedding cache)")
    table.add_row("time", f"{time.perf_counter() - started:.1f} s")
    out.print(table)


@index_app.command("list")
def list_indexes(
    name: str | None = typer.Argument(None, help="Only the indexes of this retrieval config."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Index versions recorded in the store, newest first, with their sizes."""
    from harness import registry

    try:
        with existing_store(store) as db:
            records = [] if db is None else registry.list_versions(db, "index", name)
    except HarnessError as exc:
        raise fail(exc) from None
    if not records:
        say("no index versions recorded yet (build one: `evals index build retrieval/NAME.yaml`)")
        return
    table = Table("index", "version", "docs", "chunks", "chunking", "model", "first seen")
    for column in table.columns[:5]:
        column.no_wrap = True
    for record in records:
        content = record.content if isinstance(record.content, dict) else {}
        table.add_row(
            record.name,
            record.version,
            str(content.get("document_count", "-")),
            str(content.get("chunk_count", "-")),
            _chunking(content.get("chunking")),
            str((content.get("embedding") or {}).get("model", "-")),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(record.first_seen)),
        )
    out.print(table)


@index_app.command("show")
def show(
    ref: str = typer.Argument(
        ...,
        metavar="NAME[@VERSION]",
        help="An index (newest version unless @VERSION), or a config file.",
    ),
    store: Path | None = STORE_OPTION,
) -> None:
    """An index version's settings, documents and chunk counts."""
    try:
        with existing_store(store) as db:
            title, manifest = _manifest(db, ref)
    except HarnessError as exc:
        raise fail(exc) from None
    embedding = manifest.get("embedding") or {}
    say_out(f"index {title}")
    grid = Table.grid(padding=(0, 2))
    grid.add_row(
        "model", f"{embedding.get('model')} (weights {str(embedding.get('weights'))[:12]})"
    )
    grid.add_row("chunking", _chunking(manifest.get("chunking")))
    grid.add_row("documents", str(manifest.get("document_count")))
    grid.add_row("chunks", str(manifest.get("chunk_count")))
    out.print(grid)
    table = Table("document", "source", "chunks", "hash")
    for document_id, entry in sorted((manifest.get("documents") or {}).items()):
        table.add_row(
            document_id,
            str(entry.get("source")),
            str(len(entry.get("chunks") or [])),
            str(entry.get("hash")),
        )
    out.print(table)


@index_app.command("diff")
def diff(
    ref_a: str = typer.Argument(..., metavar="A", help="NAME@VERSION, NAME, or a config file."),
    ref_b: str = typer.Argument(..., metavar="B", help="NAME@VERSION, NAME, or a config file."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Documents and chunks added, removed and changed from index A to index B."""
    from harness.rag.manifest import diff_manifests

    try:
        with existing_store(store) as db:
            title_a, manifest_a = _manifest(db, ref_a)
            title_b, manifest_b = _manifest(db, ref_b)
    except HarnessError as exc:
        raise fail(exc) from None
    result = diff_manifests(manifest_a, manifest_b)
    say_out(f"index {title_a} -> {title_b}")
    if result.same:
        say_out("no differences")
        return
    for key, (before, after) in result.settings.items():
        if key == "chunking":
            before, after = _chunking(before), _chunking(after)
        say_out(f"{key}: {canonical_json(before)} -> {canonical_json(after)}")
    _print_changes("documents", result, "documents")
    _print_changes("chunks", result, "chunks")


def _print_changes(title: str, result: IndexDiff, prefix: str) -> None:
    groups = [
        ("+", getattr(result, f"{prefix}_added")),
        ("-", getattr(result, f"{prefix}_removed")),
        ("~", getattr(result, f"{prefix}_changed")),
    ]
    counts = ", ".join(
        f"{len(items)} {word}"
        for (_, items), word in zip(groups, ("added", "removed", "changed"), strict=True)
    )
    say_out(f"{title}: {counts}")
    for sign, items in groups:
        for item in items[:MAX_LISTED]:
            say_out(f"  {sign} {item}")
        if len(items) > MAX_LISTED:
            say_out(f"  {sign} ... and {len(items) - MAX_LISTED} more")


def say_out(line: str) -> None:
    """One plain line on stdout (never wrapped, no markup)."""
    out.print(line, markup=False, soft_wrap=True)


def _chunking(chunking: Any) -> str:
    if not isinstance(chunking, dict):
        return "-"
    return f"{chunking.get('strategy')} {chunking.get('size')}/{chunking.get('overlap')}"


def _manifest(db: Store | None, ref: str) -> tuple[str, dict[str, Any]]:
    """(title, manifest) of NAME[@VERSION] from the registry, or of a config file as it is now."""
    from harness import registry
    from harness.prompts import split_ref

    if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
        from harness.rag.config import load_retrieval_config
        from harness.rag.index import local_manifest

        config = load_retrieval_config(Path(ref))
        version, manifest = local_manifest(config, Path(ref))
        return f"{config.name}@{version} (from {ref}, as the files are now)", manifest
    name, selector = split_ref(ref)
    records = [] if db is None else registry.list_versions(db, "index", name)
    if not records:
        raise ConfigError(
            f"no index versions of {name!r} recorded (build one: "
            f"`evals index build retrieval/{name}.yaml`)"
        )
    assert db is not None
    record = records[0] if selector is None else registry.resolve(db, "index", name, selector)
    return f"{record.name}@{record.version}", dict(record.content)
