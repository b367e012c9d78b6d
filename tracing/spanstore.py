"""Persist finished spans in the `spans` table of a SQLite file (usually the harness run store).

`SpanStore` owns its own connection (WAL mode), creates its tables if missing and upgrades them
in `ensure_schema`, the one place that knows the table's integer schema version (kept in
`tracing_meta`). Writes are thread-safe: the batch span processor calls from its worker thread.
A process that writes the same file anyway can take the rows instead (`hand_rows_to`) and write
them in its own transactions (`insert_rows`), so that the file has one writer: `evals run`
writes a process's spans with its results.

Spans are accepted through the `FinishedSpan` protocol (which OpenTelemetry's `ReadableSpan`
satisfies), so this module needs only the OTel API; the SDK `SpanExporter` adapter around it
lives in `tracing.setup`.

Besides the raw span (ids, times, status, attributes, events, links as JSON), a few attributes
are copied into columns for fast queries: run and case ids, the OpenInference span kind, model,
tokens, cost and verdict. A trace belongs to one run and one case: `evals.run.id` and
`evals.case.id` set on any span of a trace (normally its root) are copied to all its spans.
Resource attributes are the same for every span of a process, so they are stored once in
`span_resources` and referenced by id.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from tracing.conventions import (
    EMBEDDING_MODEL_NAME,
    EVALS_CASE_ID,
    EVALS_COST_USD,
    EVALS_RUN_ID,
    EVALS_VERDICT,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    LLM_COST_TOTAL,
    LLM_MODEL_NAME,
    LLM_TOKEN_COUNT_COMPLETION,
    LLM_TOKEN_COUNT_PROMPT,
    OPENINFERENCE_SPAN_KIND,
)
from tracing.messages import to_json
from tracing.scrub import plain_attributes

SCHEMA_VERSION_KEY = "spans_schema_version"

# Append-only: entry i upgrades the tables from schema version i to i + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS span_resources (
            id INTEGER PRIMARY KEY,
            attributes TEXT NOT NULL UNIQUE
        )""",
        """CREATE TABLE IF NOT EXISTS spans (
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_span_id TEXT,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            start_ns INTEGER NOT NULL,
            end_ns INTEGER NOT NULL,
            status_code TEXT NOT NULL,
            status_message TEXT,
            attributes TEXT NOT NULL,
            events TEXT NOT NULL,
            links TEXT NOT NULL,
            resource_id INTEGER REFERENCES span_resources(id),
            scope TEXT,
            run_id TEXT,
            case_id TEXT,
            span_kind TEXT,
            model TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost_usd REAL,
            verdict TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS spans_span ON spans (span_id)",
        "CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id, start_ns)",
        "CREATE INDEX IF NOT EXISTS spans_run ON spans (run_id, start_ns)",
    ),
    # A span is found within its trace (spans_trace): an index of random span ids cost a
    # random page write per stored span.
    ("DROP INDEX IF EXISTS spans_span",),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_COLUMNS = (
    "trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, "
    "status_message, attributes, events, links, resource_id, scope, run_id, case_id, "
    "span_kind, model, input_tokens, output_tokens, cost_usd, verdict"
)
_ROW = f"({', '.join('?' * 22)})"
# Spans per write (one INSERT, its own transaction): each hold of the file's write lock stays
# short (see write and _write_rows). 256 x 22 columns is well under SQLite's 32,766 parameters.
TRANSACTION_SPANS = 256
_RUN_ID_AT, _CASE_ID_AT = 14, 15  # positions of run_id and case_id in a row
_Label = tuple[str | None, str | None, str]  # (run id, case id, trace id) for an UPDATE


@dataclass(frozen=True)
class SpanRows:
    """Rows of finished spans ready for the `spans` table, and the labels owed to spans of
    their traces stored earlier: what `insert_rows` writes."""

    rows: list[list[Any]]
    labels: list[_Label]


def insert_rows(conn: sqlite3.Connection, batch: SpanRows) -> None:
    """Insert `batch` through `conn`, within the caller's transaction if one is open (else each
    statement is its own): one statement per `TRANSACTION_SPANS` rows, then the labels."""
    rows = batch.rows
    for start in range(0, len(rows), TRANSACTION_SPANS):
        chunk = rows[start : start + TRANSACTION_SPANS]
        # One statement for many rows: one SQLite step, so the writing thread gives up the
        # GIL (and waits to get it back behind a busy event loop) once, not once a span.
        conn.execute(
            f"INSERT INTO spans ({_COLUMNS}) VALUES {','.join([_ROW] * len(chunk))}",
            [value for row in chunk for value in row],
        )
    for run_id, case_id, trace_id in batch.labels:
        conn.execute(
            "UPDATE spans SET run_id = coalesce(run_id, ?), case_id = coalesce(case_id, ?) "
            "WHERE trace_id = ? AND (run_id IS NULL OR case_id IS NULL)",
            (run_id, case_id, trace_id),
        )


class SpanStoreError(Exception):
    """The span store cannot be used (for example, its schema is newer than this code)."""


class SpanEvent(Protocol):
    """The parts of an OTel span event that are stored."""

    @property
    def name(self) -> str: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def attributes(self) -> Mapping[str, Any] | None: ...


class SpanLink(Protocol):
    """The parts of an OTel span link that are stored."""

    @property
    def context(self) -> SpanContext: ...
    @property
    def attributes(self) -> Mapping[str, Any] | None: ...


class HasAttributes(Protocol):
    """A resource or anything else carrying an attribute mapping."""

    @property
    def attributes(self) -> Mapping[str, Any]: ...


class HasName(Protocol):
    """An instrumentation scope."""

    @property
    def name(self) -> str: ...


class FinishedSpan(Protocol):
    """A finished span, as the OTel SDK's `ReadableSpan` presents it."""

    @property
    def name(self) -> str: ...
    @property
    def context(self) -> SpanContext | None: ...
    @property
    def parent(self) -> SpanContext | None: ...
    @property
    def kind(self) -> SpanKind: ...
    @property
    def start_time(self) -> int | None: ...
    @property
    def end_time(self) -> int | None: ...
    @property
    def status(self) -> Status: ...
    @property
    def attributes(self) -> Mapping[str, Any] | None: ...
    @property
    def events(self) -> Sequence[SpanEvent]: ...
    @property
    def links(self) -> Sequence[SpanLink]: ...
    @property
    def resource(self) -> HasAttributes: ...
    @property
    def instrumentation_scope(self) -> HasName | None: ...


def connect(path: str | Path, busy_timeout_ms: int = 10_000) -> sqlite3.Connection:
    """Open `path` in WAL mode, autocommit, usable from any thread (callers serialise use)."""
    conn = sqlite3.connect(
        str(path), timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """The span tables' schema version in this database (0 when they were never created)."""
    if not _has_table(conn, "tracing_meta"):
        return 0
    row = conn.execute(
        "SELECT value FROM tracing_meta WHERE key = ?", (SCHEMA_VERSION_KEY,)
    ).fetchone()
    return int(row[0]) if row else 0


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create or upgrade the span tables to `SCHEMA_VERSION`; the one place that migrates."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tracing_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        current = schema_version(conn)
        if current > SCHEMA_VERSION:
            raise SpanStoreError(
                f"span tables have schema version {current}, newer than this code's "
                f"{SCHEMA_VERSION}: upgrade the evals-harness package"
            )
        for version in range(current, SCHEMA_VERSION):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute(
            "INSERT OR REPLACE INTO tracing_meta (key, value) VALUES (?, ?)",
            (SCHEMA_VERSION_KEY, str(SCHEMA_VERSION)),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


_dumps = to_json  # compact, non-ASCII kept, anything unserialisable as its `str`


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


# Enum `.name` is a slow property; these are looked up for every span stored.
_NAMES: dict[Any, str] = {
    **{kind: kind.name for kind in SpanKind},
    **{code: code.name for code in StatusCode},
}


def _event(event: SpanEvent) -> dict[str, Any]:
    return {
        "name": event.name,
        "timestamp_ns": event.timestamp,
        "attributes": plain_attributes(event.attributes),
    }


def _link(link: SpanLink) -> dict[str, Any]:
    return {
        "trace_id": f"{link.context.trace_id:032x}",
        "span_id": f"{link.context.span_id:016x}",
        "attributes": plain_attributes(link.attributes),
    }


class SpanStore:
    """Thread-safe writer of finished spans into the `spans` table of one SQLite file."""

    def __init__(self, path: str | Path, *, trace_cache_size: int = 100_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = connect(self.path)
        ensure_schema(self._conn)
        self._resource_ids: dict[str, int] = {}
        self._resource_by_object: dict[int, tuple[HasAttributes, int]] = {}
        # trace id -> (run id, case id) of recent traces, to label spans that end after the
        # span carrying the ids was written (without a query per span).
        self._trace_ids: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        # Recent traces with spans already stored unlabelled: only these need an UPDATE once
        # their ids turn up (usually on the root, which ends last, often in a later batch).
        self._unlabelled: OrderedDict[str, None] = OrderedDict()
        self._trace_cache_size = trace_cache_size
        self._closed = False
        self._sink: Callable[[SpanRows], None] | None = None

    def write(self, spans: Sequence[FinishedSpan]) -> int:
        """Store `spans`, in writes of at most `TRANSACTION_SPANS`; returns how many were
        written. Short writes keep the file's write lock free for the run's own result commits
        (the same file, possibly from another process), which wait while it is held.

        With a writer handed the rows (`hand_rows_to`), the rows go to it instead, to be
        written in its own next transaction (`insert_rows`)."""
        rows = [self._row(span) for span in spans if span.context is not None]
        # Labelled over the whole batch, not per write: a trace's spans end close
        # together (its root last), so they are nearly always stored labelled, without the
        # UPDATE (index lookup, row pages rewritten) a trace split across writes costs.
        with self._lock:
            labels = self._label(rows)
            sink = self._sink
            if sink is not None and rows:
                sink(SpanRows(self._resolved(rows), labels))
                self._labelled(labels)  # as far as this store knows: the writer has them
                return len(rows)
        for start in range(0, len(rows), TRANSACTION_SPANS):
            self._write_rows(rows[start : start + TRANSACTION_SPANS], labels if start == 0 else [])
        return len(rows)

    def hand_rows_to(self, sink: Callable[[SpanRows], None] | None) -> None:
        """From now on give the rows of the spans to store to `sink` (called in the exporting
        thread) instead of writing them; None: write them again. A process that writes the
        same file anyway (the harness's result commits) writes them in its own transactions:
        one writer, no wait for each other's lock. Once this returns, no more rows reach the
        previous sink."""
        with self._lock:
            self._sink = sink

    def _write_rows(self, rows: list[list[Any]], labels: list[_Label]) -> None:
        """Insert `rows`, and label the spans stored earlier of the traces in `labels`,
        atomically.

        Usually (no earlier span to label) that is one `INSERT` statement in a transaction of
        its own: SQLite takes the file's write lock and lets it go within that one call, while
        this thread has given up the GIL. Inside `BEGIN ... COMMIT` the lock stayed held while
        the thread waited to get the GIL back after each statement, behind a busy event loop
        (up to the interpreter's switch interval each time), and the run's result commits
        waited for it (`benchmarks/README.md`: lock held p90 11.9 ms per 256 spans before)."""
        with self._lock:
            conn = self._conn
            resolved = self._resolved(rows)
            if not labels:  # at most `TRANSACTION_SPANS` rows: one statement
                insert_rows(conn, SpanRows(resolved, []))
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                insert_rows(conn, SpanRows(resolved, labels))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                    conn.execute("ROLLBACK")
                raise
            self._labelled(labels)  # not on failure, so the trace's next write tries again

    def _resolved(self, rows: list[list[Any]]) -> list[list[Any]]:
        """`rows` with their resources' ids (called under the lock). A resource new to this
        file is stored first, in its own statement: a row of it left without spans (if what
        follows fails) is harmless, and found again later."""
        if self._closed:
            raise SpanStoreError(f"span store {self.path} is closed")
        return [self._resolve_resource(self._conn, row) for row in rows]

    def _labelled(self, labels: list[_Label]) -> None:
        for run_id, case_id, trace_id in labels:
            if run_id is not None and case_id is not None:
                self._unlabelled.pop(trace_id, None)

    def close(self) -> None:
        """Close the connection; later writes raise `SpanStoreError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _row(self, span: FinishedSpan) -> list[Any]:
        context = span.context
        assert context is not None
        attributes = plain_attributes(span.attributes)
        parent = span.parent
        start = span.start_time or 0
        scope = span.instrumentation_scope
        status = span.status
        events = span.events
        links = span.links
        get = attributes.get
        model = get(GEN_AI_REQUEST_MODEL) or get(LLM_MODEL_NAME) or get(EMBEDDING_MODEL_NAME)
        return [
            f"{context.trace_id:032x}",
            f"{context.span_id:016x}",
            f"{parent.span_id:016x}" if parent is not None else None,
            span.name,
            _NAMES.get(span.kind) or span.kind.name,
            start,
            span.end_time or start,
            _NAMES.get(status.status_code) or status.status_code.name,
            status.description,
            _dumps(attributes),
            _dumps([_event(e) for e in events]) if events else "[]",
            _dumps([_link(link) for link in links]) if links else "[]",
            span.resource,  # replaced by its id under the lock
            scope.name if scope is not None else None,
            _str_or_none(get(EVALS_RUN_ID)),
            _str_or_none(get(EVALS_CASE_ID)),
            _str_or_none(get(OPENINFERENCE_SPAN_KIND)),
            None if model is None else str(model),
            _int_or_none(get(GEN_AI_USAGE_INPUT_TOKENS, get(LLM_TOKEN_COUNT_PROMPT))),
            _int_or_none(get(GEN_AI_USAGE_OUTPUT_TOKENS, get(LLM_TOKEN_COUNT_COMPLETION))),
            _float_or_none(get(EVALS_COST_USD, get(LLM_COST_TOTAL))),
            _str_or_none(get(EVALS_VERDICT)),
        ]

    def _resolve_resource(self, conn: sqlite3.Connection, row: list[Any]) -> list[Any]:
        resource: HasAttributes = row[12]
        # Cached by identity first (a process has one resource), then by content.
        cached = self._resource_by_object.get(id(resource))
        if cached is not None and cached[0] is resource:
            row[12] = cached[1]
            return row
        resource_json = _dumps(plain_attributes(resource.attributes))
        resource_id = self._resource_ids.get(resource_json)
        if resource_id is None:
            conn.execute(
                "INSERT OR IGNORE INTO span_resources (attributes) VALUES (?)", (resource_json,)
            )
            found = conn.execute(
                "SELECT id FROM span_resources WHERE attributes = ?", (resource_json,)
            ).fetchone()
            resource_id = int(found[0])
            self._resource_ids[resource_json] = resource_id
        self._resource_by_object[id(resource)] = (resource, resource_id)
        row[12] = resource_id
        return row

    def _label(self, rows: list[list[Any]]) -> list[_Label]:
        """Fill run/case ids from the trace cache (and teach it this batch's); return the
        labels owed to spans stored unlabelled before (traces in `_unlabelled` whose ids are
        known now), for an `UPDATE` with this batch."""
        cache = self._trace_ids
        unlabelled = self._unlabelled
        owed = [t for t in dict.fromkeys(row[0] for row in rows) if t in unlabelled]
        for row in rows:
            run_id, case_id = row[_RUN_ID_AT], row[_CASE_ID_AT]
            if run_id is None and case_id is None:
                continue
            trace_id = row[0]
            known_run, known_case = cache.get(trace_id, (None, None))
            # The first value seen for a trace wins, as in the UPDATE below (coalesce).
            merged = (known_run or run_id, known_case or case_id)
            if merged != (known_run, known_case):
                cache[trace_id] = merged
                cache.move_to_end(trace_id)
        for row in rows:
            if row[_RUN_ID_AT] is None or row[_CASE_ID_AT] is None:
                known = cache.get(row[0])
                if known is not None:
                    row[_RUN_ID_AT] = row[_RUN_ID_AT] or known[0]
                    row[_CASE_ID_AT] = row[_CASE_ID_AT] or known[1]
                if row[_RUN_ID_AT] is None or row[_CASE_ID_AT] is None:  # stored unlabelled
                    unlabelled[row[0]] = None
                    unlabelled.move_to_end(row[0])
        for recent in (cache, unlabelled):
            while len(recent) > self._trace_cache_size:
                recent.popitem(last=False)
        return [(*cache[t], t) for t in owed if t in cache]
