"""The viewer's reads of the run store: the runs list, the paged case table, one result.

All SQL behind the viewer's run pages lives here (route handlers hold none). The case table is
filtered, sorted and paginated in SQL, so a run of 10,000 cases opens as fast as one of ten.
Connections are per thread (route handlers run in a thread pool).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import annotations as annotation_store
from harness.store import ResultRow, ScoreRow, Store
from harness.viewer.runstats import FIELD_NAME, SLICE_TEXT, VERDICTS, slice_path

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+@-]{0,199}$")
SORTS = {"case": "r.case_id", "score": "r.score", "cost": "r.cost_usd", "latency": "r.latency_ms"}
PER_PAGE = 50
OUTPUT_SNIPPET = 160


class Database:
    """The store file, with one connection per thread; opening it applies any migrations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with Store.open(path, create=False):
            pass  # migrate once, up front (annotations table, case-table indexes)
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def store(self) -> Store:
        """A Store over this thread's connection (never close it: the connection is reused)."""
        return Store(self.conn(), self.path)


# --- the runs list ------------------------------------------------------------------------------
@dataclass
class RunItem:
    """One row of the runs list."""

    id: str
    suite: str
    status: str
    created_at: float
    finished_at: float | None
    models: list[str]
    results: int
    passed: int
    failed: int
    errors: int
    cost_usd: float | None
    git_commit: str | None
    git_dirty: bool | None

    @property
    def pass_rate(self) -> float | None:
        settled = self.passed + self.failed
        return self.passed / settled if settled else None

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.created_at


def suites(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT DISTINCT suite FROM runs ORDER BY suite")]


def list_runs(
    conn: sqlite3.Connection, *, suite: str | None = None, limit: int = 100, offset: int = 0
) -> list[RunItem]:
    """Runs newest first; counts come from the stored summary, else from the results."""
    where, args = ("WHERE suite = ?", [suite]) if suite else ("", [])
    rows = conn.execute(
        "SELECT id, suite, status, created_at, finished_at, manifest, summary FROM runs "
        f"{where} ORDER BY created_at DESC LIMIT ? OFFSET ?",
        [*args, limit, offset],
    ).fetchall()
    return [_run_item(conn, row) for row in rows]


def _run_item(conn: sqlite3.Connection, row: tuple[Any, ...]) -> RunItem:
    manifest = json.loads(row[5]) if row[5] else {}
    summary = json.loads(row[6]) if row[6] else None
    git = manifest.get("git") or {}
    models = [str(m.get("name") or m.get("id")) for m in manifest.get("models") or []]
    if summary and summary.get("models"):
        blocks = summary["models"].values()
        counts = [sum(int(b.get(k) or 0) for b in blocks) for k in ("passed", "failed", "errors")]
        costs = [b.get("cost_usd") for b in blocks]
        cost = None if any(c is None for c in costs) else float(sum(costs))
        results = int(summary.get("results") or sum(counts))
    else:
        counts, cost, results = _live_counts(conn, row[0])
    return RunItem(
        id=row[0],
        suite=row[1],
        status=row[2],
        created_at=row[3],
        finished_at=row[4],
        models=models,
        results=results,
        passed=counts[0],
        failed=counts[1],
        errors=counts[2],
        cost_usd=cost,
        git_commit=git.get("commit"),
        git_dirty=git.get("dirty"),
    )


def _live_counts(conn: sqlite3.Connection, run_id: str) -> tuple[list[int], float | None, int]:
    by_status = {"pass": 0, "fail": 0, "error": 0}
    cost, known, total = 0.0, 0, 0
    for status, count, cost_sum, cost_count in conn.execute(
        "SELECT status, count(*), sum(cost_usd), count(cost_usd) FROM results "
        "WHERE run_id = ? GROUP BY status",
        (run_id,),
    ):
        by_status[status] = count
        cost += cost_sum or 0.0
        known += cost_count
        total += count
    return (
        [by_status["pass"], by_status["fail"], by_status["error"]],
        (cost if known else None),
        total,
    )


def get_run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    """The run record (manifest and summary decoded), or None."""
    row = conn.execute(
        "SELECT id, suite, status, created_at, finished_at, manifest, summary FROM runs "
        "WHERE id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    return {
        "id": row[0],
        "suite": row[1],
        "status": row[2],
        "created_at": row[3],
        "finished_at": row[4],
        "manifest": json.loads(row[5]) if row[5] else {},
        "summary": json.loads(row[6]) if row[6] else None,
    }


# --- the case table -----------------------------------------------------------------------------
@dataclass
class CaseFilter:
    """The run page's query: filters, sort and page (validated by `from_query`)."""

    verdict: str | None = None
    scorer: str | None = None
    model: str | None = None
    slice_field: str | None = None
    slice_value: str | None = None
    text: str | None = None
    sort: str = "case"
    descending: bool = False
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def from_query(cls, query: dict[str, str]) -> CaseFilter:
        def text(name: str, limit: int = 500) -> str | None:
            value = (query.get(name) or "").strip()
            return value[:limit] or None

        verdict = text("verdict")
        sort = text("sort") or "case"
        field_name = text("by", 64)
        try:
            page = max(1, min(int(query.get("page") or 1), 1_000_000))
            per_page = max(1, min(int(query.get("per_page") or PER_PAGE), 500))
        except ValueError:
            page, per_page = 1, PER_PAGE
        return cls(
            verdict=verdict if verdict in VERDICTS else None,
            scorer=text("scorer"),
            model=text("model"),
            slice_field=field_name if field_name and FIELD_NAME.match(field_name) else None,
            slice_value=text("value"),
            text=text("q"),
            sort=sort if sort in SORTS else "case",
            descending=query.get("order") == "desc",
            page=page,
            per_page=per_page,
        )


@dataclass
class CaseRow:
    case_id: str
    model: str
    epoch: int
    status: str
    score: float | None
    latency_ms: float | None
    cost_usd: float | None
    output: str | None
    error: str | None
    failed_scorers: list[str]
    label: str | None = None


@dataclass
class CasePage:
    rows: list[CaseRow]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(run_id: str, query: CaseFilter) -> tuple[str, list[Any]]:
    clauses, args = ["r.run_id = ?"], [run_id]
    if query.verdict == "flaky":
        clauses.append(
            "(r.case_id, r.model) IN (SELECT case_id, model FROM results WHERE run_id = ? "
            "AND status != 'error' GROUP BY case_id, model HAVING count(DISTINCT status) > 1)"
        )
        args.append(run_id)
    elif query.verdict:
        clauses.append("r.status = ?")
        args.append(query.verdict)
    if query.model:
        clauses.append("r.model = ?")
        args.append(query.model)
    if query.scorer:
        clauses.append(
            "EXISTS (SELECT 1 FROM scores s WHERE s.run_id = r.run_id AND s.case_id = r.case_id "
            "AND s.model = r.model AND s.epoch = r.epoch AND s.scorer = ? AND s.status != 'pass')"
        )
        args.append(query.scorer)
    if query.slice_field and query.slice_value is not None:
        path = slice_path(query.slice_field)
        if query.slice_value == "(none)":
            clauses.append(
                "NOT EXISTS (SELECT 1 FROM json_each(r.case_data, ?) j WHERE j.type != 'null')"
            )
            args.append(path)
        else:
            clauses.append(
                f"EXISTS (SELECT 1 FROM json_each(r.case_data, ?) j WHERE {SLICE_TEXT} = ?)"
            )
            args += [path, query.slice_value]
    if query.text:
        clauses.append(
            "(r.case_id LIKE ? ESCAPE '\\' OR r.output LIKE ? ESCAPE '\\' "
            "OR r.case_data LIKE ? ESCAPE '\\')"
        )
        args += [_like(query.text)] * 3
    return " AND ".join(clauses), args


def case_page(conn: sqlite3.Connection, run_id: str, query: CaseFilter) -> CasePage:
    """One page of the run's results matching `query`, in the asked order."""
    where, args = _where(run_id, query)
    total = conn.execute(f"SELECT count(*) FROM results r WHERE {where}", args).fetchone()[0]
    direction = "DESC" if query.descending else "ASC"
    order = f"{SORTS[query.sort]} {direction}, r.case_id, r.model, r.epoch"
    if query.sort == "case":
        order = f"r.case_id {direction}, r.model, r.epoch"
    offset = (query.page - 1) * query.per_page
    # Sort and cut the page first; only its rows get snippets and their failed scorers.
    rows = conn.execute(
        "SELECT r.case_id, r.model, r.epoch, r.status, r.score, r.latency_ms, r.cost_usd, "
        f"substr(r.output, 1, {OUTPUT_SNIPPET + 1}), substr(r.error, 1, {OUTPUT_SNIPPET + 1}), "
        "(SELECT group_concat(s.scorer, char(10)) FROM scores s WHERE s.run_id = r.run_id "
        "AND s.case_id = r.case_id AND s.model = r.model AND s.epoch = r.epoch "
        "AND s.status != 'pass') "
        f"FROM (SELECT * FROM results r WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?) r "
        f"ORDER BY {order}",
        [*args, query.per_page, offset],
    ).fetchall()
    return CasePage(
        rows=[
            CaseRow(
                case_id=row[0],
                model=row[1],
                epoch=row[2],
                status=row[3],
                score=row[4],
                latency_ms=row[5],
                cost_usd=row[6],
                output=_clip(row[7]),
                error=_clip(row[8]),
                failed_scorers=row[9].split("\n") if row[9] else [],
            )
            for row in rows
        ],
        total=total,
        page=query.page,
        per_page=query.per_page,
    )


def attach_labels(store: Store, run_id: str, page: CasePage) -> CasePage:
    """Fill each row's current annotation label (correct / incorrect), if any."""
    current = annotation_store.latest(
        store, run_id, [(r.case_id, r.model, r.epoch) for r in page.rows]
    )
    for row in page.rows:
        note = current.get((row.case_id, row.model, row.epoch))
        row.label = note.label if note is not None else None
    return page


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= OUTPUT_SNIPPET:
        return text
    return text[:OUTPUT_SNIPPET] + "…"


# --- one result ---------------------------------------------------------------------------------
@dataclass
class Sibling:
    model: str
    epoch: int
    status: str


def get_result(
    conn: sqlite3.Connection, run_id: str, case_id: str, model: str, epoch: int
) -> ResultRow | None:
    """One stored result with its scores, or None."""
    row = conn.execute(
        "SELECT * FROM results WHERE run_id = ? AND case_id = ? AND model = ? AND epoch = ?",
        (run_id, case_id, model, epoch),
    ).fetchone()
    if row is None:
        return None
    scores = [
        ScoreRow(s[0], s[1], s[2], s[3] or "", json.loads(s[4]) if s[4] else None)
        for s in conn.execute(
            "SELECT scorer, status, value, reason, detail FROM scores WHERE run_id = ? "
            "AND case_id = ? AND model = ? AND epoch = ? ORDER BY rowid",
            (run_id, case_id, model, epoch),
        )
    ]
    return ResultRow.from_db(row, scores)


def siblings(conn: sqlite3.Connection, run_id: str, case_id: str) -> list[Sibling]:
    """Every (model, epoch) result of one case in a run."""
    return [
        Sibling(*row)
        for row in conn.execute(
            "SELECT model, epoch, status FROM results WHERE run_id = ? AND case_id = ? "
            "ORDER BY model, epoch",
            (run_id, case_id),
        )
    ]
