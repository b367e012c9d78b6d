"""Measure `evals run` end to end: N cases against the fake server at latency L, concurrency C.

Run from the repository root:

    .venv/bin/python benchmarks/bench_engine.py [--cases 10000] [--latency-ms 100]
        [--concurrency 50] [--profile out.prof] [-- extra `evals run` options, e.g. --no-trace]

The fake server runs in its own process (`python -m harness.fakeserver`), so its CPU is not
charged to the harness. Prints: `evals --help` time; the run's wall time against the floor
N x L / C; the CPU seconds of the `evals` process per case; the wall time of a re-run with every
response cached (and the number of requests it sent, which must be 0).

`--breakdown` measures CPU per call in-process, layer by layer, after a warm-up (imports and
litellm's first-call set-up excluded): a bare aiohttp POST, `litellm.acompletion`, our
`ModelClient.complete` (cache off), and the whole runner (`execute`: render, call, score, store,
trace). `--profile FILE` runs the whole runner in-process under cProfile after a warm-up and
prints where the CPU went, by package and by function (cProfile slows the run: read its shares,
not its wall time). `--without-litellm` is a measurement aid: the first run's litellm call is
swapped for a bare aiohttp POST in every process (`benchmarks/without_litellm/`), which shows
what the rest of the harness costs; litellm is still imported, so start-up stays as it is.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import ctypes
import json
import os
import pstats
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EVALS = BIN / "evals"
KEY_ENV = "BENCH_FAKE_KEY"


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def adopt_orphans() -> None:
    """Become the reaper of our descendants' orphans (Linux). `evals` forks its worker
    processes from a fork server, which outlives `evals` by a moment; adopted, it is waited
    for (`reap_new_children`), so its CPU and its workers' count in RUSAGE_CHILDREN."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def children() -> set[int]:
    me, found = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            found.add(int(stat.parent.name))
    return found


def reap_new_children(before: set[int], timeout_s: float = 30.0) -> None:
    """Wait for children that appeared since `before` (adopted orphans) to exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = children() - before
        if not new:
            return
        for pid in new:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def help_time(repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([str(EVALS), "--help"], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def compile_checkout() -> None:
    """Write the bytecode of the checkout being measured first, as an installed package has
    it. Without it (a fresh checkout, or PYTHONDONTWRITEBYTECODE set, as on the machine these
    figures come from) every `evals` process compiles the project's modules from source as it
    starts: ~0.1-0.15 s of CPU for the modules a run imports, measured in each process."""
    for package in ("harness", "tracing"):
        if not compileall.compile_dir(ROOT / package, quiet=1):
            raise SystemExit(f"could not compile {ROOT / package}: the figures would not be real")


def start_server(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.fakeserver", "--latency-ms", str(latency_ms)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"fake server did not start: {url!r}")
    return proc, url


def server_requests(url: str) -> int:
    stats_url = url.removesuffix("/v1") + "/fake/stats"
    with urllib.request.urlopen(stats_url, timeout=10) as response:
        return int(json.load(response)["total"])


def write_project(
    root: Path, cases: int, url: str, concurrency: int, model: str = "openai/fake-model"
) -> Path:
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "evalsets" / "data").mkdir(parents=True, exist_ok=True)
    (root / "prompts" / "qa.yaml").write_text(
        "name: qa\n"
        "messages:\n"
        "  - role: system\n"
        "    content: Answer with the city name only.\n"
        "  - role: user\n"
        '    content: "Case {{ case_id }}: what is the capital of {{ country }}?\\n'
        'REPLY: {{ capital }}"\n'
        "params: {temperature: 0, max_tokens: 16}\n",
        encoding="utf-8",
    )
    with (root / "evalsets" / "data" / "cases.jsonl").open("w", encoding="utf-8") as out:
        for i in range(cases):
            capital = f"City {i}"
            row = {"id": f"c{i:05d}", "country": f"Country {i}", "capital": capital,
                   "expected": capital if i % 10 else f"Other {i}"}  # fmt: skip
            out.write(json.dumps(row) + "\n")
    (root / "evalsets" / "bench.yaml").write_text(
        "name: bench\n"
        "dataset: data/cases.jsonl\n"
        "prompt: qa\n"
        "models:\n"
        f"  - id: {model}\n"
        f"    api_base: {url}\n"
        f"    api_key_env: {KEY_ENV}\n"
        f"    concurrency: {concurrency}\n"
        "    timeout_s: 30\n"
        "scorers:\n"
        '  - {type: equals, value: "{{ expected }}"}\n'
        '  - {type: icontains, value: "{{ expected }}"}\n'
        "thresholds: {equals: 0.5}\n",
        encoding="utf-8",
    )
    return root / "evalsets" / "bench.yaml"


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """`--model`: the litellm model string the generated suite calls the fake server with."""
    parser.add_argument(
        "--model",
        default="openai/fake-model",
        help="litellm model string for the fake server (e.g. hosted_vllm/fake-model)",
    )


WITHOUT_LITELLM = Path(__file__).resolve().parent / "without_litellm"


def timed_run(root: Path, args: list[str], without_litellm: bool = False) -> dict[str, Any]:
    command = [str(EVALS), *args]
    env = {**os.environ, KEY_ENV: "sk-fake-bench", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if without_litellm:  # a measurement aid: see benchmarks/without_litellm/sitecustomize.py
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(WITHOUT_LITELLM), env.get("PYTHONPATH")])
        )
    before = children()
    cpu_before = child_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    reap_new_children(before)
    cpu = child_cpu() - cpu_before
    if done.returncode not in (0, 1):
        raise SystemExit(f"evals run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return {"wall": wall, "cpu": cpu, "summary": summary}


PACKAGE = re.compile(r"site-packages/([A-Za-z0-9_]+)")


def owner(filename: str) -> str:
    """Who a profiled function belongs to: a package, our code, the stdlib or builtins."""
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C)"
    match = PACKAGE.search(filename)
    if match:
        return match.group(1)
    for ours in ("harness", "tracing"):
        if f"/{ours}/" in filename:
            return f"{ours} (ours)"
    if "/asyncio/" in filename:
        return "asyncio (stdlib)"
    if "/sqlite3/" in filename or "json/" in filename:
        return "stdlib sqlite3/json"
    return "stdlib (other)"


def report_profile(path: str, cases: int, top: int = 25) -> None:
    stats = pstats.Stats(path)
    by_owner: dict[str, float] = defaultdict(float)
    total = 0.0
    rows = []
    for (filename, line, name), (_cc, _nc, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_owner[owner(filename)] += tottime
        total += tottime
        rows.append((tottime, cumtime, f"{Path(filename).name}:{line}({name})", owner(filename)))
    print(f"\nprofile: {total:.1f} s of CPU under cProfile, {total / cases * 1e3:.2f} ms/case")
    print("self time by owner:")
    for name, seconds in sorted(by_owner.items(), key=lambda kv: -kv[1]):
        print(
            f"  {name:28s} {seconds:7.2f} s  {100 * seconds / total:5.1f}%"
            f"  {seconds / cases * 1e3:6.3f} ms/case"
        )
    print(f"top {top} functions by self time:")
    for tottime, cumtime, where, who in sorted(rows, reverse=True)[:top]:
        print(f"  {tottime:7.2f} s self {cumtime:7.2f} s cum  {who:20s} {where}")
    print(f"top {top} by cumulative time:")
    for tottime, cumtime, where, who in sorted(rows, key=lambda r: -r[1])[:top]:
        print(f"  {cumtime:7.2f} s cum  {tottime:7.2f} s self  {who:20s} {where}")


# --- in-process measurements ------------------------------------------------------------------


def cpu_per_call(label: str, calls: int, body: Any) -> float:
    """Run `body()` (a coroutine factory) and print CPU and wall per call."""
    import asyncio

    cpu, started = time.process_time(), time.perf_counter()
    asyncio.run(body())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    print(f"  {label:54s} {cpu / calls * 1e3:6.2f} ms CPU/call  wall {wall:6.2f} s")
    return cpu / calls


def in_process(tmp: Path, url: str, args: argparse.Namespace) -> None:
    import asyncio

    import aiohttp

    os.environ[KEY_ENV] = "sk-fake-bench"
    from harness.config import ModelConfig
    from harness.execute import execute
    from harness.providers import ChatRequest, ModelClient, litellm_module
    from harness.runner import RunOptions

    litellm = litellm_module()
    n, c = args.cases, args.concurrency

    def messages(i: int, tag: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": "Answer with the city name only."},
            {"role": "user", "content": f"{tag} {i}: capital?\nREPLY: City {i}"},
        ]

    async def gather(make: Any, tag: str, count: int) -> None:
        semaphore = asyncio.Semaphore(c)

        async def one(i: int) -> None:
            async with semaphore:
                await make(i, tag)

        await asyncio.gather(*(one(i) for i in range(count)))

    def aiohttp_layer(tag: str) -> Any:
        async def body() -> None:
            async with aiohttp.ClientSession() as session:

                async def post(i: int, tag: str) -> None:
                    payload = {"model": "fake-model", "messages": messages(i, tag)}
                    async with session.post(url + "/chat/completions", json=payload) as r:
                        await r.json()

                await gather(post, tag, n)

        return body

    def litellm_layer(tag: str) -> Any:
        async def call(i: int, tag: str) -> None:
            await litellm.acompletion(
                model=args.model,
                messages=messages(i, tag),
                api_base=url,
                api_key="sk-fake-bench",
                timeout=30,
                num_retries=0,
                max_retries=0,
                temperature=0,
                max_tokens=16,
            )

        return lambda: gather(call, tag, n)

    def client_layer(tag: str) -> Any:
        model = ModelConfig(
            id=args.model, api_base=url, api_key_env=KEY_ENV, concurrency=c, timeout_s=30
        )

        async def body() -> None:
            client = ModelClient(model, cache_mode="off")

            async def call(i: int, tag: str) -> None:
                await client.complete(
                    ChatRequest(
                        messages=messages(i, tag), params={"temperature": 0, "max_tokens": 16}
                    )
                )

            await gather(call, tag, n)

        return body

    def run_suite(name: str, cases: int, extra: dict[str, Any]) -> None:
        root = tmp / name
        suite = write_project(root, cases, url, c, args.model)
        if "workers" in RunOptions.__dataclass_fields__:
            extra = {"workers": 1, **extra}  # one process: its CPU is what process_time sees
        execute(suite, project_dir=root, store_path=root / "evals.db", options=RunOptions(**extra))

    trace = "--no-trace" not in args.extra
    print(
        f"in-process, after warm-up: N={n} calls, C={c}, fake server latency "
        f"{args.latency_ms:g} ms in its own process"
    )
    # Warm-up: imports, litellm's first-call set-up, connection pools.
    asyncio.run(litellm_layer("warm")())
    run_suite("warm", 200, {"trace": trace})
    if args.breakdown:
        cpu_per_call("bare aiohttp POST + JSON", n, aiohttp_layer("aio"))
        cpu_per_call("litellm.acompletion", n, litellm_layer("lite"))
        cpu_per_call("ModelClient.complete (cache off, no tracer)", n, client_layer("client"))
        for traced in (trace, not trace):
            name = f"full-trace-{traced}"
            for label in ("whole runner (execute)", "whole runner, every response cached"):
                cpu, started = time.process_time(), time.perf_counter()
                run_suite(name, n, {"trace": traced})
                cpu, wall = time.process_time() - cpu, time.perf_counter() - started
                shown = f"{label}, trace={'on' if traced else 'off'}"
                print(f"  {shown:54s} {cpu / n * 1e3:6.2f} ms CPU/call  wall {wall:6.2f} s")
    if args.sample:
        print("\n--- a run (every call goes to the fake server) ---")
        sample_profile(lambda: run_suite("sampled", n, {"trace": trace}), n)
        print("\n--- the same run again (every response cached) ---")
        sample_profile(lambda: run_suite("sampled", n, {"trace": trace}), n)
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        run_suite("profiled", n, {"trace": trace})
        profiler.disable()
        profiler.dump_stats(args.profile)
        report_profile(args.profile, n)


# Where a sample's time goes: the first rule (in this order) matching any frame on its stack.
COMPONENTS = [
    ("litellm call (incl. the openai SDK, httpx, aiohttp, pydantic under it)", ("litellm/",)),
    ("tracing (our helpers + OpenTelemetry SDK)", ("/tracing/", "opentelemetry/")),
    ("store: SQLite writes, cache reads (ours)", ("harness/store.py",)),
    ("scorers (ours + rapidfuzz etc.)", ("harness/scorers/",)),
    ("prompt rendering (jinja2)", ("harness/prompts.py", "harness/templates.py", "jinja2/")),
    ("ModelClient: retries, cache key, cost (ours)", ("harness/providers.py", "tenacity/")),
    (
        "runner and targets (ours)",
        ("harness/runner.py", "harness/execute.py", "harness/targets.py"),
    ),
    ("asyncio event loop", ("asyncio/",)),
]


def sample_profile(body: Any, cases: int) -> None:
    """Statistical profile (pyinstrument) of the main thread, by component (inclusive: what
    each layer costs with everything it calls) and by function. Unlike cProfile it does not
    inflate deep Python call stacks."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    cpu = time.process_time()
    profiler.start()
    body()
    session = profiler.stop()
    cpu = time.process_time() - cpu
    idle = "idle (waiting in epoll)"
    by_component: dict[str, float] = defaultdict(float)
    by_function: dict[tuple[str, str], float] = defaultdict(float)
    inside_litellm: dict[str, float] = defaultdict(float)

    def walk(frame: Any, parent: tuple[str, str], stack: tuple[str, ...]) -> None:
        path = frame.file_path or ""
        synthetic = frame.function in ("[self]", "[await]")
        if synthetic:
            who, where = parent  # a frame's own time, shown as a synthetic child
        else:
            builtin = not path or path.startswith("<built-in")
            who = parent[0] if builtin else owner(path)  # C functions count for their caller
            where = f"{Path(path).name}:{frame.line_no}({frame.function})"
            stack = (*stack, path if frame.function != "select" else "<select>")
        if synthetic or not frame.children:  # count each sample once, at its leaf
            if "<select>" in stack:
                component = idle
            else:
                component = next(
                    (name for name, marks in COMPONENTS
                     if any(mark in p for p in stack for mark in marks)),
                    "other",
                )  # fmt: skip
            by_component[component] += frame.time
            by_function[(who, where)] += frame.time if component != idle else 0.0
            if component == COMPONENTS[0][0]:
                inside_litellm[who] += frame.time
        for child in frame.children:
            walk(child, (who, where), stack)

    walk(session.root_frame(), ("builtins (C)", "<root>"), ())
    busy = sum(v for k, v in by_component.items() if k != idle)
    print(
        f"\nsampled profile: {busy:.1f} s busy samples; process CPU {cpu:.1f} s = "
        f"{cpu / cases * 1e3:.2f} ms/case (ms/case below: busy share x process CPU)"
    )
    print("by component, inclusive:")
    for name, seconds in sorted(by_component.items(), key=lambda kv: -kv[1]):
        if name != idle:
            per_case = cpu * seconds / busy / cases * 1e3
            print(f"  {100 * seconds / busy:5.1f}%  {per_case:6.3f} ms/case  {name}")
    if inside_litellm:
        print("inside the litellm call, by package (self time):")
        for name, seconds in sorted(inside_litellm.items(), key=lambda kv: -kv[1])[:8]:
            per_case = cpu * seconds / busy / cases * 1e3
            print(f"  {100 * seconds / busy:5.1f}%  {per_case:6.3f} ms/case  {name}")
    print("top functions by self time (C functions count for their Python caller's package):")
    ranked = sorted(by_function.items(), key=lambda kv: -kv[1])[:25]
    for (who, where), seconds in ranked:
        print(f"  {100 * seconds / busy:5.1f}%  {who:20s} {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=50)
    add_model_option(parser)
    parser.add_argument("--profile", help="profile the runner in-process; write stats here")
    parser.add_argument("--breakdown", action="store_true", help="CPU per call, layer by layer")
    parser.add_argument("--sample", action="store_true", help="pyinstrument profile, in-process")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    parser.add_argument(
        "--without-litellm",
        action="store_true",
        help="measurement aid: litellm's call swapped for a bare aiohttp POST (first run only)",
    )
    parser.add_argument("extra", nargs="*", help="more `evals run` options (after --)")
    args = parser.parse_args()
    # SIGTERM unwinds through `finally`, so the fake server process is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    compile_checkout()
    adopt_orphans()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} (other work on the machine skews wall)")
    print(f"evals --help: {help_time():.2f} s (best of 3)")
    server, url = start_server(args.latency_ms)
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    try:
        suite = write_project(tmp, args.cases, url, args.concurrency, args.model)
        run_args = ["run", str(suite.relative_to(tmp)), "--store", str(tmp / "evals.db"),
                    "--json", *args.extra]  # fmt: skip
        floor = args.cases * args.latency_ms / 1000 / args.concurrency
        if args.breakdown or args.profile or args.sample:
            in_process(tmp, url, args)
            return
        before = server_requests(url)
        first = timed_run(tmp, run_args, without_litellm=args.without_litellm)
        sent = server_requests(url) - before
        summary = first["summary"]
        print(
            f"cases N={args.cases}  latency L={args.latency_ms:g} ms  concurrency C="
            f"{args.concurrency}  extra={' '.join(args.extra) or '-'}"
        )
        print(
            f"run:    wall {first['wall']:.2f} s  floor N*L/C {floor:.2f} s  "
            f"ratio {first['wall'] / floor:.2f}x  cpu {first['cpu']:.2f} s  "
            f"({first['cpu'] / args.cases * 1e3:.2f} ms/case)  requests {sent}  "
            f"results {summary['results']}  errors {summary['errors']}"
        )
        before = server_requests(url)
        second = timed_run(tmp, run_args)
        sent = server_requests(url) - before
        cached = sum(m["cached"] for m in second["summary"]["models"].values())
        print(
            f"re-run: wall {second['wall']:.2f} s  cpu {second['cpu']:.2f} s  "
            f"requests {sent}  cached {cached}/{second['summary']['results']}"
        )
        fixed = timed_run(tmp, [*run_args, "--limit", "1"])
        print(
            f"fixed cost (`--limit 1`, cached): wall {fixed['wall']:.2f} s  "
            f"cpu {fixed['cpu']:.2f} s  ->  per case beyond it: run "
            f"{(first['cpu'] - fixed['cpu']) / args.cases * 1e3:.2f} ms CPU, re-run "
            f"{(second['cpu'] - fixed['cpu']) / args.cases * 1e3:.2f} ms CPU"
        )
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        if args.keep:
            print(f"project kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
