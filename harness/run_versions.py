"""Record the artifact versions each run used, and carry them (with labels) inside run files.

A run's manifest names every version; this module registers them (with their content) when
the run is created, links them to the run (`run_versions`), and exports/imports them as the
`lineage` block of a run file header so lineage survives a move to another machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import SuiteConfig
from harness.errors import ConfigError
from harness.registry import (
    KINDS,
    VersionRecord,
    adopt_label,
    current_author,
    get_version,
    labels_of,
    record_version,
)
from harness.store import Store

LINEAGE_SCHEMA = 1
# Manifest key of the versioned artifacts other than suite, dataset and prompt:
# kind -> [{name, version, content}], filled by the RAG (retrieval, index) and judge (rubric) code.
ARTIFACTS_KEY = "artifacts"
EXTRA_KINDS = ("retrieval", "index", "rubric")


@dataclass(frozen=True)
class UsedVersion:
    """One artifact version a run used, and how the suite referred to it."""

    kind: str
    name: str
    version: str
    content: Any
    ref: str | None = None


def suite_content(config: SuiteConfig) -> dict[str, Any]:
    """The content a suite version hashes (as `load_suite` computes it)."""
    return config.model_dump(mode="json", exclude={"description"}, exclude_none=True)


def dataset_name(source: str, project_dir: Path) -> str:
    """A dataset's registry name: its path relative to the project, else its source as given."""
    try:
        return str(Path(source).resolve().relative_to(project_dir.resolve()))
    except (ValueError, OSError):
        return source


def used_versions(
    manifest: dict[str, Any],
    project_dir: Path,
    *,
    suite: dict[str, Any] | None = None,
    prompt_ref: str | None = None,
) -> list[UsedVersion]:
    """Every version a manifest names. The suite needs its content (not in the manifest)."""
    used: list[UsedVersion] = []
    info = manifest.get("suite") or {}
    if suite is not None and info.get("version"):
        used.append(UsedVersion("suite", info["name"], info["version"], suite, info.get("path")))
    dataset = manifest.get("dataset") or {}
    if dataset.get("version"):
        name = dataset_name(str(dataset.get("source")), project_dir)
        # Rows are not copied into the registry: every result already stores its case.
        content = {"source": name, "rows": dataset.get("rows"), "version": dataset["version"]}
        used.append(UsedVersion("dataset", name, dataset["version"], content))
    prompt = manifest.get("prompt")
    if prompt:
        used.append(
            UsedVersion("prompt", prompt["name"], prompt["version"], prompt["content"], prompt_ref)
        )
    for kind, entries in (manifest.get(ARTIFACTS_KEY) or {}).items():
        for entry in entries or []:
            if kind in KINDS and entry.get("content") is not None:
                used.append(
                    UsedVersion(
                        kind, entry["name"], entry["version"], entry["content"], entry.get("ref")
                    )
                )
    return used


def link_run(
    store: Store,
    run_id: str,
    used: list[UsedVersion],
    *,
    git_commit: str | None,
    author: str | None,
) -> None:
    """Register each used version (idempotent) and link it to the run."""
    for item in used:
        record_version(
            store,
            item.kind,
            item.name,
            item.content,
            item.version,
            git_commit=git_commit,
            author=author,
        )
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO run_versions (run_id, kind, name, version, ref) "
            "VALUES (?,?,?,?,?)",
            [(run_id, u.kind, u.name, u.version, u.ref) for u in used],
        )


def record_run_versions(
    store: Store,
    run_id: str,
    *,
    project_dir: Path,
    suite: dict[str, Any] | None,
    prompt_ref: str | None,
) -> None:
    """After a run was created: register the versions its manifest names. No run, no-op."""
    row = store.conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return
    manifest = store.get_run(run_id)["manifest"]
    used = used_versions(manifest, project_dir, suite=suite, prompt_ref=prompt_ref)
    link_run(
        store,
        run_id,
        used,
        git_commit=(manifest.get("git") or {}).get("commit"),
        author=current_author(project_dir),
    )


def run_version_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """(kind, name, version, ref) of every version linked to a run."""
    rows = store.conn.execute(
        "SELECT kind, name, version, ref FROM run_versions WHERE run_id = ? ORDER BY kind, name",
        (run_id,),
    )
    return [{"kind": k, "name": n, "version": v, "ref": r} for k, n, v, r in rows]


def export_lineage(store: Store, run_id: str) -> dict[str, Any]:
    """The run file header block: the run's versions with content, and labels pointing at them."""
    versions: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    links = run_version_rows(store, run_id)
    for link in links:
        record = get_version(store, link["kind"], link["name"], link["version"])
        if record is None:
            continue
        versions.append(record.as_dict())
        for label, version in labels_of(store, link["kind"], link["name"]).items():
            if version == link["version"]:
                labels.append(
                    {"kind": link["kind"], "name": link["name"], "label": label, "version": version}
                )
    return {"schema": LINEAGE_SCHEMA, "versions": versions, "labels": labels, "runs": links}


def check_lineage(block: dict[str, Any] | None) -> None:
    """Refuse a lineage block this harness cannot read (the one place to upgrade old ones)."""
    if block is None:
        return
    schema = block.get("schema") if isinstance(block, dict) else None
    if not isinstance(schema, int) or schema > LINEAGE_SCHEMA:
        raise ConfigError(
            f"run file lineage schema {schema!r} is newer than this harness understands "
            f"({LINEAGE_SCHEMA})"
        )


def import_lineage(store: Store, run_id: str, block: dict[str, Any] | None) -> dict[str, int]:
    """Bring a run file's lineage block into this store: versions (kept as first seen there),
    the run's links, and labels this store does not have yet (local labels never move)."""
    if not block:
        return {"versions": 0, "labels": 0}
    check_lineage(block)
    added = 0
    for data in block.get("versions") or []:
        record = VersionRecord(**data)
        _, new = record_version(
            store,
            record.kind,
            record.name,
            record.content,
            record.version,
            git_commit=record.git_commit,
            author=record.author,
            first_seen=record.first_seen,
        )
        added += int(new)
    links = block.get("runs") or []
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO run_versions (run_id, kind, name, version, ref) "
            "VALUES (?,?,?,?,?)",
            [(run_id, x["kind"], x["name"], x["version"], x.get("ref")) for x in links],
        )
    author = current_author()
    labelled = sum(
        adopt_label(store, x["kind"], x["name"], x["label"], x["version"], author=author)
        for x in block.get("labels") or []
    )
    return {"versions": added, "labels": labelled}
