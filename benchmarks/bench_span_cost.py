"""Measure tracing's CPU cost per eval case in-process: the runner's exact span calls, no engine.

Run from the repository root:

    .venv/bin/python benchmarks/bench_span_cost.py [--cases 10000] [--repeats 3]

Each synthetic case makes the calls `harness.runner` and `harness.providers` make for a chat
case with two rule scorers (4 spans: the case root, its LLM call, two scorers run under
`asyncio.gather`), on an event loop, with nothing else: no litellm, no run store. Modes:
*off* (no tracer, as `evals run --no-trace`: the helpers' no-op path plus the loop's own
cost), *on* (`tracing.setup` into a scratch SQLite span store, as `evals run` does). Prints
CPU per case of the traced (event-loop) thread, of the whole process until every span is in
SQLite (export thread and garbage collection included), and on minus off; medians over the
repeats, the modes alternating. CPU, not wall time: steadier on a shared machine, though
still ±15% there. To compare two versions, run the script in each checkout, alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracing
from tracing import conventions as c

SYSTEM = {"role": "system", "content": "Answer with the city name only."}


async def llm_call(model: str, i: int) -> str:
    """What `ModelClient.complete` does around one call."""
    messages = [SYSTEM, {"role": "user", "content": f"Case c{i:05d}: capital of Country {i}?"}]
    with tracing.llm_span(
        None, model, params={"temperature": 0, "max_tokens": 16}, messages=messages
    ) as span:
        text = f"City {i}"
        span.set_response(
            text=text,
            finish_reason="stop",
            input_tokens=31,
            output_tokens=3,
            cost=0.0000371,
            response_model="fake-model",
            cache_hit=False,
            retries=0,
            tool_calls=None,
        )
        span.set_attribute(c.EVALS_LATENCY_MS, 101.234)
        return text


async def score(name: str, kind: str, output: str, expected: str) -> bool:
    """What `Runner._score` does around one rule scorer."""
    with tracing.evaluator_span(None, name, kind) as span:
        passed = output == expected
        span.set_score(1.0 if passed else 0.0, passed, None if passed else "output differs")
        return passed


async def run_case(i: int) -> None:
    """What `Runner.run_item` does around one (case, model, epoch)."""
    attributes: dict[str, Any] = {
        c.EVALS_RUN_ID: "20261122-000000-abcdef",
        c.EVALS_CASE_ID: f"c{i:05d}",
        c.EVALS_MODEL: "openai/fake-model",
        c.EVALS_EPOCH: 0,
    }
    with tracing.step_span(None, f"case c{i:05d}", **attributes) as span:
        expected = f"City {i}" if i % 10 else f"Other {i}"
        output = await llm_call("openai/fake-model", i)
        verdicts = await asyncio.gather(
            score("equals", "equals", output, expected),
            score("icontains", "icontains", output, expected),
        )
        status = "pass" if all(verdicts) else "fail"
        span.set_input(
            {
                "country": f"Country {i}",
                "capital": f"City {i}",
                "expected": expected,
                "metadata": {},
                "case_id": f"c{i:05d}",
            }
        )
        span.set_output(output)
        span.set_attributes(
            {
                c.EVALS_VERDICT: status,
                c.EVALS_COST_USD: 0.0000371,
                c.EVALS_SCORE: 1.0 if status == "pass" else 0.0,
            }
        )
        span.span.get_span_context()


async def run_cases(cases: int, concurrency: int = 50) -> None:
    """`cases` cases, `concurrency` at a time, as the runner's workers take them."""
    queue = iter(range(cases))

    async def worker() -> None:
        for i in queue:
            await run_case(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure(cases: int, traced: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "spans.sqlite"
        handle = tracing.setup(store=store, project_name="bench") if traced else None

        async def main() -> float:
            with tracing.use_tracer(handle.tracer("evals-harness") if handle else None):
                started = time.thread_time()
                await run_cases(cases)
                return time.thread_time() - started

        cpu_start = time.process_time()
        thread_cpu = asyncio.run(main())
        if handle is not None:
            handle.force_flush(timeout_ms=600_000)
        cpu = time.process_time() - cpu_start
        stored = dropped = 0
        if handle is not None:
            handle.shutdown()
            dropped = handle.dropped_spans
            with sqlite3.connect(store) as conn:
                stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    return {"thread": thread_cpu, "process": cpu, "stored": stored, "dropped": dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.cases
    asyncio.run(run_cases(200))  # warm up imports and caches
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for repeat in range(args.repeats):
        for traced in (False, True) if repeat % 2 == 0 else (True, False):
            results[traced].append(measure(n, traced))

    def per_case(traced: bool, key: str) -> float:
        return statistics.median(r[key] for r in results[traced]) / n * 1e6

    on = results[True][-1]
    print(f"cases: {n:,} × 4 spans, {args.repeats} repeats (medians), µs CPU per case")
    print(f"{'':24}{'off':>8}{'on':>8}{'on - off':>10}")
    for label, key in (("event-loop thread", "thread"), ("process (with export)", "process")):
        a, b = per_case(False, key), per_case(True, key)
        print(f"{label:24}{a:8.0f}{b:8.0f}{b - a:10.0f}")
    print(f"spans stored: {on['stored']:,} (expected {4 * n:,}), dropped: {on['dropped']:,}")


if __name__ == "__main__":
    main()
