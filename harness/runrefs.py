"""Runs as users name them (id, prefix, last, last~N, run file, baseline): load; save as a file."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, StoreError
from harness.runfile import read_run_file, write_run_file
from harness.store import ResultRow, Store

BASELINE_DIR = Path("reports") / "baseline"
RUN_FILE_SUFFIXES = (".jsonl", ".parquet")
_LAST_N = re.compile(r"^last~(\d+)$")


@dataclass
class LoadedRun:
    """One run's record (id, suite, status, manifest, summary) and results, from anywhere."""

    record: dict[str, Any]
    results: list[ResultRow]
    source: str  # "store", or the run file's path

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def suite(self) -> str:
        return str(self.record["suite"])

    @property
    def manifest(self) -> dict[str, Any]:
        return self.record.get("manifest") or {}

    @property
    def label(self) -> str:
        """How reports name this run: its id, plus the file it came from."""
        return self.id if self.source == "store" else f"{self.id} ({self.source})"


def baseline_path(suite: str, project_dir: Path) -> Path:
    """Where a suite's committed baseline run file lives."""
    return project_dir / BASELINE_DIR / f"{suite}.jsonl"


def is_baseline_ref(ref: str) -> bool:
    return ref == "baseline" or ref.startswith("baseline:")


def is_run_file(ref: str) -> bool:
    return ref.endswith(RUN_FILE_SUFFIXES) or Path(ref).is_file()


def load_run_file(path: Path) -> LoadedRun:
    header, results = read_run_file(path)
    return LoadedRun(header["run"], results, str(path))


def load_from_store(store: Store, ref: str) -> LoadedRun:
    """A run from the store by id, unique prefix, 'last', or 'last~N' (N runs before last)."""
    match = _LAST_N.match(ref)
    if match:
        back = int(match.group(1))
        runs = store.list_runs(limit=back + 1)
        if len(runs) <= back:
            raise StoreError(f"{ref}: the store holds only {len(runs)} run(s)")
        record = runs[back]
    else:
        record = store.get_run(ref)
    return LoadedRun(record, store.results(record["id"]), "store")


def resolve_run(
    ref: str, *, store_path: Path, project_dir: Path, suite: str | None = None
) -> LoadedRun:
    """Load the run `ref` names. `baseline` means the committed baseline file of `suite`
    (`baseline:NAME` names the suite); a path ending .jsonl/.parquet is a run file."""
    if is_baseline_ref(ref):
        name = ref.partition(":")[2] or suite
        if not name:
            raise ConfigError("say whose baseline: baseline:SUITE", field=ref)
        path = baseline_path(name, project_dir)
        if not path.exists():
            raise ConfigError(
                f"no baseline for suite {name!r} (looked for {path}); write one with "
                "`evals baseline set RUN` and commit it",
                field=ref,
            )
        return load_run_file(path)
    if is_run_file(ref):
        return load_run_file(Path(ref))
    with Store.open(store_path, create=False) as store:
        return load_from_store(store, ref)


def resolve_pair(
    base_ref: str, cand_ref: str, *, store_path: Path, project_dir: Path
) -> tuple[LoadedRun, LoadedRun]:
    """Load a baseline and a candidate; `baseline` on either side takes the other's suite."""
    if is_baseline_ref(base_ref) and is_baseline_ref(cand_ref):
        raise ConfigError("compare a run against a baseline, not two baselines")
    if base_ref == "baseline":
        cand = resolve_run(cand_ref, store_path=store_path, project_dir=project_dir)
        base = resolve_run(
            base_ref, store_path=store_path, project_dir=project_dir, suite=cand.suite
        )
        return base, cand
    base = resolve_run(base_ref, store_path=store_path, project_dir=project_dir)
    cand = resolve_run(cand_ref, store_path=store_path, project_dir=project_dir, suite=base.suite)
    return base, cand


def save_run_file(record: dict[str, Any], results: list[ResultRow], path: Path) -> None:
    """Write a run held in memory as a run file (.jsonl or .parquet).

    It goes through a scratch store so the file format stays owned by harness.runfile.
    """
    run_id = str(record["id"])
    results = [r if r.run_id == run_id else dataclasses.replace(r, run_id=run_id) for r in results]
    with (
        tempfile.TemporaryDirectory(prefix="evals-runfile-") as scratch,
        Store.open(Path(scratch) / "scratch.db") as store,
    ):
        store.import_run(record, results)
        write_run_file(store, run_id, path)
