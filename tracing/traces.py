"""Read traces back from the span store: list traces, fetch a trace or a span, build span trees.

Plain functions over a SQLite path or an open connection (the viewer passes its own). A database
whose span tables were never created reads as empty. Trace totals (cost, tokens) add up only
LLM and EMBEDDING spans, the calls that spend them, so a total also recorded on a parent span
is not counted twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict

from tracing.conventions import EVALS_EPOCH, EVALS_MODEL, KIND_EMBEDDING, KIND_LLM
from tracing.mirror import mirror
from tracing.spanstore import connect

Database = str | Path | sqlite3.Connection


class SpanRecord(TypedDict):
    """One stored span, with its JSON columns decoded."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    duration_ms: float
    status_code: str
    status_message: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    resource: dict[str, Any]
    scope: str | None
    run_id: str | None
    case_id: str | None
    span_kind: str | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    verdict: str | None


class SpanNode(SpanRecord):
    """A span with its children, ordered by start time."""

    children: list[SpanNode]


class TraceSummary(TypedDict):
    """One row of `list_traces`."""

    trace_id: str
    root_name: str | None
    run_id: str | None
    case_id: str | None
    model: str | None  # the root's `evals.model`, else the model of the trace's calls
    epoch: int | None
    verdict: str | None
    start_ns: int
    duration_ms: float
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    span_count: int
    error_count: int
    status: str


_SPAN_SELECT = (
    "SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, s.end_ns, "
    "s.status_code, s.status_message, s.attributes, s.events, s.links, r.attributes, s.scope, "
    "s.run_id, s.case_id, s.span_kind, s.model, s.input_tokens, s.output_tokens, s.cost_usd, "
    "s.verdict FROM spans s LEFT JOIN span_resources r ON r.id = s.resource_id"
)

_CALL_KINDS = f"('{KIND_LLM}', '{KIND_EMBEDDING}')"
_VERDICT = "coalesce(max(CASE WHEN parent_span_id IS NULL THEN verdict END), max(verdict))"
_TRACE_SELECT = f"""
SELECT trace_id,
       max(CASE WHEN parent_span_id IS NULL THEN name END),
       max(run_id),
       max(case_id),
       {_VERDICT},
       min(start_ns),
       (max(end_ns) - min(start_ns)) / 1e6,
       sum(CASE WHEN span_kind IN {_CALL_KINDS} THEN cost_usd END),
       sum(CASE WHEN span_kind IN {_CALL_KINDS} THEN input_tokens END),
       sum(CASE WHEN span_kind IN {_CALL_KINDS} THEN output_tokens END),
       count(*),
       sum(status_code = 'ERROR'),
       max(CASE WHEN parent_span_id IS NULL THEN status_code END),
       coalesce(max(CASE WHEN parent_span_id IS NULL
                         THEN json_extract(attributes, '$."{EVALS_MODEL}"') END), max(model)),
       max(CASE WHEN parent_span_id IS NULL
                THEN json_extract(attributes, '$."{EVALS_EPOCH}"') END)
FROM spans
"""


@contextmanager
def _open(db: Database) -> Iterator[sqlite3.Connection | None]:
    """Yield a connection (None when the span tables do not exist yet)."""
    if isinstance(db, sqlite3.Connection):
        yield db if _has_spans(db) else None
        return
    if not Path(db).exists():
        yield None
        return
    conn = connect(db)
    try:
        yield conn if _has_spans(conn) else None
    finally:
        conn.close()


def _has_spans(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
        "AND name IN ('spans', 'span_resources')"
    ).fetchone()
    return bool(found and found[0] == 2)


def _span(row: Sequence[Any]) -> SpanRecord:
    attributes = json.loads(row[9])
    # Our own spans are stored with their GenAI attributes only: their OpenInference twins
    # are derived here (`tracing.mirror`).
    attributes.update(mirror(attributes))
    return SpanRecord(
        trace_id=row[0],
        span_id=row[1],
        parent_span_id=row[2],
        name=row[3],
        kind=row[4],
        start_ns=row[5],
        end_ns=row[6],
        duration_ms=(row[6] - row[5]) / 1e6,
        status_code=row[7],
        status_message=row[8],
        attributes=attributes,
        events=json.loads(row[10]),
        links=json.loads(row[11]),
        resource=json.loads(row[12]) if row[12] else {},
        scope=row[13],
        run_id=row[14],
        case_id=row[15],
        span_kind=row[16],
        model=row[17],
        input_tokens=row[18],
        output_tokens=row[19],
        cost_usd=row[20],
        verdict=row[21],
    )


def _summary(row: Sequence[Any]) -> TraceSummary:
    input_tokens, output_tokens = row[8], row[9]
    total = None
    if input_tokens is not None or output_tokens is not None:
        total = (input_tokens or 0) + (output_tokens or 0)
    return TraceSummary(
        trace_id=row[0],
        root_name=row[1],
        run_id=row[2],
        case_id=row[3],
        model=None if row[13] is None else str(row[13]),
        epoch=row[14] if isinstance(row[14], int) else None,
        verdict=row[4],
        start_ns=row[5],
        duration_ms=row[6],
        cost_usd=row[7],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total,
        span_count=row[10],
        error_count=row[11] or 0,
        status=row[12] or "UNSET",
    )


def _trace_filter(
    run_id: str | None, case_id: str | None, verdict: str | None = None
) -> tuple[str, list[Any]]:
    """WHERE (on spans) and HAVING (on the grouped trace) clauses, with their parameters."""
    clauses, params = [], []
    if run_id is not None:
        clauses.append("run_id = ?")
        params.append(run_id)
    if case_id is not None:
        clauses.append("case_id = ?")
        params.append(case_id)
    sql = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    sql += " GROUP BY trace_id"
    if verdict is not None:
        sql += f" HAVING {_VERDICT} = ?"
        params.append(verdict)
    return sql, params


def list_traces(
    db: Database,
    run_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
    *,
    case_id: str | None = None,
    verdict: str | None = None,
    newest_first: bool = True,
) -> list[TraceSummary]:
    """One summary per trace (optionally of one run, case and/or verdict), paged by start
    time. The verdict is the root span's `evals.verdict` (pass, fail or error)."""
    grouped, params = _trace_filter(run_id, case_id, verdict)
    order = "DESC" if newest_first else "ASC"
    sql = f"{_TRACE_SELECT}{grouped} ORDER BY min(start_ns) {order} LIMIT ? OFFSET ?"
    with _open(db) as conn:
        if conn is None:
            return []
        rows = conn.execute(sql, [*params, limit, offset]).fetchall()
    return [_summary(row) for row in rows]


def count_traces(
    db: Database,
    run_id: str | None = None,
    *,
    case_id: str | None = None,
    verdict: str | None = None,
) -> int:
    """How many traces `list_traces` would page through."""
    grouped, params = _trace_filter(run_id, case_id, verdict)
    with _open(db) as conn:
        if conn is None:
            return 0
        row = conn.execute(
            f"SELECT count(*) FROM (SELECT trace_id FROM spans{grouped})", params
        ).fetchone()
    return int(row[0]) if row else 0


def find_trace_ids(db: Database, prefix: str, limit: int = 2) -> list[str]:
    """Up to `limit` stored trace ids starting with `prefix` (hex, any case): one id means
    the prefix is unique, none that it is unknown."""
    prefix = prefix.strip().lower()
    if not prefix or any(ch not in "0123456789abcdef" for ch in prefix):
        return []
    with _open(db) as conn:
        if conn is None:
            return []
        # A range over the (trace_id, start_ns) index instead of LIKE, which cannot use it.
        rows = conn.execute(
            "SELECT DISTINCT trace_id FROM spans WHERE trace_id >= ? AND trace_id < ? "
            "ORDER BY trace_id LIMIT ?",
            (prefix, prefix + "g", limit),
        ).fetchall()
    return [row[0] for row in rows]


def get_trace(db: Database, trace_id: str) -> list[SpanRecord]:
    """All spans of one trace, ordered by start time (empty when unknown)."""
    with _open(db) as conn:
        if conn is None:
            return []
        rows = conn.execute(
            f"{_SPAN_SELECT} WHERE s.trace_id = ? ORDER BY s.start_ns, s.rowid", (trace_id,)
        ).fetchall()
    return [_span(row) for row in rows]


def get_span(db: Database, trace_id: str, span_id: str) -> SpanRecord | None:
    """One span by its hex trace and span ids, or None (found through the trace's index)."""
    with _open(db) as conn:
        if conn is None:
            return None
        row = conn.execute(
            f"{_SPAN_SELECT} WHERE s.trace_id = ? AND s.span_id = ? LIMIT 1", (trace_id, span_id)
        ).fetchone()
    return _span(row) if row else None


def span_tree(spans: Sequence[SpanRecord]) -> list[SpanNode]:
    """Nest spans under their parents; roots (and orphans whose parent is missing) come back."""
    nodes: dict[str, SpanNode] = {
        span["span_id"]: SpanNode(**span, children=[])
        for span in sorted(spans, key=lambda s: s["start_ns"])
    }
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent_id = node["parent_span_id"]
        parent = nodes.get(parent_id) if parent_id is not None else None
        if parent is None:
            roots.append(node)
        else:
            parent["children"].append(node)
    return roots
