"""Portable run files: one run with its lineage and results, as JSONL or Parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.run_versions import check_lineage, export_lineage, import_lineage
from harness.store import ResultRow, Store

RUN_FILE_FORMAT = "evals-run"
RUN_FILE_SCHEMA = 1
LINEAGE_KEY = "lineage"  # header key: the run's versions and labels (run_versions.LINEAGE_SCHEMA)


def _header(run: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    return {"format": RUN_FILE_FORMAT, "schema": RUN_FILE_SCHEMA, "run": run, **(extra or {})}


def write_run_file(
    store: Store, run_ref: str, path: Path, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write a run to `path` (.jsonl, or .parquet). Returns the run record written."""
    run = store.get_run(run_ref)
    results = store.results(run["id"])
    extra = {LINEAGE_KEY: export_lineage(store, run["id"]), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [json.dumps(r.to_dict(), ensure_ascii=False, default=str) for r in results]
        table = pa.table({"result": pa.array(rows, pa.string())})
        meta = {b"evals-run": json.dumps(_header(run, extra), default=str).encode()}
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    else:
        with tmp.open("w", encoding="utf-8") as out:
            out.write(json.dumps(_header(run, extra), ensure_ascii=False, default=str) + "\n")
            for result in results:
                out.write(
                    json.dumps({"result": result.to_dict()}, ensure_ascii=False, default=str) + "\n"
                )
    tmp.replace(path)  # atomic: a reader never sees half a file
    return run


def _upgrade(header: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring an older run file header to the current shape (the one place for upgrades)."""
    if header.get("format") != RUN_FILE_FORMAT:
        raise ConfigError("not an evals run file (missing format header)", path=path, line=1)
    schema = header.get("schema")
    if not isinstance(schema, int) or schema > RUN_FILE_SCHEMA:
        raise ConfigError(
            f"run file schema {schema!r} is newer than this harness "
            f"understands ({RUN_FILE_SCHEMA})",
            path=path,
            line=1,
        )
    return header


def read_run_file(path: Path) -> tuple[dict[str, Any], list[ResultRow]]:
    """Read a run file: (header with 'run', results)."""
    if not path.exists():
        raise ConfigError("file not found", path=path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = (table.schema.metadata or {}).get(b"evals-run")
        if meta is None:
            raise ConfigError("not an evals run file (no evals-run metadata)", path=path)
        header = _upgrade(json.loads(meta), path)
        results = [ResultRow.from_dict(json.loads(v)) for v in table.column("result").to_pylist()]
        return header, results
    results = []
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
        try:
            header = _upgrade(json.loads(first), path)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON: {exc.msg}", path=path, line=1) from None
        for number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            try:
                results.append(ResultRow.from_dict(json.loads(line)["result"]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"invalid result line: {exc}", path=path, line=number) from None
    return header, results


def import_run_file(store: Store, path: Path) -> tuple[dict[str, Any], int]:
    """Read a run file into the store with its lineage (versions, labels). Returns (header,
    results imported); nothing is written when the file is invalid."""
    header, results = read_run_file(path)
    block = header.get(LINEAGE_KEY)
    try:
        check_lineage(block)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=path, line=1) from None
    store.import_run(header["run"], results)
    import_lineage(store, header["run"]["id"], block)
    return header, len(results)
