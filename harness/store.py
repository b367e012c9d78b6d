"""The run store: runs, results, scores and the response cache in one SQLite file (WAL)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import StoreError
from tracing.redact import needs_redaction, redact_value, refresh_secrets
from tracing.spanstore import SpanRows
from tracing.spanstore import insert_rows as insert_span_rows

STORE_DIRNAME = ".evals"
STORE_FILENAME = "evals.db"
LOCK_TIMEOUT_S = 30.0  # how long a write waits for another writer
# `results` columns in table order, with output, case_data and detail left out (NULL).
_SUMMARY_COLUMNS = (
    "run_id, case_id, model, epoch, status, score, NULL, error, error_kind, latency_ms, "
    "input_tokens, output_tokens, cost_usd, cached, attempts, trace_id, NULL, NULL, created_at"
)
_ROWS_PER_INSERT = 256  # x 19 columns stays under SQLite's 32,766 bound parameters

# Append-only: a migration is never edited once released; the index + 1 is the schema version.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        suite TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        finished_at REAL,
        manifest TEXT NOT NULL,
        summary TEXT
    );
    CREATE INDEX runs_suite ON runs(suite, created_at);
    CREATE TABLE results (
        run_id TEXT NOT NULL REFERENCES runs(id),
        case_id TEXT NOT NULL,
        model TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'error')),
        score REAL,
        output TEXT,
        error TEXT,
        error_kind TEXT,
        latency_ms REAL,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cost_usd REAL,
        cached INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER,
        trace_id TEXT,
        case_data TEXT NOT NULL,
        detail TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (run_id, case_id, model, epoch)
    );
    CREATE TABLE scores (
        run_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        model TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        scorer TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'error')),
        value REAL,
        reason TEXT,
        detail TEXT,
        PRIMARY KEY (run_id, case_id, model, epoch, scorer)
    );
    CREATE TABLE response_cache (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # 2: the version registry (harness/registry.py), label history, run lineage, releases.
    """
    CREATE TABLE versions (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        hash TEXT NOT NULL,
        content TEXT NOT NULL,
        first_seen REAL NOT NULL,
        git_commit TEXT,
        author TEXT,
        PRIMARY KEY (kind, name, version)
    );
    CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
    BEGIN SELECT RAISE(ABORT, 'registered versions are immutable'); END;
    CREATE TABLE labels (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        label TEXT NOT NULL,
        version TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (kind, name, label),
        FOREIGN KEY (kind, name, version) REFERENCES versions(kind, name, version)
    );
    CREATE TABLE label_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        label TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('promote', 'rollback', 'import')),
        from_version TEXT,
        to_version TEXT NOT NULL,
        author TEXT,
        at REAL NOT NULL
    );
    CREATE INDEX label_history_key ON label_history(kind, name, label, id);
    CREATE TRIGGER label_history_no_update BEFORE UPDATE ON label_history
    BEGIN SELECT RAISE(ABORT, 'label history is append-only'); END;
    CREATE TRIGGER label_history_no_delete BEFORE DELETE ON label_history
    BEGIN SELECT RAISE(ABORT, 'label history is append-only'); END;
    CREATE TABLE run_versions (
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        ref TEXT,
        PRIMARY KEY (run_id, kind, name)
    );
    CREATE INDEX run_versions_version ON run_versions(kind, name, version);
    CREATE TABLE releases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        run_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        author TEXT,
        record TEXT NOT NULL
    );
    CREATE INDEX releases_name ON releases(name, id);
    """,
    # 3: LLM-judge calibration against human labels, and pairwise comparisons (harness/calibrate.py,
    # harness/pairwise.py).
    """
    CREATE TABLE judge_calibrations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        rubric TEXT NOT NULL,
        rubric_version TEXT NOT NULL,
        judge_model TEXT NOT NULL,
        run_id TEXT,
        labels TEXT,
        n INTEGER NOT NULL,
        agreement REAL,
        tpr REAL,
        fpr REAL,
        kappa REAL,
        detail TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX judge_calibrations_key ON judge_calibrations(rubric, judge_model, id);
    CREATE TABLE pairwise_results (
        comparison_id TEXT NOT NULL,
        base_run TEXT NOT NULL,
        candidate_run TEXT NOT NULL,
        base_model TEXT NOT NULL,
        candidate_model TEXT NOT NULL,
        rubric TEXT NOT NULL,
        rubric_version TEXT NOT NULL,
        judge_model TEXT NOT NULL,
        case_id TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('base', 'candidate', 'tie', 'error')),
        first_winner TEXT,
        second_winner TEXT,
        followed_position INTEGER,
        detail TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (comparison_id, case_id, base_model, epoch)
    );
    CREATE INDEX pairwise_results_runs ON pairwise_results(base_run, candidate_run);
    """,
    # 4: human annotations of results (harness/annotations.py; append-only, the latest per
    # result wins), and indexes for the viewer's filtered, sorted, paginated case tables.
    """
    CREATE TABLE annotations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        model TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        label TEXT CHECK (label IN ('correct', 'incorrect')),
        tags TEXT NOT NULL DEFAULT '[]',
        note TEXT NOT NULL DEFAULT '',
        author TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX annotations_result ON annotations(run_id, case_id, model, epoch, id);
    CREATE INDEX results_run_status ON results(run_id, status);
    CREATE INDEX results_run_score ON results(run_id, score);
    CREATE INDEX results_run_latency ON results(run_id, latency_ms);
    CREATE INDEX results_run_cost ON results(run_id, cost_usd);
    """,
    # 5: superseded results. `results` holds the latest result per (run, case, model, epoch);
    # when a resume runs an errored item again, the earlier row and its scores move here
    # (same columns, plus when), so a run's history is kept and no reader double-counts.
    """
    CREATE TABLE superseded_results AS SELECT * FROM results WHERE 0;
    ALTER TABLE superseded_results ADD COLUMN superseded_at REAL;
    CREATE INDEX superseded_results_key ON superseded_results(run_id, case_id, model, epoch);
    CREATE TABLE superseded_scores AS SELECT * FROM scores WHERE 0;
    ALTER TABLE superseded_scores ADD COLUMN superseded_at REAL;
    CREATE INDEX superseded_scores_key ON superseded_scores(run_id, case_id, model, epoch);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class ScoreRow:
    scorer: str
    status: str
    value: float | None
    reason: str
    detail: dict[str, Any] | None = None


@dataclass
class ResultRow:
    """One (case, model, epoch) outcome, as stored."""

    run_id: str
    case_id: str
    model: str
    epoch: int
    status: str
    score: float | None
    output: str | None
    error: str | None
    error_kind: str | None
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    cached: bool
    attempts: int | None
    trace_id: str | None
    case_data: dict[str, Any]
    detail: dict[str, Any] | None
    scores: list[ScoreRow]
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["scores"] = [s.__dict__ for s in self.scores]
        return data

    @classmethod
    def from_db(cls, row: tuple[Any, ...], scores: list[ScoreRow]) -> ResultRow:
        """A `results` table row (SELECT * order) with its scores."""
        return cls(
            run_id=row[0],
            case_id=row[1],
            model=row[2],
            epoch=row[3],
            status=row[4],
            score=row[5],
            output=row[6],
            error=row[7],
            error_kind=row[8],
            latency_ms=row[9],
            input_tokens=row[10],
            output_tokens=row[11],
            cost_usd=row[12],
            cached=bool(row[13]),
            attempts=row[14],
            trace_id=row[15],
            case_data=_loads(row[16]) if row[16] is not None else {},
            detail=_loads(row[17]),
            created_at=row[18],
            scores=scores,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRow:
        fields = dict(data)
        fields["scores"] = [ScoreRow(**s) for s in fields.get("scores", [])]
        return cls(**fields)


def _result_values(r: ResultRow) -> tuple[Any, ...]:
    """A result as a `results` row (column order)."""
    return (
        r.run_id,
        r.case_id,
        r.model,
        r.epoch,
        r.status,
        r.score,
        r.output,
        r.error,
        r.error_kind,
        r.latency_ms,
        r.input_tokens,
        r.output_tokens,
        r.cost_usd,
        int(r.cached),
        r.attempts,
        r.trace_id,
        _dumps(r.case_data),
        _dumps(r.detail),
        r.created_at or time.time(),
    )


def _score_values(r: ResultRow) -> list[tuple[Any, ...]]:
    """A result's scores as `scores` rows (column order)."""
    return [
        (r.run_id, r.case_id, r.model, r.epoch, s.scorer, s.status, s.value, s.reason,
         _dumps(s.detail))
        for s in r.scores
    ]  # fmt: skip


def _score_row(row: tuple[Any, ...]) -> ScoreRow:
    """A score from its stored (scorer, status, value, reason, detail)."""
    return ScoreRow(row[0], row[1], row[2], row[3] or "", _loads(row[4]))


# The fields of a result and of a score that may hold text from a model, a user or a dataset.
_RESULT_TEXT = ("output", "error", "case_data", "detail")
_SCORE_TEXT = ("reason", "detail")


def _redacted(result: ResultRow) -> ResultRow:
    """A copy of `result` with secrets redacted from its text and JSON fields."""
    return replace(
        result,
        **{name: redact_value(getattr(result, name)) for name in _RESULT_TEXT},
        scores=[
            replace(s, **{name: redact_value(getattr(s, name)) for name in _SCORE_TEXT})
            for s in result.scores
        ],
    )


def _texts(results: list[ResultRow]) -> Iterator[Any]:
    """Every value of `results` that `_redacted` redacts."""
    for r in results:
        for name in _RESULT_TEXT:
            yield getattr(r, name)
        for s in r.scores:
            for name in _SCORE_TEXT:
                yield getattr(s, name)


def default_store_path(cwd: Path | None = None) -> Path:
    """`$EVALS_HOME/evals.db`, else `.evals/evals.db` in the working directory."""
    home = os.environ.get("EVALS_HOME")
    base = Path(home) if home else (cwd or Path.cwd()) / STORE_DIRNAME
    return base / STORE_FILENAME


# `json.dumps(value, ensure_ascii=False, default=str)`, without building an encoder per call.
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _dumps(value: Any) -> str | None:
    return None if value is None else _encode(value)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. The switch ignores the busy timeout while another process is creating
    the same new file, so retry briefly instead of failing."""
    for _ in range(100):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.05)
    conn.execute("PRAGMA journal_mode=WAL")


# The stored (case, model, epoch) items of a run among up to `_CASES_PER_QUERY` case ids (the
# rest NULL, which matches nothing), by the results table's primary key.
_CASES_PER_QUERY = 64
_STORED_CASES = (
    "SELECT case_id, model, epoch FROM results WHERE run_id = ? AND case_id IN ("
    + ",".join("?" * _CASES_PER_QUERY)
    + ")"
)


class Store:
    """One SQLite file. Open with `Store.open(path)`; creating it is explicit (`create=True`)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._pending_results: list[ResultRow] = []
        self._pending_cache: dict[str, tuple[str, str, str, float]] = {}
        # Entries handed over (`take_pending`) and not yet committed.
        self._writing_cache: dict[str, tuple[str, str, str, float]] = {}
        # Rows of this process's finished spans, handed over by its span exporter's thread
        # (`tracing.TracingHandle.hand_span_rows_to`), written with the next results.
        self._pending_spans: list[SpanRows] = []
        self._spans_lock = threading.Lock()
        self.on_span_rows: Callable[[], None] | None = None  # told when span rows arrive

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Store:
        """Open (and migrate) the store; a missing file is created only when `create`."""
        refresh_secrets()  # the secret env values results are redacted of (see `flush`)
        if not path.exists():
            if not create:
                raise StoreError(f"no run store at {path} (run `evals run` first, or pass --store)")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                path, timeout=LOCK_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(conn, path)
            store._migrate()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StoreError(
                    f"the run store {path} is busy ({exc}): another evals "
                    "process holds it; try again when it has finished"
                ) from None
            raise StoreError(
                f"the run store {path} is not a readable SQLite database ({exc}); move it aside "
                f"(mv {path} {path}.bad) or pass --store PATH to use another"
            ) from None
        return store

    def close(self) -> None:
        self.flush()
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the run store {self.path} has schema version {version}, newer than this "
                f"harness understands ({SCHEMA_VERSION}); upgrade evals-harness"
            )
        for index in range(version, SCHEMA_VERSION):
            # One script, one transaction: a migration applies whole or not at all.
            try:
                self.conn.executescript(
                    f"BEGIN IMMEDIATE;{MIGRATIONS[index]};PRAGMA user_version = {index + 1};COMMIT;"
                )
            except sqlite3.Error:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                # Another process opening the same new store applied it while we waited for
                # the write lock: that is success, not a corrupt store.
                if self.conn.execute("PRAGMA user_version").fetchone()[0] > index:
                    continue
                raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- runs -----------------------------------------------------------------------------
    def create_run(self, run_id: str, suite: str, manifest: dict[str, Any]) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO runs (id, suite, status, created_at, manifest) VALUES (?,?,?,?,?)",
                (run_id, suite, "running", time.time(), _dumps(manifest)),
            )

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        summary: dict[str, Any] | None = None,
        manifest: dict[str, Any] | None = None,
        finished: bool = False,
    ) -> None:
        sets: list[str] = []
        args: list[Any] = []
        if status is not None:
            sets.append("status = ?")
            args.append(status)
        if summary is not None:
            sets.append("summary = ?")
            args.append(_dumps(summary))
        if manifest is not None:
            sets.append("manifest = ?")
            args.append(_dumps(manifest))
        if finished:
            sets.append("finished_at = ?")
            args.append(time.time())
        if not sets:
            return
        with self.transaction():
            self.conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, run_id))

    def get_run(self, ref: str) -> dict[str, Any]:
        """A run by id, unique id prefix, or 'last'."""
        if ref == "last":
            row = self.conn.execute(
                "SELECT * FROM runs ORDER BY created_at DESC LIMIT 1"
            ).fetchone()
            if row is None:
                raise StoreError("the store holds no runs yet")
            return self._run_dict(row)
        rows = self.conn.execute(
            "SELECT * FROM runs WHERE id = ? OR id LIKE ? ESCAPE '\\' "
            "ORDER BY created_at DESC LIMIT 2",
            (ref, ref.replace("%", "").replace("_", r"\_") + "%"),
        ).fetchall()
        exact = [r for r in rows if r[0] == ref]
        if exact:
            return self._run_dict(exact[0])
        if not rows:
            raise StoreError(f"no run {ref!r} in {self.path}")
        if len(rows) > 1:
            raise StoreError(f"run id prefix {ref!r} is ambiguous; give more characters")
        return self._run_dict(rows[0])

    def list_runs(self, *, suite: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = "SELECT * FROM runs"
        args: list[Any] = []
        if suite:
            query += " WHERE suite = ?"
            args.append(suite)
        query += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [self._run_dict(r) for r in self.conn.execute(query, args).fetchall()]

    @staticmethod
    def _run_dict(row: tuple[Any, ...]) -> dict[str, Any]:
        return {
            "id": row[0],
            "suite": row[1],
            "status": row[2],
            "created_at": row[3],
            "finished_at": row[4],
            "manifest": _loads(row[5]),
            "summary": _loads(row[6]),
        }

    # --- results --------------------------------------------------------------------------
    def add_result(self, result: ResultRow) -> None:
        """Buffer a result; `flush` writes buffered results in one transaction."""
        self._pending_results.append(result)

    def flush(self) -> int:
        """Write buffered results, cache entries and span rows atomically. Returns results
        written."""
        return self.write(*self._take(), self.take_span_rows())

    def add_span_rows(self, batch: SpanRows) -> None:
        """Buffer rows of finished spans (from any thread) for the next write: the process's
        one writer writes its spans too, without waiting for another's lock on the file."""
        with self._spans_lock:
            self._pending_spans.append(batch)
        notify = self.on_span_rows
        if notify is not None:
            notify()

    def take_span_rows(self) -> list[SpanRows]:
        """Hand the buffered span rows over to be written by `write`."""
        with self._spans_lock:
            batches, self._pending_spans = self._pending_spans, []
        return batches

    def take_pending(self) -> tuple[list[ResultRow], dict[str, tuple[str, str, str, float]]]:
        """Hand the buffered results and cache entries over to be written by `write` later
        (`harness.committer` tries again while another writer holds the lock); `cache_get`
        still sees the entries until `written` says they are committed."""
        results, cache = self._take()
        self._writing_cache.update(cache)
        return results, cache

    def _take(self) -> tuple[list[ResultRow], dict[str, tuple[str, str, str, float]]]:
        """Empty the buffer. No secret reaches the store: results and scores leave it with
        API-key patterns and the values of secret-named environment variables redacted
        (`tracing.redact`), dataset content included; once, however often a write is tried."""
        results, cache = self._pending_results, self._pending_cache
        self._pending_results, self._pending_cache = [], {}
        if needs_redaction(_texts(results)):  # one scan of the batch: usually none
            results = [_redacted(r) for r in results]
        return results, cache

    def written(self, cache: dict[str, tuple[str, str, str, float]]) -> None:
        """These cache entries (from `take_pending`) are committed, or were dropped with a
        failed commit: `cache_get` reads them from the table from now on."""
        for key in cache:
            self._writing_cache.pop(key, None)

    def has_pending(self) -> bool:
        """Results or cache entries are buffered, not yet handed over or written."""
        return bool(self._pending_results or self._pending_cache)

    def write(
        self,
        results: list[ResultRow],
        cache: dict[str, tuple[str, str, str, float]],
        spans: list[SpanRows] | None = None,
    ) -> int:
        """Write results and cache entries taken from the buffer (`take_pending`, already
        redacted), and span rows (`take_span_rows`, scrubbed by the span exporter), in one
        transaction. Returns results written."""
        if not results and not cache and not spans:
            return 0
        with self.transaction():
            if results:
                self._supersede([(r.run_id, r.case_id, r.model, r.epoch) for r in results])
                self._insert("results", 19, [_result_values(r) for r in results])
                scores = [values for r in results for values in _score_values(r)]
                self._insert("scores", 9, scores)
            if cache:
                self._insert("response_cache", 4, list(cache.values()))
            for batch in spans or ():
                insert_span_rows(self.conn, batch)
        return len(results)

    def _insert(self, table: str, width: int, rows: list[tuple[Any, ...]]) -> None:
        """INSERT OR REPLACE rows, many per statement: one SQLite step per statement, so the
        writing thread hands the GIL back and forth once, not once per row (a thread waiting
        to get it back waits up to the interpreter's switch interval behind the event loop)."""
        one = "(" + ",".join("?" * width) + ")"
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            values = ",".join([one] * len(chunk))
            self.conn.execute(
                f"INSERT OR REPLACE INTO {table} VALUES {values}",
                [value for row in chunk for value in row],
            )

    def _supersede(self, keys: list[tuple[str, str, str, int]]) -> None:
        """Move the stored results (and scores) of these items to the superseded tables, so
        the results about to be written are the only current ones. Nothing is deleted."""
        stored = self._stored_keys(keys)
        keys = [key for key in keys if key in stored]  # usually none: a new result
        if not keys:
            return
        now = time.time()
        where = "WHERE run_id = ? AND case_id = ? AND model = ? AND epoch = ?"
        self.conn.executemany(
            f"INSERT INTO superseded_results SELECT *, ? FROM results {where}",
            [(now, *key) for key in keys],
        )
        self.conn.executemany(
            f"INSERT INTO superseded_scores SELECT *, ? FROM scores {where}",
            [(now, *key) for key in keys],
        )
        # A retry may have other scorers' rows than the attempt it replaces (none after a
        # provider error): the old ones were copied above and must not stay current.
        self.conn.executemany(f"DELETE FROM scores {where}", keys)

    def _stored_keys(self, keys: list[tuple[str, str, str, int]]) -> set[tuple[str, str, str, int]]:
        """Those of `keys` that have a result stored (scores are only ever stored with their
        result): one query per run and `_CASES_PER_QUERY` case ids, not three per key."""
        wanted = set(keys)
        case_ids: dict[str, dict[str, None]] = {}
        for run_id, case_id, _, _ in keys:
            case_ids.setdefault(run_id, {})[case_id] = None
        stored: set[tuple[str, str, str, int]] = set()
        for run_id, ids in case_ids.items():
            listed = list(ids)
            for start in range(0, len(listed), _CASES_PER_QUERY):
                chunk = listed[start : start + _CASES_PER_QUERY]
                padded = chunk + [None] * (_CASES_PER_QUERY - len(chunk))  # one statement
                for case_id, model, epoch in self.conn.execute(_STORED_CASES, (run_id, *padded)):
                    key = (run_id, case_id, model, epoch)
                    if key in wanted:
                        stored.add(key)
        return stored

    def result_counts(self, run_id: str, *, since: float | None = None) -> dict[str, Any]:
        """Results of a run so far by status, plus cached count and cost (for progress);
        `since`: only results created from then on (this session of a resumed run)."""
        counts: dict[str, Any] = {"cached": 0, "cost": 0.0}
        query = "SELECT status, COUNT(*), SUM(cached), SUM(cost_usd) FROM results WHERE run_id = ?"
        args: list[Any] = [run_id]
        if since is not None:
            query += " AND created_at >= ?"
            args.append(since)
        for status, count, cached, cost in self.conn.execute(query + " GROUP BY status", args):
            counts[status] = count
            counts["cached"] += cached or 0
            counts["cost"] += cost or 0.0
        return counts

    def completed_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        """(case_id, model, epoch) of a run's pass and fail results: what a resume skips (an
        errored item is run again)."""
        rows = self.conn.execute(
            "SELECT case_id, model, epoch FROM results WHERE run_id = ? AND status != 'error'",
            (run_id,),
        )
        return {(r[0], r[1], r[2]) for r in rows}

    def results(self, run_id: str, *, for_summary: bool = False) -> list[ResultRow]:
        """Every result of a run, with its scores, in a stable order. `for_summary`: without
        the case data, result detail and output (a summary reads none of them; decoding the
        case JSON alone is about half the time of this read)."""
        scores: dict[tuple[str, str, int], list[ScoreRow]] = {}
        for row in self.conn.execute(
            "SELECT case_id, model, epoch, scorer, status, value, reason, detail FROM scores "
            "WHERE run_id = ? ORDER BY rowid",
            (run_id,),
        ):
            scores.setdefault((row[0], row[1], row[2]), []).append(_score_row(row[3:]))
        out = []
        columns = _SUMMARY_COLUMNS if for_summary else "*"
        for row in self.conn.execute(
            f"SELECT {columns} FROM results WHERE run_id = ? ORDER BY model, epoch, case_id",
            (run_id,),
        ):
            out.append(ResultRow.from_db(row, scores.get((row[1], row[2], row[3]), [])))
        return out

    def superseded(self, run_id: str) -> list[tuple[ResultRow, float]]:
        """A run's superseded results (earlier attempts a resume ran again), each with its
        scores and when it was superseded, oldest first."""
        scores: dict[tuple[str, str, int, float], list[ScoreRow]] = {}
        for row in self.conn.execute(
            "SELECT case_id, model, epoch, superseded_at, scorer, status, value, reason, detail "
            "FROM superseded_scores WHERE run_id = ? ORDER BY rowid",
            (run_id,),
        ):
            scores.setdefault(row[:4], []).append(_score_row(row[4:]))
        out = []
        for row in self.conn.execute(
            "SELECT * FROM superseded_results WHERE run_id = ? ORDER BY superseded_at, rowid",
            (run_id,),
        ):
            at = row[-1]
            out.append(
                (ResultRow.from_db(row[:-1], scores.get((row[1], row[2], row[3], at), [])), at)
            )
        return out

    def import_run(
        self,
        run: dict[str, Any],
        results: Iterable[ResultRow],
        superseded: Iterable[tuple[ResultRow, float]] = (),
    ) -> None:
        """Insert a whole run (from a run file) atomically; refuses an id already present.
        `superseded`: its earlier attempts, with when each was superseded (`superseded`)."""
        earlier = [(_redacted(r), at) for r, at in superseded]
        with self.transaction():
            exists = self.conn.execute("SELECT 1 FROM runs WHERE id = ?", (run["id"],)).fetchone()
            if exists:
                raise StoreError(f"run {run['id']} is already in {self.path}")
            self.conn.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?)",
                (
                    run["id"],
                    run["suite"],
                    run["status"],
                    run["created_at"],
                    run.get("finished_at"),
                    _dumps(run["manifest"]),
                    _dumps(run.get("summary")),
                ),
            )
            self._insert("superseded_results", 20, [(*_result_values(r), at) for r, at in earlier])
            self._insert(
                "superseded_scores",
                10,
                [(*values, at) for r, at in earlier for values in _score_values(r)],
            )
        for result in results:
            self.add_result(result)
        self.flush()

    # --- response cache -------------------------------------------------------------------
    def cache_get(self, key: str) -> dict[str, Any] | None:
        pending = self._pending_cache.get(key) or self._writing_cache.get(key)
        if pending is not None:
            return dict(json.loads(pending[2]))
        row = self.conn.execute(
            "SELECT payload FROM response_cache WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def cache_put(self, key: str, model: str, payload: dict[str, Any]) -> None:
        """Buffer a response for the cache; one that holds a secret is not cached (a cached
        answer replays verbatim, so it cannot be stored redacted)."""
        if needs_redaction((payload,)) and redact_value(payload) != payload:
            return
        text = json.dumps(payload, ensure_ascii=False)
        self._pending_cache[key] = (key, model, text, time.time())
