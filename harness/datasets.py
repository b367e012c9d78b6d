"""Load eval cases from JSONL, JSON, CSV, Parquet or Hugging Face datasets, with a content version.

A suite's `dataset:` is a `DatasetSpec` (a plain string is a path). `load_dataset` reads the
rows, maps columns onto `Case` (id, fields, expected, metadata) and versions the mapped cases by
content, so the same cases read from CSV or JSONL get the same version. `select_cases` applies
the CLI's --filter, --sample and --limit. Every problem is a one-line `ConfigError` naming the
file and the line or field. `datasets` and `pyarrow` are imported only when a load needs them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.cases import Case
from harness.errors import ConfigError

DatasetFormat = Literal["jsonl", "json", "csv", "parquet", "hf"]
_NonEmpty = Annotated[str, Field(min_length=1)]

_FORMATS_BY_SUFFIX: dict[str, DatasetFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".py": "hf",
}
# Files written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
_SAVED_TO_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_JSON_TYPE_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


class DatasetSpec(BaseModel):
    """Where a suite's cases come from (`path` or `hf`) and how columns map onto a Case."""

    model_config = ConfigDict(extra="forbid")

    path: _NonEmpty | None = None
    format: DatasetFormat | None = None
    hf: _NonEmpty | None = None
    split: _NonEmpty = "test"
    subset: _NonEmpty | None = None
    id: _NonEmpty | None = None
    expected: _NonEmpty | None = None
    metadata: list[str] | None = None
    input: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_path(cls, value: Any) -> Any:
        # `dataset: data/capitals.jsonl` in a suite file is shorthand for {path: ...}.
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.path is None) == (self.hf is None):
            raise ValueError("give exactly one of 'path' or 'hf'")
        if self.hf is not None and self.format not in (None, "hf"):
            raise ValueError(f"format {self.format!r} cannot be combined with 'hf'")
        return self

    @classmethod
    def from_value(cls, value: str | Mapping[str, Any]) -> DatasetSpec:
        """Build a spec from a suite's `dataset:` value; a plain string is a path."""
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            raise ConfigError(message, field=f"dataset.{loc}" if loc else "dataset") from None


@dataclass
class LoadedDataset:
    """The mapped cases, their content version, where they came from and how many rows."""

    cases: list[Case]
    version: str
    source: str
    rows: int


@dataclass
class _Row:
    values: dict[str, Any]
    number: int  # 1-based position in the dataset
    line: int | None = None  # line in the data file, where the format has lines


def load_dataset(
    spec: DatasetSpec, base_dir: Path, *, suite_path: str | None = None
) -> LoadedDataset:
    """Read the rows `spec` names (paths relative to `base_dir`) and map them onto cases."""
    if spec.hf is not None:
        rows, where, source = _read_hf(spec, Path(base_dir), suite_path)
    else:
        assert spec.path is not None  # guaranteed by DatasetSpec._one_source
        data_path = Path(base_dir) / Path(spec.path).expanduser()
        if not data_path.exists():
            message = f"dataset file not found: {spec.path} (resolved to {data_path.resolve()})"
            raise ConfigError(message, path=suite_path, field="dataset.path")
        fmt = spec.format or _infer_format(spec.path, data_path, suite_path)
        if fmt == "hf":
            rows, where, source = _read_hf(spec, Path(base_dir), suite_path)
        else:
            _check_file_options(spec, data_path, fmt, suite_path)
            rows = _READERS[fmt](data_path)
            where = source = str(data_path)
    if not rows:
        raise ConfigError("dataset is empty (no rows)", path=where)
    cases = _to_cases(rows, spec, where)
    content = [[c.id, c.fields, c.expected, c.metadata] for c in cases]
    return LoadedDataset(cases, _sha256_canonical(content)[:12], source, len(rows))


def _infer_format(written: str, data_path: Path, suite_path: str | None) -> DatasetFormat:
    if data_path.is_dir():
        return "hf"
    fmt = _FORMATS_BY_SUFFIX.get(data_path.suffix.lower())
    if fmt is None:
        message = (
            f"cannot tell the format of {written} from its extension; "
            "set dataset.format (jsonl, json, csv, parquet or hf)"
        )
        raise ConfigError(message, path=suite_path, field="dataset.format")
    return fmt


def _check_file_options(
    spec: DatasetSpec, data_path: Path, fmt: str, suite_path: str | None
) -> None:
    if data_path.is_dir():
        message = f"{spec.path} is a directory; a {fmt} dataset must be a file (or use format: hf)"
        raise ConfigError(message, path=suite_path, field="dataset.path")
    for option in ("split", "subset"):
        if option in spec.model_fields_set:
            message = f"'{option}' applies only to Hugging Face datasets, not {fmt} files"
            raise ConfigError(message, path=suite_path, field=f"dataset.{option}")


def _read_jsonl(path: Path) -> list[_Row]:
    rows: list[_Row] = []
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings.
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            message = f"invalid JSON on line {lineno}: {exc.msg} (column {exc.colno})"
            raise ConfigError(message, path=path, line=lineno) from None
        rows.append(_object_row(value, len(rows) + 1, path, lineno))
    return rows


def _read_json(path: Path) -> list[_Row]:
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} (column {exc.colno})"
        raise ConfigError(message, path=path, line=exc.lineno) from None
    if not isinstance(value, list):
        raise ConfigError(f"expected a JSON list of objects, got {_json_type(value)}", path=path)
    return [_object_row(item, number, path, None) for number, item in enumerate(value, start=1)]


def _read_csv(path: Path) -> list[_Row]:
    rows: list[_Row] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next((record for record in reader if record), None)
            if header is None:
                raise ConfigError("CSV file has no header row", path=path, line=1)
            names = _csv_header(header, path, reader.line_num)
            last_line = reader.line_num
            for record in reader:
                line, last_line = last_line + 1, reader.line_num  # a value may span lines
                if not record:  # blank line
                    continue
                if len(record) > len(names):
                    message = (
                        f"row {len(rows) + 1} has {len(record)} values "
                        f"but the header has {len(names)} columns"
                    )
                    raise ConfigError(message, path=path, line=line)
                record += [""] * (len(names) - len(record))
                values = {n: _csv_value(n, t) for n, t in zip(names, record, strict=True)}
                rows.append(_Row(values, len(rows) + 1, line))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", path=path) from None
    except csv.Error as exc:
        raise ConfigError(f"malformed CSV: {exc}", path=path) from None
    return rows


def _csv_header(header: list[str], path: Path, line: int) -> list[str]:
    names = [name.strip() for name in header]
    for position, name in enumerate(names, start=1):
        if not name:
            raise ConfigError(f"CSV header column {position} has no name", path=path, line=line)
        if name in names[: position - 1]:
            raise ConfigError(f"duplicate column {name!r} in CSV header", path=path, line=line)
    return names


def _csv_value(column: str, text: str) -> Any:
    # CSV has no types: values stay strings, except that empty means missing (None).
    if text == "":
        return None
    if column == "metadata" and text.lstrip().startswith("{"):
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            return text
        return decoded if isinstance(decoded, dict) else text
    return text


def _read_parquet(path: Path) -> list[_Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read Parquet file: {_first_line(exc)}", path=path) from None
    return [_Row(dict(values), n) for n, values in enumerate(table.to_pylist(), start=1)]


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", path=path) from None


def _object_row(value: Any, number: int, path: Path, line: int | None) -> _Row:
    if not isinstance(value, dict):
        message = f"row {number} is not a JSON object (got {_json_type(value)})"
        raise ConfigError(message, path=path, line=line)
    return _Row(value, number, line)


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPE_NAMES.get(type(value), "object")


def _read_hf(
    spec: DatasetSpec, base_dir: Path, suite_path: str | None
) -> tuple[list[_Row], str, str]:
    """Rows, error location and source of a save_to_disk dir, a local dataset dir, or a hub id."""
    target = spec.path or spec.hf or ""
    field = "dataset.path" if spec.path is not None else "dataset.hf"
    local: Path | None = base_dir / Path(target).expanduser()
    if local is not None and not local.exists():
        if spec.path is not None or target.startswith((".", "/", "~")) or target.endswith(".py"):
            message = f"dataset not found: {target} (resolved to {local.resolve()})"
            raise ConfigError(message, path=suite_path, field=field)
        local = None  # a hub id such as "owner/name"
    if local is not None:
        # Local data needs no network; without these `datasets` phones home on every load.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
    where = str(local) if local is not None else f"hf:{target}"
    source = f"hf:{target}" + (f":{spec.subset}" if spec.subset else "") + f"@{spec.split}"

    import datasets

    try:
        if local is not None and any((local / m).is_file() for m in _SAVED_TO_DISK_MARKERS):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if spec.split not in loaded:
                    message = f"split {spec.split!r} not found; available: {', '.join(loaded)}"
                    raise ConfigError(message, path=where, field="dataset.split")
                loaded = loaded[spec.split]
        else:
            name = str(local) if local is not None else target
            loaded = datasets.load_dataset(name, name=spec.subset, split=spec.split)
    except ConfigError:
        raise
    except Exception as exc:  # `datasets` raises many unrelated types; all mean "cannot load"
        if local is not None:
            message = f"cannot load Hugging Face dataset: {_first_line(exc)}"
            raise ConfigError(message, path=where) from None
        if _is_offline_failure(exc):
            message = f"hub dataset {target} not available offline: {_first_line(exc)}"
        else:
            message = f"cannot load hub dataset {target}: {_first_line(exc)}"
        raise ConfigError(message, path=suite_path, field=field) from None
    return [_Row(dict(values), n) for n, values in enumerate(loaded, start=1)], where, source


def _is_offline_failure(exc: BaseException) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    names = " ".join(cls.__name__ for cls in type(exc).__mro__)
    return any(word in names for word in ("Connect", "Offline", "Timeout"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _to_cases(rows: list[_Row], spec: DatasetSpec, where: str) -> list[Case]:
    """Columns named in `spec` must be in every row; default columns are used when present."""
    cases: list[Case] = []
    first_row_of: dict[str, _Row] = {}
    for row in rows:
        case_id = _case_id(row, spec, where)
        if case_id in first_row_of:
            first = first_row_of[case_id].number
            message = f"duplicate case id {case_id!r} at rows {first} and {row.number}"
            raise ConfigError(message, path=where, line=row.line)
        first_row_of[case_id] = row
        if spec.input is not None:
            fields = {name: _column(row, name, "dataset.input", where) for name in spec.input}
        else:
            fields = dict(row.values)
        if spec.expected is not None:
            expected = _column(row, spec.expected, "dataset.expected", where)
        else:
            expected = row.values.get("expected")
        cases.append(Case(case_id, fields, expected, _metadata(row, spec, where)))
    return cases


def _case_id(row: _Row, spec: DatasetSpec, where: str) -> str:
    if spec.id is not None:
        value = _column(row, spec.id, "dataset.id", where)
        if value is None or value == "":
            message = f"column {spec.id!r} (dataset.id) is empty in row {row.number}"
            raise ConfigError(message, path=where, line=row.line)
        return str(value)
    value = row.values.get("id")
    if value is not None and value != "":
        return str(value)
    # No id column: hash the row, so the id is stable across runs, machines and formats.
    return _sha256_canonical(row.values)[:12]


def _metadata(row: _Row, spec: DatasetSpec, where: str) -> dict[str, Any]:
    if spec.metadata is not None:
        return {name: _column(row, name, "dataset.metadata", where) for name in spec.metadata}
    nested = row.values.get("metadata")
    metadata = dict(nested) if isinstance(nested, Mapping) else {}
    if "tags" in row.values:
        metadata["tags"] = row.values["tags"]
    return metadata


def _column(row: _Row, name: str, option: str, where: str) -> Any:
    if name not in row.values:
        message = f"column {name!r} ({option}) missing in row {row.number}"
        raise ConfigError(message, path=where, line=row.line)
    return row.values[name]


def _sha256_canonical(value: Any) -> str:
    """sha256 hex of `value`'s canonical JSON. TODO: move to harness/versions.py (owns hashing)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def select_cases(
    cases: Sequence[Case],
    *,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    filters: list[str] | None = None,
) -> list[Case]:
    """Filter (key=value, ANDed), then sample (seeded, dataset order kept), then take `limit`."""
    for option, count in (("--limit", limit), ("--sample", sample)):
        if count is not None and count < 0:
            raise ConfigError(f"must be 0 or more, got {count}", field=option)
    conditions = [_parse_filter(text) for text in filters or []]
    selected = [case for case in cases if all(_matches(case, k, v) for k, v in conditions)]
    if sample is not None and sample < len(selected):
        chosen = sorted(random.Random(seed).sample(range(len(selected)), sample))
        selected = [selected[index] for index in chosen]
    return selected if limit is None else selected[:limit]


def _parse_filter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"filter {text!r} is not key=value", field="--filter")
    return key.strip(), value.strip()


def _matches(case: Case, key: str, wanted: str) -> bool:
    if key in ("tag", "tags"):
        tags = case.metadata["tags"] if "tags" in case.metadata else case.fields.get("tags")
        return wanted in _tag_list(tags)
    if key in case.metadata:
        return _as_text(case.metadata[key]) == wanted
    return key in case.fields and _as_text(case.fields[key]) == wanted


def _tag_list(tags: Any) -> list[str]:
    if isinstance(tags, str):  # "a, b" in CSV
        return [tag.strip() for tag in tags.split(",") if tag.strip()]
    if isinstance(tags, list | tuple | set | frozenset):
        return [_as_text(tag) for tag in tags]
    return [] if tags is None else [_as_text(tags)]


def _as_text(value: Any) -> str:
    # Filters come from the command line: compare as text, JSON-style for booleans and null.
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
