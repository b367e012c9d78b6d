"""Calibrate an LLM judge against human labels: agreement, TPR, FPR, Cohen's kappa, stored.

Labels come from a CSV or JSONL file with `case_id` and `label` (pass/fail, 1/0, true/false,
yes/no), optionally `model` and `epoch` to name one output of a run. They are matched to the
run's judge verdicts for one rubric and reported per judge model and rubric version; each
report is stored, so a gate can require `latest_kappa(...) >= k` before a judge may block CI.
Pass is the positive class: TPR is how often the judge passes what humans pass, FPR how often
it passes what humans fail. A judge error is never matched (it is counted apart).
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, StoreError
from harness.store import Store

TRUE_LABELS = {"pass", "passed", "1", "true", "yes", "y", "t"}
FALSE_LABELS = {"fail", "failed", "0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class Label:
    """One human verdict on a case (on one model's output and epoch, when named)."""

    case_id: str
    passed: bool
    model: str | None = None
    epoch: int | None = None
    line: int = 0


@dataclass(frozen=True)
class JudgeVerdict:
    """One judge score from a run, as stored."""

    case_id: str
    model: str
    epoch: int
    scorer: str
    status: str
    judge_model: str | None
    rubric_version: str | None


@dataclass
class CalibrationRecord:
    """Agreement of one judge model (at one rubric version) with human labels."""

    rubric: str
    rubric_version: str
    judge_model: str
    run_id: str | None
    labels: str
    n: int
    agreement: float | None
    tpr: float | None
    fpr: float | None
    kappa: float | None
    detail: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_label(value: Any) -> bool | None:
    """pass/fail, 1/0, true/false, yes/no (any case) -> bool; anything else -> None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in TRUE_LABELS else False if text in FALSE_LABELS else None


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read labels: {exc.strerror or exc}", path=path) from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        return [(index + 2, dict(row)) for index, row in enumerate(reader)]
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise ConfigError("labels must be a .csv or .jsonl file", path=path)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"invalid JSON: {exc}", path=path, line=number) from None
        if not isinstance(value, dict):
            raise ConfigError("each line must be a JSON object", path=path, line=number)
        rows.append((number, value))
    return rows


def load_labels(path: Path) -> list[Label]:
    """Read human labels; a bad or duplicate row is a ConfigError naming its line."""
    labels: list[Label] = []
    seen: dict[tuple[str, str | None, int | None], int] = {}
    for line, row in _rows(path):
        case_id = row.get("case_id", row.get("id"))
        if case_id in (None, ""):
            raise ConfigError("missing case_id", path=path, line=line, field="case_id")
        passed = parse_label(row.get("label"))
        if passed is None:
            raise ConfigError(
                f"label {row.get('label')!r} is not pass/fail, 1/0 or true/false",
                path=path,
                line=line,
                field="label",
            )
        model = row.get("model") or None
        epoch_value = row.get("epoch")
        try:
            epoch = None if epoch_value in (None, "") else int(epoch_value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"epoch {epoch_value!r} is not an integer", path=path, line=line, field="epoch"
            ) from None
        key = (str(case_id), None if model is None else str(model), epoch)
        if key in seen:
            raise ConfigError(
                f"duplicate label for {key} (first at line {seen[key]})", path=path, line=line
            )
        seen[key] = line
        labels.append(Label(key[0], passed, key[1], epoch, line))
    if not labels:
        raise ConfigError("no labels in the file", path=path)
    return labels


def judge_verdicts(store: Store, run_id: str, rubric: str) -> list[JudgeVerdict]:
    """The run's scores from judge scorers using `rubric` (errors included, status 'error')."""
    rows = store.conn.execute(
        "SELECT case_id, model, epoch, scorer, status, detail FROM scores WHERE run_id = ? "
        "ORDER BY case_id, model, epoch, scorer",
        (run_id,),
    ).fetchall()
    scorers: set[str] = set()
    parsed = []
    for case_id, model, epoch, scorer, status, detail in rows:
        judge = (json.loads(detail) if detail else {}).get("judge") or {}
        if judge.get("rubric") == rubric:
            scorers.add(scorer)
        parsed.append((case_id, model, epoch, scorer, status, judge))
    return [
        JudgeVerdict(c, m, e, s, st, j.get("model"), j.get("rubric_version"))
        for c, m, e, s, st, j in parsed
        if s in scorers
    ]


def _label_for(
    verdict: JudgeVerdict, index: dict[tuple[str, str | None, int | None], Label]
) -> Label | None:
    for key in (
        (verdict.case_id, verdict.model, verdict.epoch),
        (verdict.case_id, verdict.model, None),
        (verdict.case_id, None, verdict.epoch),
        (verdict.case_id, None, None),
    ):
        if key in index:
            return index[key]
    return None


def cohen_kappa(human: list[bool], judge: list[bool]) -> float | None:
    """Cohen's kappa (scikit-learn); None where it is undefined (one class only on both sides)."""
    if not human:
        return None
    from sklearn.metrics import cohen_kappa_score  # slow to import; only calibration needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kappa = float(cohen_kappa_score(human, judge, labels=[False, True]))
    return None if math.isnan(kappa) else kappa


def metrics(human: list[bool], judge: list[bool]) -> dict[str, Any]:
    """n, agreement, TPR, FPR, kappa and the confusion counts (pass is positive)."""
    pairs = list(zip(human, judge, strict=True))
    tp = sum(1 for h, j in pairs if h and j)
    fn = sum(1 for h, j in pairs if h and not j)
    fp = sum(1 for h, j in pairs if not h and j)
    tn = sum(1 for h, j in pairs if not h and not j)
    n = len(pairs)
    return {
        "n": n,
        "agreement": (tp + tn) / n if n else None,
        "tpr": tp / (tp + fn) if tp + fn else None,
        "fpr": fp / (fp + tn) if fp + tn else None,
        "kappa": cohen_kappa(human, judge),
        "confusion": {"tp": tp, "fn": fn, "fp": fp, "tn": tn},
    }


def calibrate(
    store: Store, run_ref: str, rubric: str, labels_path: Path, *, save: bool = True
) -> list[CalibrationRecord]:
    """Match a run's judge verdicts for `rubric` to human labels; one record per judge model
    and rubric version, stored unless `save` is false."""
    run_id = store.get_run(run_ref)["id"]
    labels = load_labels(labels_path)
    verdicts = judge_verdicts(store, run_id, rubric)
    if not verdicts:
        raise StoreError(f"run {run_id} holds no judge scores for rubric {rubric!r}")
    index = {(x.case_id, x.model, x.epoch): x for x in labels}
    models_of: dict[str, set[str]] = defaultdict(set)
    for verdict in verdicts:
        models_of[verdict.case_id].add(verdict.model)
    for label in labels:
        if label.model is None and len(models_of.get(label.case_id, ())) > 1:
            raise ConfigError(
                f"the label for case {label.case_id!r} names no model, but run {run_id} judged "
                f"several models' outputs for it ({', '.join(sorted(models_of[label.case_id]))})"
                "; add a model column",
                path=labels_path,
                line=label.line,
            )
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"human": [], "judge": [], "errors": 0, "unlabelled": 0}
    )
    used: set[Label] = set()
    errors_by_scorer: dict[str, int] = defaultdict(int)
    for verdict in verdicts:
        if verdict.status == "error" or verdict.judge_model is None:
            errors_by_scorer[verdict.scorer] += 1
            continue
        group = groups[(verdict.judge_model, verdict.rubric_version or "?")]
        matched = _label_for(verdict, index)
        if matched is None:
            group["unlabelled"] += 1
            continue
        used.add(matched)
        group["human"].append(matched.passed)
        group["judge"].append(verdict.status == "pass")
    records = []
    for (judge_model, version), group in sorted(groups.items()):
        figures = metrics(group["human"], group["judge"])
        records.append(
            CalibrationRecord(
                rubric=rubric,
                rubric_version=version,
                judge_model=judge_model,
                run_id=run_id,
                labels=str(labels_path),
                n=figures["n"],
                agreement=figures["agreement"],
                tpr=figures["tpr"],
                fpr=figures["fpr"],
                kappa=figures["kappa"],
                detail={
                    "confusion": figures["confusion"],
                    "unlabelled": group["unlabelled"],
                    "judge_errors": sum(errors_by_scorer.values()),
                    "unmatched_labels": len(labels) - len(used),
                },
                created_at=time.time(),
            )
        )
    if save:
        for record in records:
            record_calibration(store, record)
    return records


def record_calibration(store: Store, record: CalibrationRecord) -> None:
    """Append one calibration record to the store."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO judge_calibrations (rubric, rubric_version, judge_model, run_id, labels, "
            "n, agreement, tpr, fpr, kappa, detail, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.rubric,
                record.rubric_version,
                record.judge_model,
                record.run_id,
                record.labels,
                record.n,
                record.agreement,
                record.tpr,
                record.fpr,
                record.kappa,
                json.dumps(record.detail),
                record.created_at or time.time(),
            ),
        )


def calibrations(store: Store, rubric: str | None = None) -> list[CalibrationRecord]:
    """Stored calibration records, newest first."""
    query = (
        "SELECT rubric, rubric_version, judge_model, run_id, labels, n, agreement, tpr, "
        "fpr, kappa, detail, created_at FROM judge_calibrations"
    )
    args: tuple[Any, ...] = ()
    if rubric is not None:
        query, args = query + " WHERE rubric = ?", (rubric,)
    rows = store.conn.execute(query + " ORDER BY id DESC", args).fetchall()
    return [_record(row) for row in rows]


def _record(row: Any) -> CalibrationRecord:
    names = (
        "rubric",
        "rubric_version",
        "judge_model",
        "run_id",
        "labels",
        "n",
        "agreement",
        "tpr",
        "fpr",
        "kappa",
    )
    fields = dict(zip(names, row[:10], strict=True))
    return CalibrationRecord(**fields, detail=json.loads(row[10] or "{}"), created_at=row[11])


def latest_kappa(
    store: Store, rubric: str, judge_model: str, rubric_version: str | None = None
) -> float | None:
    """Cohen's kappa of the newest calibration of this judge on this rubric (at this version,
    when given); None when never calibrated or when kappa was undefined."""
    query = "SELECT kappa FROM judge_calibrations WHERE rubric = ? AND judge_model = ?"
    args: list[Any] = [rubric, judge_model]
    if rubric_version is not None:
        query += " AND rubric_version = ?"
        args.append(rubric_version)
    row = store.conn.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
    return None if row is None or row[0] is None else float(row[0])
