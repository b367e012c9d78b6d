"""Measure span throughput into the SQLite span store: 100,000 spans with attributes.

Run from the repository root: `.venv/bin/python benchmarks/bench_tracing.py [--spans N]`.
Prints the time to create the spans (what the traced code pays), the time until all of them are
in SQLite, spans per second end to end, CPU time per span (less sensitive than wall time to
other load on a shared machine), drops, and the store's size. The spans are realistic, not
minimal: LLM spans carry their messages in both conventions (about 1.5 KB of attributes).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracing
from tracing import conventions as c

MESSAGES = [
    {"role": "system", "content": "Answer with the city name only."},
    {"role": "user", "content": "What is the capital of France? " * 4},
]


def emit(handle: tracing.TracingHandle, spans: int) -> None:
    """Cases of five spans each: a CHAIN root, LLM, RETRIEVER, EVALUATOR and its LLM judge."""
    tracer = handle.tracer()
    for case in range(spans // 5):
        ids = {c.EVALS_RUN_ID: "bench-run", c.EVALS_CASE_ID: f"case-{case}"}
        with tracing.step_span(tracer, "case", **ids) as root:
            with tracing.retrieval_span(tracer, "capital of France", 2, data_source="docs") as r:
                r.set_documents(
                    [
                        {"id": "d1", "content": "Paris is the capital of France.", "score": 0.9},
                        {"id": "d2", "content": "Lyon is a city in France.", "score": 0.4},
                    ]
                )
            with tracing.llm_span(
                tracer, "openai/gpt-4o-mini", params={"temperature": 0}, messages=MESSAGES
            ) as llm:
                llm.set_response("Paris", "stop", 42, 2, cost=0.00001, cache_hit=False)
            with tracing.evaluator_span(tracer, "correctness", "judge") as judge:
                with tracing.llm_span(tracer, "local/smollm2", messages=MESSAGES[1:]) as call:
                    call.set_response("PASS", "stop", 30, 1, cost=0.0)
                judge.set_score(1.0, True, "same fact")
            root.set_attribute(c.EVALS_VERDICT, "pass")


def emit_minimal(handle: tracing.TracingHandle, spans: int) -> None:
    """Plain spans with five small attributes each (comparable with STACK.md's figure)."""
    tracer = handle.tracer()
    for i in range(spans):
        with tracer.start_as_current_span("step") as span:
            span.set_attributes(
                {
                    c.EVALS_RUN_ID: "bench-run",
                    c.EVALS_CASE_ID: f"case-{i}",
                    c.OPENINFERENCE_SPAN_KIND: c.KIND_CHAIN,
                    c.GEN_AI_USAGE_INPUT_TOKENS: i,
                    c.EVALS_COST_USD: 0.001,
                }
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--queue", type=int, default=65_536)
    parser.add_argument("--batch", type=int, default=2_048)
    parser.add_argument(
        "--minimal", action="store_true", help="plain spans with 5 attributes instead of cases"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.sqlite"
        handle = tracing.setup(
            store=store, max_queue_size=args.queue, max_export_batch_size=args.batch
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        (emit_minimal if args.minimal else emit)(handle, args.spans)
        created = time.perf_counter() - start
        handle.force_flush(timeout_ms=600_000)
        total = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        handle.shutdown()
        stats = handle.stats()[0]
        with sqlite3.connect(store) as conn:
            stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        size_mb = sum(p.stat().st_size for p in Path(tmp).glob("bench.sqlite*")) / 1e6
    n = args.spans if args.minimal else args.spans // 5 * 5
    print(f"spans created:      {n:,} in {created:.2f} s ({n / created:,.0f}/s while tracing)")
    print(f"spans in SQLite:    {stored:,} after {total:.2f} s ({stored / total:,.0f} spans/s)")
    print(f"CPU per span:       {cpu / n * 1e6:.0f} µs (tracing and export threads together)")
    print(f"dropped:            {stats.dropped:,} (queue {args.queue:,}, batch {args.batch:,})")
    print(f"failed exports:     {stats.failed:,}")
    print(f"store size:         {size_mb:.1f} MB")


if __name__ == "__main__":
    main()
