"""Portable run files: one run with its lineage and results, as JSONL or Parquet.

A file is a header (the run, its lineage), then one record per result, then one per
superseded result (an earlier attempt a resume ran again, with `superseded_at`): exporting a
run keeps its whole history. Schema 1 files (no superseded records) still read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.run_versions import check_lineage, export_lineage, import_lineage
from harness.store import ResultRow, Store

RUN_FILE_FORMAT = "evals-run"
RUN_FILE_SCHEMA = 2  # 2: superseded results
LINEAGE_KEY = "lineage"  # header key: the run's versions and labels (run_versions.LINEAGE_SCHEMA)
SUPERSEDED = "superseded"  # a JSONL record's key for a superseded result
SUPERSEDED_AT = "superseded_at"  # in a superseded result's record: when it was superseded


def _header(run: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    return {"format": RUN_FILE_FORMAT, "schema": RUN_FILE_SCHEMA, "run": run, **(extra or {})}


def write_run_file(
    store: Store, run_ref: str, path: Path, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write a run to `path` (.jsonl, or .parquet). Returns the run record written."""
    run = store.get_run(run_ref)
    results = store.results(run["id"])
    earlier = [{**r.to_dict(), SUPERSEDED_AT: at} for r, at in store.superseded(run["id"])]
    extra = {LINEAGE_KEY: export_lineage(store, run["id"]), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [json.dumps(r.to_dict(), ensure_ascii=False, default=str) for r in results]
        rows += [json.dumps(r, ensure_ascii=False, default=str) for r in earlier]
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
            for record in earlier:
                out.write(json.dumps({SUPERSEDED: record}, ensure_ascii=False, default=str) + "\n")
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


@dataclass
class RunFile:
    """A run file's content: the header (with 'run'), current and superseded results."""

    header: dict[str, Any]
    results: list[ResultRow] = field(default_factory=list)
    superseded: list[tuple[ResultRow, float]] = field(default_factory=list)

    def add(self, record: dict[str, Any], earlier: bool) -> None:
        if earlier:
            record = dict(record)
            at = float(record.pop(SUPERSEDED_AT))
            self.superseded.append((ResultRow.from_dict(record), at))
        else:
            self.results.append(ResultRow.from_dict(record))


def read_run_file(path: Path) -> tuple[dict[str, Any], list[ResultRow]]:
    """Read a run file: (header with 'run', results)."""
    content = read_run(path)
    return content.header, content.results


def read_run(path: Path) -> RunFile:
    """Read a run file, superseded results included."""
    if not path.exists():
        raise ConfigError("file not found", path=path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = (table.schema.metadata or {}).get(b"evals-run")
        if meta is None:
            raise ConfigError("not an evals run file (no evals-run metadata)", path=path)
        content = RunFile(_upgrade(json.loads(meta), path))
        for number, value in enumerate(table.column("result").to_pylist(), start=1):
            try:
                record = json.loads(value)
                content.add(record, SUPERSEDED_AT in record)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"invalid result in row {number}: {exc}", path=path) from None
        return content
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
        try:
            content = RunFile(_upgrade(json.loads(first), path))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON: {exc.msg}", path=path, line=1) from None
        for number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                earlier = SUPERSEDED in record
                content.add(record[SUPERSEDED if earlier else "result"], earlier)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"invalid result line: {exc}", path=path, line=number) from None
    return content


def import_run_file(store: Store, path: Path) -> tuple[dict[str, Any], int]:
    """Read a run file into the store with its lineage (versions, labels). Returns (header,
    results imported); nothing is written when the file is invalid."""
    content = read_run(path)
    header = content.header
    block = header.get(LINEAGE_KEY)
    try:
        check_lineage(block)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=path, line=1) from None
    store.import_run(header["run"], content.results, content.superseded)
    import_lineage(store, header["run"]["id"], block)
    return header, len(content.results)
