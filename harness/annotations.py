"""Human annotations of results: store them (append-only, latest wins) and export them as labels.

An annotation marks one result (run, case, model, epoch) `correct` or `incorrect` (or leaves
the label empty), tags its failure modes and carries a note, with its author and time. Every
save is a new row, so the history is kept; the latest row of a result is its current state.

`export_labels` writes the current labels of a run as CSV or JSONL with the columns
`evals judge calibrate --labels` reads (`case_id`, `label` as pass/fail, `model`, `epoch`),
plus tags, note, author, time and the case's input, expected value and output, so the same file
can seed a dataset.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, StoreError
from harness.store import Store

LABELS = ("correct", "incorrect")
MAX_TAGS = 20
MAX_TAG_CHARS = 64
MAX_NOTE_CHARS = 10_000
EXPORT_SUFFIXES = (".csv", ".jsonl")
_CALIBRATION_LABEL = {"correct": "pass", "incorrect": "fail"}

ResultKey = tuple[str, str, int]  # (case id, model, epoch) within one run


@dataclass
class Annotation:
    """One saved annotation of one result."""

    run_id: str
    case_id: str
    model: str
    epoch: int
    label: str | None
    tags: list[str] = field(default_factory=list)
    note: str = ""
    author: str = ""
    created_at: float = 0.0
    id: int | None = None

    @property
    def key(self) -> ResultKey:
        return (self.case_id, self.model, self.epoch)


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Stripped, de-duplicated tags in their first order; a ConfigError when too many or long."""
    cleaned: list[str] = []
    for tag in tags:
        text = " ".join(str(tag).split())
        if not text or text in cleaned:
            continue
        if len(text) > MAX_TAG_CHARS:
            raise ConfigError(f"a tag is at most {MAX_TAG_CHARS} characters: {text[:80]!r}")
        cleaned.append(text)
    if len(cleaned) > MAX_TAGS:
        raise ConfigError(f"at most {MAX_TAGS} tags per annotation")
    return cleaned


def add_annotation(store: Store, annotation: Annotation) -> Annotation:
    """Validate and save an annotation of a result the run holds; returns it with id and time."""
    if annotation.label not in (None, *LABELS):
        raise ConfigError(f"label must be one of {', '.join(LABELS)} or empty")
    if len(annotation.note) > MAX_NOTE_CHARS:
        raise ConfigError(f"a note is at most {MAX_NOTE_CHARS} characters")
    if not annotation.author.strip():
        raise ConfigError("an annotation needs an author")
    annotation.tags = clean_tags(annotation.tags)
    annotation.created_at = annotation.created_at or time.time()
    with store.transaction() as conn:
        exists = conn.execute(
            "SELECT 1 FROM results WHERE run_id = ? AND case_id = ? AND model = ? AND epoch = ?",
            (annotation.run_id, *annotation.key),
        ).fetchone()
        if exists is None:
            raise StoreError(
                f"run {annotation.run_id} has no result for case {annotation.case_id!r}, "
                f"model {annotation.model!r}, epoch {annotation.epoch}"
            )
        cursor = conn.execute(
            "INSERT INTO annotations (run_id, case_id, model, epoch, label, tags, note, author, "
            "created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                annotation.run_id,
                *annotation.key,
                annotation.label,
                json.dumps(annotation.tags, ensure_ascii=False),
                annotation.note,
                annotation.author,
                annotation.created_at,
            ),
        )
        annotation.id = cursor.lastrowid
    return annotation


_COLUMNS = "id, run_id, case_id, model, epoch, label, tags, note, author, created_at"


def _annotation(row: tuple[Any, ...]) -> Annotation:
    return Annotation(
        id=row[0],
        run_id=row[1],
        case_id=row[2],
        model=row[3],
        epoch=row[4],
        label=row[5],
        tags=list(json.loads(row[6] or "[]")),
        note=row[7] or "",
        author=row[8],
        created_at=row[9],
    )


def history(store: Store, run_id: str, key: ResultKey) -> list[Annotation]:
    """Every annotation of one result, newest first."""
    rows = store.conn.execute(
        f"SELECT {_COLUMNS} FROM annotations WHERE run_id = ? AND case_id = ? AND model = ? "
        "AND epoch = ? ORDER BY id DESC",
        (run_id, *key),
    ).fetchall()
    return [_annotation(row) for row in rows]


def latest(
    store: Store, run_id: str, keys: Iterable[ResultKey] | None = None
) -> dict[ResultKey, Annotation]:
    """The current annotation of each annotated result of a run (of `keys` only, when given)."""
    sql = (
        f"SELECT {_COLUMNS} FROM annotations WHERE id IN (SELECT max(id) FROM annotations "
        "WHERE run_id = ? GROUP BY case_id, model, epoch)"
    )
    wanted = None if keys is None else set(keys)
    if wanted is not None and not wanted:
        return {}
    rows = store.conn.execute(sql + " ORDER BY case_id, model, epoch", (run_id,)).fetchall()
    found = {a.key: a for a in map(_annotation, rows)}
    return found if wanted is None else {k: a for k, a in found.items() if k in wanted}


def known_tags(store: Store, limit: int = 200) -> list[str]:
    """Tags used in current annotations across runs, most used first (for suggestions)."""
    counts: Counter[str] = Counter()
    rows = store.conn.execute(
        "SELECT tags FROM annotations WHERE id IN (SELECT max(id) FROM annotations "
        "GROUP BY run_id, case_id, model, epoch) AND tags != '[]'"
    ).fetchall()
    for (tags,) in rows:
        counts.update(json.loads(tags))
    return [tag for tag, _ in counts.most_common(limit)]


def default_author() -> str:
    """`git config user.name`, else the login name, else "unknown"."""
    try:
        name = subprocess.run(
            ["git", "config", "user.name"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    if name:
        return name
    try:
        return getpass.getuser() or "unknown"
    except (OSError, KeyError):
        return "unknown"


def export_rows(
    store: Store, run_id: str, *, tag: str | None = None, include_unlabelled: bool = False
) -> list[dict[str, Any]]:
    """Current annotations of a run as label rows (calibration columns first)."""
    cases = {
        (row[0], row[1], row[2]): row[3:]
        for row in store.conn.execute(
            "SELECT case_id, model, epoch, case_data, output FROM results WHERE run_id = ?",
            (run_id,),
        )
    }
    rows = []
    for key, note in latest(store, run_id).items():
        if note.label is None and not include_unlabelled:
            continue
        if tag is not None and tag not in note.tags:
            continue
        case_data, output = cases.get(key, (None, None))
        data = json.loads(case_data) if case_data else {}
        rows.append(
            {
                "case_id": note.case_id,
                "label": _CALIBRATION_LABEL.get(note.label or "", ""),
                "model": note.model,
                "epoch": note.epoch,
                "tags": note.tags,
                "note": note.note,
                "author": note.author,
                "annotated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(note.created_at)),
                "input": data.get("fields"),
                "expected": data.get("expected"),
                "output": output,
            }
        )
    return rows


def render_export(rows: list[dict[str, Any]], suffix: str) -> str:
    """CSV (nested values as JSON text, tags joined by ", ") or JSONL text of export rows."""
    if suffix == ".jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else ["case_id", "label", "model", "epoch"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                key: ", ".join(value)
                if key == "tags"
                else json.dumps(value, ensure_ascii=False)
                if isinstance(value, dict | list)
                else value
                for key, value in row.items()
            }
        )
    return buffer.getvalue()


def export_labels(
    store: Store,
    run_ref: str,
    path: Path,
    *,
    tag: str | None = None,
    include_unlabelled: bool = False,
) -> tuple[str, int]:
    """Write a run's current annotations to `path` (.csv or .jsonl); (run id, rows written)."""
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ConfigError("export to a .csv or .jsonl file", path=path)
    run_id = str(store.get_run(run_ref)["id"])
    rows = export_rows(store, run_id, tag=tag, include_unlabelled=include_unlabelled)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_export(rows, suffix), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write labels: {exc.strerror or exc}", path=path) from None
    return run_id, len(rows)
