"""Join the run files of one suite's shards (`--shard i/n` CI jobs) into one run file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.runrefs import LoadedRun, load_run_file, save_run_file
from harness.store import ResultRow
from harness.summary import summarize
from harness.versions import short_version

# The lineage shards must share; everything else (run id, times, command, host) may differ.
SHARED_KEYS = (
    "suite",
    "dataset",
    "prompt",
    "target",
    "models",
    "scorers",
    "thresholds",
    "repeat",
    "seed",
    "git",
)


def _comparable(manifest: dict[str, Any], key: str) -> Any:
    value = copy.deepcopy(manifest.get(key))
    if key == "suite" and isinstance(value, dict):
        value.pop("path", None)
    if key == "dataset" and isinstance(value, dict):
        value.pop("selected", None)
        (value.get("selection") or {}).pop("shard", None)
    if key == "git" and isinstance(value, dict):
        value = value.get("commit")
    return value


def lineage_mismatch(first: dict[str, Any], other: dict[str, Any]) -> str | None:
    """The first shared lineage key on which two shard manifests differ, if any."""
    for key in SHARED_KEYS:
        if _comparable(first, key) != _comparable(other, key):
            return key
    return None


def _shard(run: LoadedRun) -> tuple[int, int] | None:
    shard = ((run.manifest.get("dataset") or {}).get("selection") or {}).get("shard")
    return (int(shard[0]), int(shard[1])) if shard else None


def merge_runs(runs: list[LoadedRun]) -> tuple[dict[str, Any], list[ResultRow], list[str]]:
    """(merged run record, its results, warnings). Refuses runs whose lineage differs other
    than by shard, and any (case, model, epoch) present twice."""
    if len(runs) < 2:
        raise ConfigError("give at least two run files to merge")
    first = runs[0]
    for run in runs[1:]:
        differs = lineage_mismatch(first.manifest, run.manifest)
        if differs is not None:
            raise ConfigError(
                f"its {differs} differs from {first.source}'s; only shards of one "
                "run can be merged",
                path=run.source,
            )
    shards = [_shard(run) for run in runs]
    counts = {s[1] for s in shards if s is not None}
    if len(counts) > 1:
        raise ConfigError(f"the files are shards of different splits (n = {sorted(counts)})")
    seen: dict[tuple[str, str, int], str] = {}
    merged_id = "merged-" + short_version(sorted(run.id for run in runs))
    results: list[ResultRow] = []
    for run in runs:
        for result in run.results:
            key = (result.case_id, result.model, result.epoch)
            if key in seen:
                raise ConfigError(
                    f"case {key[0]!r} (model {key[1]}, epoch {key[2]}) is also in "
                    f"{seen[key]}; refusing to merge duplicates",
                    path=run.source,
                )
            seen[key] = run.source
            results.append(ResultRow.from_dict({**result.to_dict(), "run_id": merged_id}))
    warnings = []
    if counts:
        n = counts.pop()
        present = {s[0] for s in shards if s is not None}
        missing = sorted(set(range(1, n + 1)) - present)
        if missing:
            warnings.append(
                f"shards {', '.join(f'{i}/{n}' for i in missing)} are missing: "
                "the merged run covers only part of the suite"
            )
    manifest = copy.deepcopy(first.manifest)
    manifest["run_id"] = merged_id
    dataset = manifest.setdefault("dataset", {})
    (dataset.setdefault("selection", {})).pop("shard", None)
    dataset["selected"] = sum(
        int((r.manifest.get("dataset") or {}).get("selected") or 0) for r in runs
    )
    manifest["merged_from"] = [
        {"run_id": r.id, "shard": list(s) if s else None} for r, s in zip(runs, shards, strict=True)
    ]
    statuses = {str(r.record.get("status")) for r in runs}
    planned = sum(
        int((r.record.get("summary") or {}).get("planned") or len(r.results)) for r in runs
    )
    record = {
        "id": merged_id,
        "suite": first.suite,
        "status": "completed" if statuses == {"completed"} else "interrupted",
        "created_at": min(float(r.record.get("created_at") or 0) for r in runs),
        "finished_at": max(float(r.record.get("finished_at") or 0) for r in runs) or None,
        "manifest": manifest,
        "summary": summarize(results, manifest.get("thresholds") or {}, planned=planned),
    }
    return record, results, warnings


def merge_run_files(paths: list[Path], output: Path) -> tuple[dict[str, Any], list[str]]:
    """Merge shard run files into `output` (.jsonl or .parquet); returns (record, warnings)."""
    record, results, warnings = merge_runs([load_run_file(path) for path in paths])
    save_run_file(record, results, output)
    return record, warnings
