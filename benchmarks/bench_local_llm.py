"""Measure the bundled local model: load time, prompt and generation tokens/s on the demo set.

Usage: python benchmarks/bench_local_llm.py [--max-tokens 24] [--repeat 1]
                                            [--omp-wait-policy PASSIVE|ACTIVE]

The prompt/generation split comes from llama.cpp's own performance counters (time spent in
decode for the prompt batch and for each generated token); the wall-clock figures include
everything `complete()` does around it (chat template, sampling, detokenizing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def demo_requests() -> tuple[list[list[dict[str, Any]]], dict[str, Any]]:
    """The demo suite's chats, rendered from prompts/demo_qa.yaml and the demo dataset."""
    import jinja2
    import yaml

    prompt = yaml.safe_load((ROOT / "prompts" / "demo_qa.yaml").read_text())
    lines = (ROOT / "evalsets" / "data" / "demo.jsonl").read_text().splitlines()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    chats = []
    for line in lines:
        case = json.loads(line)
        chats.append(
            [
                {"role": m["role"], "content": env.from_string(m["content"]).render(**case)}
                for m in prompt["messages"]
            ]
        )
    return chats, prompt.get("params", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=None, help="default: the prompt's")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the demo set")
    parser.add_argument(
        "--omp-wait-policy",
        default=None,
        help="ACTIVE or PASSIVE to compare; 'unset' for libgomp's default (spin, then sleep)",
    )
    args = parser.parse_args()
    if args.omp_wait_policy == "unset":
        os.environ.pop("OMP_WAIT_POLICY", None)
        import llama_cpp  # libgomp starts now, before local_llm can set its default
    elif args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy

    started = time.perf_counter()
    from harness import local_llm

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    llm = local_llm.load_model()
    load_s = time.perf_counter() - started

    import llama_cpp

    chats, params = demo_requests()
    max_tokens = args.max_tokens or params.get("max_tokens", 24)
    context = llm._ctx.ctx  # llama.cpp's performance counters live on the context
    prompt_ms = gen_ms = 0.0
    prompt_tokens = gen_tokens = completion_tokens = 0
    latencies = []
    run_started = time.perf_counter()
    for _ in range(args.repeat):
        for chat in chats:
            llama_cpp.llama_perf_context_reset(context)
            call_started = time.perf_counter()
            response = local_llm.complete(chat, temperature=0, max_tokens=max_tokens)
            latencies.append(time.perf_counter() - call_started)
            perf = llama_cpp.llama_perf_context(context)
            prompt_ms += perf.t_p_eval_ms
            prompt_tokens += perf.n_p_eval
            gen_ms += perf.t_eval_ms
            gen_tokens += perf.n_eval
            completion_tokens += response["usage"]["completion_tokens"]
    run_s = time.perf_counter() - run_started

    calls = len(latencies)
    print(f"model            {local_llm.model_path()}")
    policy = (
        args.omp_wait_policy
        if args.omp_wait_policy == "unset"
        else os.environ.get("OMP_WAIT_POLICY")
    )
    print(f"threads          {llm.n_threads}   OMP_WAIT_POLICY={policy}")
    print(f"import           {import_s * 1000:.0f} ms (harness.local_llm, llama_cpp not loaded)")
    print(f"load             {load_s:.2f} s (GGUF load, with llama_cpp import unless unset)")
    print(f"calls            {calls} demo questions x {args.repeat}, max_tokens {max_tokens}")
    print(
        f"prompt           {prompt_tokens} tokens in {prompt_ms / 1000:.2f} s = "
        f"{prompt_tokens / (prompt_ms / 1000):.0f} tokens/s"
    )
    print(
        f"generation       {gen_tokens} tokens in {gen_ms / 1000:.2f} s = "
        f"{gen_tokens / (gen_ms / 1000):.1f} tokens/s (decode only)"
    )
    print(
        f"wall             {run_s:.1f} s total; {completion_tokens / run_s:.1f} completion "
        f"tokens/s end to end; per call median {statistics.median(latencies):.2f} s, "
        f"max {max(latencies):.2f} s"
    )


if __name__ == "__main__":
    main()
