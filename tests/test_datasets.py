"""Tests for harness/datasets.py: formats, versions, ids, mapping, errors and selection."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.cases import Case
from harness.datasets import DatasetSpec, LoadedDataset, load_dataset, select_cases
from harness.errors import ConfigError

ROWS: list[dict[str, Any]] = [
    {"id": "fr", "country": "France", "expected": "Paris", "tags": "europe"},
    {"id": "jp", "country": "Japan", "expected": "Tokyo", "tags": "asia"},
    {"id": "pe", "country": "Peru", "expected": "Lima", "tags": "americas"},
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def load(value: str | dict[str, Any], base_dir: Path, **kwargs: Any) -> LoadedDataset:
    return load_dataset(DatasetSpec.from_value(value), base_dir, **kwargs)


def error_of(value: str | dict[str, Any], base_dir: Path, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(value, base_dir, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Undo the HF_* variables the loader sets, and keep the datasets cache inside tmp_path."""
    for name in ("HF_HUB_OFFLINE", "HF_UPDATE_DOWNLOAD_COUNTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


# --- formats and versions -----------------------------------------------------------------


def test_every_format_gives_the_same_cases_and_version(tmp_path: Path, hf_env: None) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "caps.jsonl", ROWS)
    (tmp_path / "caps.json").write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    write_csv(tmp_path / "caps.csv", ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "caps.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    write_jsonl(tmp_path / "hfdir" / "test.jsonl", ROWS)
    write_jsonl(tmp_path / "hfdir" / "train.jsonl", ROWS[:1])

    loaded = [
        load("caps.jsonl", tmp_path),
        load("caps.json", tmp_path),
        load("caps.csv", tmp_path),
        load("caps.parquet", tmp_path),
        load("saved", tmp_path),
        load({"hf": "hfdir", "split": "test"}, tmp_path),
        load({"path": "hfdir", "format": "hf"}, tmp_path),
    ]
    first = loaded[0]
    assert [c.id for c in first.cases] == ["fr", "jp", "pe"]
    assert first.cases[0] == Case(
        id="fr", fields=ROWS[0], expected="Paris", metadata={"tags": "europe"}
    )
    assert first.rows == 3
    assert len(first.version) == 12
    for other in loaded[1:]:
        assert other.cases == first.cases, other.source
        assert other.version == first.version, other.source
    assert loaded[0].source == str(tmp_path / "caps.jsonl")
    assert loaded[5].source == "hf:hfdir@test"


def test_local_hf_load_sets_offline_switches(tmp_path: Path, hf_env: None) -> None:
    import os

    write_jsonl(tmp_path / "hfdir" / "test.jsonl", ROWS)
    load({"hf": "hfdir"}, tmp_path)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_UPDATE_DOWNLOAD_COUNTS"] == "0"


def test_saved_dataset_dict_picks_the_split(tmp_path: Path, hf_env: None) -> None:
    import datasets

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:1]), "test": datasets.Dataset.from_list(ROWS)}
    ).save_to_disk(str(tmp_path / "dd"))
    assert load({"hf": "dd", "split": "train"}, tmp_path).rows == 1
    assert load({"hf": "dd"}, tmp_path).rows == 3
    message = error_of({"hf": "dd", "split": "dev"}, tmp_path)
    assert message.startswith(f"{tmp_path / 'dd'}: dataset.split: split 'dev' not found")


def test_hub_dataset_offline_is_a_clear_error(
    tmp_path: Path, hf_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    message = error_of({"hf": "no-such-owner/no-such-dataset"}, tmp_path, suite_path="s.yaml")
    assert message.startswith(
        "s.yaml: dataset.hf: hub dataset no-such-owner/no-such-dataset not available offline: "
    )


def test_json_numbers_stay_numbers_and_csv_values_stay_strings(tmp_path: Path) -> None:
    rows = [{"id": 1, "n": 2.5, "ok": True, "note": None}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    case = load("d.jsonl", tmp_path).cases[0]
    assert case.id == "1"
    assert case.fields == {"id": 1, "n": 2.5, "ok": True, "note": None}

    (tmp_path / "d.csv").write_text("id,n,ok,note\n1,2.5,true,\n", encoding="utf-8")
    case = load("d.csv", tmp_path).cases[0]
    assert case.fields == {"id": "1", "n": "2.5", "ok": "true", "note": None}


def test_csv_metadata_json_text_is_decoded(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text(
        'id,q,metadata\na,x,"{""level"": 2}"\nb,y,plain text\n', encoding="utf-8"
    )
    first, second = load("d.csv", tmp_path).cases
    assert first.metadata == {"level": 2}
    assert first.fields["metadata"] == {"level": 2}
    assert second.metadata == {}
    assert second.fields["metadata"] == "plain text"

    write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "q": "x", "metadata": {"level": 2}}])
    assert load("d.jsonl", tmp_path).cases[0] == first


def test_csv_multiline_value_and_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text('id,q\na,"two\nlines"\na,z\n', encoding="utf-8")
    assert error_of("d.csv", tmp_path) == (
        f"{tmp_path / 'd.csv'}:4: duplicate case id 'a' at rows 1 and 2"
    )


def test_version_ignores_key_order_and_whitespace(tmp_path: Path) -> None:
    base = load_dataset(DatasetSpec(path="a.jsonl"), write_jsonl(tmp_path / "a.jsonl", ROWS).parent)
    reordered = "\n\n".join(
        json.dumps(dict(reversed(list(row.items()))), indent=None, separators=(" , ", " : "))
        for row in ROWS
    )
    (tmp_path / "b.jsonl").write_text(reordered + "\n\n", encoding="utf-8")
    assert load("b.jsonl", tmp_path).version == base.version


def test_version_changes_when_one_value_changes(tmp_path: Path) -> None:
    base = load("a.jsonl", write_jsonl(tmp_path / "a.jsonl", ROWS).parent)
    changed = [dict(row) for row in ROWS]
    changed[2]["expected"] = "Cusco"
    write_jsonl(tmp_path / "b.jsonl", changed)
    assert load("b.jsonl", tmp_path).version != base.version
    # The mapping is part of the content: a different expected column is a different dataset.
    remapped = load({"path": "a.jsonl", "expected": "country"}, tmp_path)
    assert remapped.version != base.version


# --- ids and mapping ----------------------------------------------------------------------


def test_content_hash_ids_are_stable_and_format_independent(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [{k: v for k, v in r.items() if k != "id"} for r in ROWS]
    write_jsonl(tmp_path / "d.jsonl", rows)
    write_csv(tmp_path / "d.csv", rows)
    first = load("d.jsonl", tmp_path)
    ids = [case.id for case in first.cases]
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == 3
    assert [case.id for case in load("d.jsonl", tmp_path).cases] == ids
    assert [case.id for case in load("d.csv", tmp_path).cases] == ids
    # Pinned: the id is sha256 of the row's canonical JSON; it must not drift between releases.
    assert ids[0] == "4e11c48933a9"


def test_field_mapping(tmp_path: Path) -> None:
    rows = [
        {"qid": 7, "question": "2+2?", "answer": "4", "level": "easy", "src": "x"},
        {"qid": 8, "question": "3+3?", "answer": "6", "level": "hard", "src": "y"},
    ]
    write_jsonl(tmp_path / "d.jsonl", rows)
    spec = {
        "path": "d.jsonl",
        "id": "qid",
        "expected": "answer",
        "metadata": ["level", "src"],
        "input": ["question"],
    }
    cases = load(spec, tmp_path).cases
    assert cases[1] == Case(
        id="8", fields={"question": "3+3?"}, expected="6", metadata={"level": "hard", "src": "y"}
    )


def test_default_mapping_uses_columns_when_present(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"q": "a", "metadata": {"level": 1}, "tags": ["x", "y"]},
        {"id": "named", "q": "b", "expected": "B"},
    ]
    first, second = load("d.jsonl", write_jsonl(tmp_path / "d.jsonl", rows).parent).cases
    assert first.expected is None
    assert first.metadata == {"level": 1, "tags": ["x", "y"]}
    assert len(first.id) == 12
    assert second.id == "named"
    assert second.expected == "B"
    assert second.metadata == {}


# --- errors -------------------------------------------------------------------------------


def test_missing_file_names_suite_field_and_both_paths(tmp_path: Path) -> None:
    message = error_of("data/nope.jsonl", tmp_path, suite_path="evalsets/caps.yaml")
    resolved = (tmp_path / "data" / "nope.jsonl").resolve()
    assert message == (
        "evalsets/caps.yaml: dataset.path: dataset file not found: data/nope.jsonl "
        f"(resolved to {resolved})"
    )


def test_invalid_jsonl_line(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"id": "a"}\n\n{"id": \n', encoding="utf-8")
    message = error_of("d.jsonl", tmp_path)
    assert message.startswith(f"{tmp_path / 'd.jsonl'}:3: invalid JSON on line 3: ")


def test_invalid_json_file(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text('[\n  {"id": "a"},\n  {"id": }\n]', encoding="utf-8")
    assert error_of("d.json", tmp_path).startswith(f"{tmp_path / 'd.json'}:3: invalid JSON: ")
    (tmp_path / "o.json").write_text('{"id": "a"}', encoding="utf-8")
    assert error_of("o.json", tmp_path) == (
        f"{tmp_path / 'o.json'}: expected a JSON list of objects, got object"
    )


def test_row_that_is_not_an_object(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"id": "a"}\n["b"]\n', encoding="utf-8")
    assert error_of("d.jsonl", tmp_path) == (
        f"{tmp_path / 'd.jsonl'}:2: row 2 is not a JSON object (got array)"
    )
    (tmp_path / "d.json").write_text('[{"id": "a"}, 3]', encoding="utf-8")
    assert error_of("d.json", tmp_path) == (
        f"{tmp_path / 'd.json'}: row 2 is not a JSON object (got number)"
    )


def test_mapped_column_missing(tmp_path: Path) -> None:
    rows = [{"id": str(n), "answer": "x"} for n in range(6)] + [{"id": "6"}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    assert error_of({"path": "d.jsonl", "expected": "answer"}, tmp_path) == (
        f"{tmp_path / 'd.jsonl'}:7: column 'answer' (dataset.expected) missing in row 7"
    )
    assert "column 'q' (dataset.input) missing in row 1" in error_of(
        {"path": "d.jsonl", "input": ["q"]}, tmp_path
    )
    assert "column 'level' (dataset.metadata) missing in row 1" in error_of(
        {"path": "d.jsonl", "metadata": ["level"]}, tmp_path
    )
    assert "column 'qid' (dataset.id) missing in row 1" in error_of(
        {"path": "d.jsonl", "id": "qid"}, tmp_path
    )


def test_duplicate_ids(tmp_path: Path) -> None:
    rows = [{"id": f"c{n}"} for n in range(8)] + [{"id": "c2"}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    assert error_of("d.jsonl", tmp_path) == (
        f"{tmp_path / 'd.jsonl'}:9: duplicate case id 'c2' at rows 3 and 9"
    )
    # Identical rows without an id column hash to the same id: also a duplicate.
    write_jsonl(tmp_path / "e.jsonl", [{"q": "same"}, {"q": "same"}])
    assert "at rows 1 and 2" in error_of("e.jsonl", tmp_path)


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text("\n\n", encoding="utf-8")
    assert error_of("d.jsonl", tmp_path) == f"{tmp_path / 'd.jsonl'}: dataset is empty (no rows)"
    (tmp_path / "h.csv").write_text("id,q\n", encoding="utf-8")
    assert error_of("h.csv", tmp_path) == f"{tmp_path / 'h.csv'}: dataset is empty (no rows)"


def test_csv_without_header(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("", encoding="utf-8")
    assert error_of("d.csv", tmp_path) == f"{tmp_path / 'd.csv'}:1: CSV file has no header row"


def test_csv_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("id,q\na,b\nc,d,e\n", encoding="utf-8")
    assert error_of("d.csv", tmp_path) == (
        f"{tmp_path / 'd.csv'}:3: row 2 has 3 values but the header has 2 columns"
    )
    (tmp_path / "e.csv").write_text("id,q,id\na,b,c\n", encoding="utf-8")
    assert error_of("e.csv", tmp_path) == (
        f"{tmp_path / 'e.csv'}:1: duplicate column 'id' in CSV header"
    )


def test_bad_parquet_file(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").write_bytes(b"not parquet")
    assert error_of("d.parquet", tmp_path).startswith(
        f"{tmp_path / 'd.parquet'}: cannot read Parquet file: "
    )


def test_unknown_extension_and_file_only_options(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("x", encoding="utf-8")
    assert error_of("d.txt", tmp_path, suite_path="s.yaml").startswith(
        "s.yaml: dataset.format: cannot tell the format of d.txt from its extension"
    )
    write_jsonl(tmp_path / "d.data", ROWS)
    assert load({"path": "d.data", "format": "jsonl"}, tmp_path).rows == 3
    assert error_of({"path": "d.data", "format": "jsonl", "split": "train"}, tmp_path) == (
        "dataset.split: 'split' applies only to Hugging Face datasets, not jsonl files"
    )


def test_spec_validation_errors() -> None:
    cases = {
        "dataset: give exactly one of 'path' or 'hf'": {"path": "a.jsonl", "hf": "o/n"},
        "dataset.pth: Extra inputs are not permitted": {"pth": "a.jsonl"},
        "dataset.format: ": {"path": "a.x", "format": "xml"},
    }
    for expected, value in cases.items():
        with pytest.raises(ConfigError) as info:
            DatasetSpec.from_value(value)
        assert str(info.value).startswith(expected)
    assert DatasetSpec.from_value("a.jsonl") == DatasetSpec(path="a.jsonl")
    assert DatasetSpec.model_validate("a.jsonl").path == "a.jsonl"


def test_missing_local_hf_path(tmp_path: Path) -> None:
    message = error_of({"hf": "./nowhere"}, tmp_path, suite_path="s.yaml")
    assert message.startswith("s.yaml: dataset.hf: dataset not found: ./nowhere (resolved to ")


def test_import_is_lazy() -> None:
    code = (
        "import sys, harness.datasets; "
        "print(sorted(m for m in ('datasets', 'pyarrow') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- select_cases -------------------------------------------------------------------------


def make_cases(count: int) -> list[Case]:
    return [
        Case(
            id=f"c{n}",
            fields={"lang": "fr" if n % 2 else "en", "n": n, "done": n % 3 == 0},
            metadata={"tags": ["even"] if n % 2 == 0 else "odd, prime" if n in (3, 5, 7) else ""},
        )
        for n in range(count)
    ]


def test_filters_are_anded_and_match_metadata_or_fields() -> None:
    cases = make_cases(10)
    assert [c.id for c in select_cases(cases, filters=["lang=fr", "n=3"])] == ["c3"]
    assert [c.id for c in select_cases(cases, filters=["tag=prime"])] == ["c3", "c5", "c7"]
    assert len(select_cases(cases, filters=["tag=even"])) == 5
    assert [c.id for c in select_cases(cases, filters=["done=true", "lang=fr"])] == ["c3", "c9"]
    assert select_cases(cases, filters=["nosuchkey=1"]) == []
    with_meta = [Case(id="m", fields={"level": "1"}, metadata={"level": 2})]
    assert select_cases(with_meta, filters=["level=2"]) == with_meta


def test_filter_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        select_cases(make_cases(3), filters=["lang"])
    assert str(info.value) == "--filter: filter 'lang' is not key=value"


def test_sample_is_seeded_and_keeps_dataset_order() -> None:
    cases = make_cases(50)
    first = select_cases(cases, sample=10, seed=7)
    assert first == select_cases(cases, sample=10, seed=7)
    assert first != select_cases(cases, sample=10, seed=8)
    assert len(first) == 10
    assert [cases.index(c) for c in first] == sorted(cases.index(c) for c in first)
    assert select_cases(cases, sample=500) == cases


def test_limit_applies_after_filter_and_sample() -> None:
    cases = make_cases(50)
    assert [c.id for c in select_cases(cases, limit=3)] == ["c0", "c1", "c2"]
    assert [c.id for c in select_cases(cases, filters=["lang=fr"], limit=2)] == ["c1", "c3"]
    sampled = select_cases(cases, sample=10, seed=1)
    assert select_cases(cases, sample=10, seed=1, limit=4) == sampled[:4]
    with pytest.raises(ConfigError):
        select_cases(cases, limit=-1)
