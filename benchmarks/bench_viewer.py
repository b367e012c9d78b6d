"""Measure the viewer's server time: a 10,000-case run page and a 5,000-span trace page.

Run from the repository root: `.venv/bin/python benchmarks/bench_viewer.py [--cases N]
[--spans N] [--repeat N] [--compare]`. Builds a scratch store (synthetic results through
`Store.add_result`, one trace through `tracing.setup`'s SQLite span store), serves it with
uvicorn on a free loopback port, and times each page with httpx: time to first byte (response
headers), full load (body read) and the app's own `Server-Timing`. Prints the first (cold)
request and the median and p95 of the warm ones. Targets: run page under 300 ms server time,
trace page under 1 s.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracing
from harness.store import ResultRow, ScoreRow, Store
from harness.summary import summarize
from harness.viewer import ViewerConfig, create_app
from tracing import conventions as c

MODEL = "openai/gpt-4o-mini"


def build_run(store: Store, run_id: str, cases: int, seed: int = 0) -> None:
    """A run of `cases` results with two scorers each, about 20% failing and 2% errored."""
    rng = random.Random(seed)
    manifest = {
        "suite": {"name": "bench", "version": "0"},
        "models": [{"id": MODEL}],
        "dataset": {"version": "0", "rows": cases, "selected": cases},
    }
    store.create_run(run_id, "bench", manifest)
    for i in range(cases):
        roll = rng.random()
        status = "error" if roll < 0.02 else "fail" if roll < 0.22 else "pass"
        scores = (
            []
            if status == "error"
            else [
                ScoreRow("exact", status, 1.0 if status == "pass" else 0.0, "matched"),
                ScoreRow("similarity", "pass", rng.random(), "ratio similarity"),
            ]
        )
        question = f"What is the capital of country number {i}? " * 3
        store.add_result(
            ResultRow(
                run_id=run_id,
                case_id=f"case-{i:05d}",
                model=MODEL,
                epoch=0,
                status=status,
                score=None if status == "error" else rng.random(),
                output=None if status == "error" else f"The capital is city {i}. " * 8,
                error="provider timeout" if status == "error" else None,
                error_kind="timeout" if status == "error" else None,
                latency_ms=rng.uniform(50, 3000),
                input_tokens=40,
                output_tokens=12,
                cost_usd=0.00002,
                cached=False,
                attempts=1,
                trace_id=None,
                case_data={
                    "fields": {"question": question},
                    "expected": f"city {i}",
                    "metadata": {
                        "difficulty": rng.choice(["easy", "medium", "hard"]),
                        "tags": [rng.choice(["geo", "math", "misc"])],
                    },
                },
                detail={"messages": [{"role": "user", "content": question}]},
                scores=scores,
                created_at=time.time(),
            )
        )
    store.flush()
    # As the runner does when a run ends: the page reads its figures from this summary.
    summary = summarize(store.results(run_id))
    store.update_run(run_id, status="completed", summary=summary, finished=True)


def build_trace(path: Path, spans: int) -> str:
    """One trace of `spans` spans: a case root, agent steps, and LLM, tool and judge calls."""
    handle = tracing.setup(store=path, project_name="bench", max_queue_size=spans * 2)
    tracer = handle.tracer()
    messages = [{"role": "user", "content": "What is the capital of France? " * 4}]
    made = 1
    with tracing.step_span(
        tracer, "case big", **{c.EVALS_RUN_ID: "bench-trace", c.EVALS_CASE_ID: "big"}
    ) as root:
        while made < spans:
            with tracing.step_span(tracer, "agent step", kind="AGENT"):
                made += 1
                for _ in range(min(49, spans - made)):
                    if made % 2:
                        with tracing.llm_span(tracer, MODEL, messages=messages) as llm:
                            llm.set_response("Paris", "stop", 42, 2, cost=0.00001)
                    else:
                        with tracing.tool_span(
                            tracer, "lookup", '{"city": "Paris"}', "call-1"
                        ) as t:
                            t.set_result("Paris is the capital of France.")
                    made += 1
        trace_id = format(root.span.get_span_context().trace_id, "032x")
    handle.shutdown()
    return trace_id


class Server:
    """uvicorn serving the app on a free loopback port, in a thread."""

    def __init__(self, store: Path) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        app = create_app(ViewerConfig(store, port=self.port, author="bench"))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join()


def measure(client: httpx.Client, url: str, repeat: int) -> dict[str, float]:
    """Cold and warm timings (ms) of GET url: first byte, full load, Server-Timing, size."""
    runs = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        with client.stream("GET", url) as response:
            first_byte = time.perf_counter() - started
            body = response.read()
            full = time.perf_counter() - started
        assert response.status_code == 200, (url, response.status_code)
        server = float(response.headers["server-timing"].split("dur=")[1])
        runs.append((first_byte * 1e3, full * 1e3, server, len(body)))
    warm = runs[1:]

    def p95(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.95 * len(values)) - 1)]

    return {
        "cold_full": runs[0][1],
        "ttfb_median": statistics.median(r[0] for r in warm),
        "full_median": statistics.median(r[1] for r in warm),
        "full_p95": p95([r[1] for r in warm]),
        "server_median": statistics.median(r[2] for r in warm),
        "kb": runs[0][3] / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--spans", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--compare", action="store_true", help="also time comparing two runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "evals.db"
        started = time.perf_counter()
        with Store.open(path) as store:
            build_run(store, "bench-a", args.cases)
            if args.compare:
                build_run(store, "bench-b", args.cases, seed=1)
        built_run = time.perf_counter() - started
        trace_id = build_trace(path, args.spans)
        print(
            f"store: {args.cases:,} results in {built_run:.1f} s, a trace of {args.spans:,} "
            f"spans in {time.perf_counter() - started - built_run:.1f} s"
        )
        pages = {
            "run page": "/runs/bench-a",
            "run page, failures by latency": "/runs/bench-a?verdict=fail&sort=latency&order=desc",
            "run page, flaky filter": "/runs/bench-a?verdict=flaky",
            "run page, text search": "/runs/bench-a?q=city+9999",
            "run page, last page": "/runs/bench-a?page=200",
            "run page, slice hard": "/runs/bench-a?by=difficulty&value=hard&sort=score",
            "case page": "/runs/bench-a/case?case=case-05000&model=openai%2Fgpt-4o-mini&epoch=0",
            "trace page": f"/traces/{trace_id}",
            "runs list": "/",
        }
        if args.compare:
            pages["compare (2 × 10,000)"] = "/compare?base=bench-a&cand=bench-b"
        with (
            Server(path) as server,
            httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=120) as client,
        ):
            spans_page = client.get(pages["trace page"]).text
            span_id = spans_page.split('id="s-', 2)[2][:16]
            pages["span attributes (JSON)"] = f"/api/traces/{trace_id}/spans/{span_id}"
            columns = ("cold", "TTFB", "full", "p95", "server", "size")
            print(f"{'page':34}" + "".join(f" {name:>8}" for name in columns))
            for name, url in pages.items():
                repeat = 3 if name.startswith("compare") else args.repeat
                m = measure(client, url, repeat)
                print(
                    f"{name:34} {m['cold_full']:7.0f}ms {m['ttfb_median']:6.1f}ms "
                    f"{m['full_median']:6.1f}ms {m['full_p95']:6.1f}ms "
                    f"{m['server_median']:6.1f}ms {m['kb']:6.0f}KB"
                )


if __name__ == "__main__":
    main()
