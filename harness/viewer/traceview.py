"""The trace page's data: a span waterfall (the span tree flattened, with timing) and span details.

The waterfall carries no attributes: it reads the span table's plain columns, and a span's
attributes, events and resource come one span at a time through `tracing.get_span`
(`span_detail`), so a trace of thousands of spans renders as a compact table.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import tracing
from tracing import conventions as names

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_INDENT = 31  # deeper spans are drawn at this indent (their depth is still shown)
_CALL_KINDS = (names.KIND_LLM, names.KIND_EMBEDDING)
_KIND_CLASSES = ("llm", "tool", "retriever", "embedding", "chain", "evaluator", "agent")


@dataclass
class WaterfallRow:
    """One span as a waterfall row: tree position, timing (fractions of the trace), usage."""

    span_id: str
    parent_id: str | None
    name: str
    kind: str
    depth: int
    children: int
    start_ms: float
    duration_ms: float
    offset: float  # start, as a fraction of the trace's duration
    width: float  # duration, as a fraction of the trace's duration
    status: str
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None

    @property
    def indent(self) -> int:
        return min(self.depth, MAX_INDENT)

    @property
    def kind_class(self) -> str:
        """The span kind as a CSS class name (a known kind, else `other`)."""
        kind = self.kind.lower()
        return kind if kind in _KIND_CLASSES else "other"

    @property
    def bar_width(self) -> float:
        """At least a sliver, so instant spans stay visible."""
        return max(self.width, 0.002)


@dataclass
class TracePage:
    """A trace's header figures and its waterfall rows in tree order."""

    trace_id: str
    root_name: str
    rows: list[WaterfallRow]
    duration_ms: float
    errors: int
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    run_id: str | None = None
    case_id: str | None = None
    model: str | None = None
    epoch: int | None = None
    verdict: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _total(values: list[Any]) -> Any:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


# The waterfall reads only the columns it shows: decoding every span's attributes (as
# tracing.get_trace does) costs about 0.1 ms a span, most of a 5,000-span page's time.
_ROOT_ATTRIBUTE = "CASE WHEN parent_span_id IS NULL THEN json_extract(attributes, ?) END"
_OUTLINE = (
    "SELECT span_id, parent_span_id, name, kind, span_kind, start_ns, end_ns, status_code, "
    "model, input_tokens, output_tokens, cost_usd, run_id, case_id, verdict, "
    f"{_ROOT_ATTRIBUTE}, {_ROOT_ATTRIBUTE} FROM spans WHERE trace_id = ? ORDER BY start_ns, rowid"
)
_ROOT_PATHS = (f'$."{names.EVALS_MODEL}"', f'$."{names.EVALS_EPOCH}"')


def _outline(conn: sqlite3.Connection, trace_id: str) -> list[tuple[Any, ...]]:
    if not tracing.find_trace_ids(conn, trace_id, limit=1):  # also: no span tables yet
        return []
    return conn.execute(_OUTLINE, (*_ROOT_PATHS, trace_id)).fetchall()


def load_trace(conn: sqlite3.Connection, trace_id: str) -> TracePage | None:
    """The waterfall of one trace, or None when the store holds no span of it."""
    spans = _outline(conn, trace_id)
    if not spans:
        return None
    start = min(s[5] for s in spans)
    span_ns = max(max(s[6] for s in spans) - start, 1)
    known = {s[0] for s in spans}
    children: dict[str | None, list[tuple[Any, ...]]] = {}
    for span in spans:  # already in start order; orphans (parent not stored) become roots
        parent = span[1] if span[1] in known else None
        children.setdefault(parent, []).append(span)
    rows: list[WaterfallRow] = []
    stack = [(span, 0) for span in reversed(children.get(None, []))]
    while stack:  # depth first, children in start order; no recursion for deep trees
        span, depth = stack.pop()
        kids = children.get(span[0], [])
        rows.append(
            WaterfallRow(
                span_id=span[0],
                parent_id=span[1],
                name=span[2],
                kind=span[4] or span[3],
                depth=depth,
                children=len(kids),
                start_ms=(span[5] - start) / 1e6,
                duration_ms=(span[6] - span[5]) / 1e6,
                offset=(span[5] - start) / span_ns,
                width=max(span[6] - span[5], 0) / span_ns,
                status=span[7],
                model=span[8],
                input_tokens=span[9],
                output_tokens=span[10],
                cost_usd=span[11],
            )
        )
        stack.extend((kid, depth + 1) for kid in reversed(kids))
    root = next((s for s in spans if s[1] is None), spans[0])
    calls = [s for s in spans if s[4] in _CALL_KINDS]
    epoch = root[16]
    return TracePage(
        trace_id=trace_id,
        root_name=root[2],
        rows=rows,
        duration_ms=span_ns / 1e6,
        errors=sum(1 for s in spans if s[7] == "ERROR"),
        cost_usd=_total([s[11] for s in calls]),
        input_tokens=_total([s[9] for s in calls]),
        output_tokens=_total([s[10] for s in calls]),
        run_id=root[12],
        case_id=root[13],
        model=_text(root[15]),
        epoch=epoch if isinstance(epoch, int) else None,
        verdict=root[14],
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def span_detail(conn: sqlite3.Connection, trace_id: str, span_id: str) -> dict[str, Any] | None:
    """One span's attributes, events, links and resource (JSON-ready), or None."""
    span = tracing.get_span(conn, trace_id, span_id)
    if span is None:
        return None
    return {
        "span_id": span["span_id"],
        "name": span["name"],
        "kind": span["kind"],
        "span_kind": span["span_kind"],
        "status": span["status_code"],
        "status_message": span["status_message"],
        "duration_ms": span["duration_ms"],
        "model": span["model"],
        "input_tokens": span["input_tokens"],
        "output_tokens": span["output_tokens"],
        "cost_usd": span["cost_usd"],
        "scope": span["scope"],
        "attributes": dict(sorted(span["attributes"].items())),
        "events": span["events"],
        "links": span["links"],
        "resource": span["resource"],
    }


def trace_exists(conn: sqlite3.Connection, trace_id: str) -> bool:
    """Does the store hold any span of this trace (a cheap index lookup)?"""
    return trace_id in tracing.find_trace_ids(conn, trace_id, limit=1)
