"""Measure index building against the raw embedding model, and query latency at 10,000 chunks.

Run from the repository root:

    .venv/bin/python benchmarks/bench_index.py [--chunks 1000] [--query-chunks 10000]
        [--queries 200] [--repeat 4] [--skip-throughput] [--skip-latency]

1. Throughput: a synthetic corpus cut into `--chunks` token chunks (64 tokens each) is indexed
   with `open_index` into an empty store (read, chunk, hash, embedding cache, chroma upsert),
   and the same chunk texts are embedded by calling the SentenceTransformer directly
   (`model.encode(texts, batch_size=64, normalize_embeddings=True)`). Both run with the model
   already loaded, `--repeat` pairs back to back in alternating order; the median of the pairs'
   throughput ratios is reported, in wall time and in process CPU time (all threads; less
   sensitive to other load on a shared machine). Target: the harness at >= 0.9x the raw model.
   Then one file changes and the index is rebuilt: only that file's chunks are embedded.
2. Latency: an index of `--query-chunks` chunks (32 tokens each) is built, then `--queries`
   questions are asked in each mode (similarity, mmr, hybrid) with top_k 5; p50/p95 per query,
   end to end through `RetrievalIndex.query` (query embedding included), and of the query
   embedding alone. No tracer is configured (spans are no-ops), as in a run with --no-trace.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.rag import load_retrieval_config, open_index
from harness.rag.chunking import chunk_document
from harness.rag.corpus import corpus_files, load_documents
from harness.rag.embedding import Embedder, load_model, resolve_model
from harness.rag.index import local_manifest

VOCABULARY = (
    "planet orbit star comet moon ring storm crater volcano ocean ice dust gas magnetic field "
    "surface atmosphere pressure temperature season day year axis tilt probe mission telescope "
    "light spectrum signal distance mass gravity tide wind cloud layer core mantle crust plume "
    "sulfur methane nitrogen oxygen carbon hydrogen helium water rock metal iron nickel silicate "
    "the a of and in on at with from by for is are was were has have discovered measured "
    "observed because although while during after before between above below near far large "
    "small bright dark cold hot fast slow ancient young active dormant thin thick red blue"
)
WORDS = VOCABULARY.split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
    return " ".join(words).capitalize() + "."


def write_corpus(directory: Path, files: int, words_per_file: int, seed: int) -> None:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        text, count = [], 0
        while count < words_per_file:
            line = sentence(rng)
            text.append(line)
            count += len(line.split()) + 1  # words plus the full stop, as the chunker counts
        (directory / f"doc{number:05d}.txt").write_text(" ".join(text), encoding="utf-8")


def write_config(project: Path, size: int) -> Path:
    path = project / "retrieval" / "bench.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"name: bench\ncorpus: ['../corpus/*.txt']\n"
        f"chunking: {{strategy: tokens, size: {size}, overlap: 0}}\n",
        encoding="utf-8",
    )
    return path


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def throughput(root: Path, chunks: int, repeat: int) -> None:
    project = root / "throughput"
    write_corpus(project / "corpus", files=max(1, chunks // 20), words_per_file=20 * 64, seed=1)
    config_path = write_config(project, size=64)
    config = load_retrieval_config(config_path)
    _, manifest = local_manifest(config, config_path)
    model = resolve_model(config.embedding.model)
    raw_model = load_model(model)
    texts = [
        c.text
        for d in load_documents(corpus_files(config, config_path))
        for c in chunk_document(d, config.chunking)
    ]
    n = len(texts)
    raw_model.encode(texts[:64], batch_size=64)  # warm-up
    import chromadb  # noqa: F401  (import time is a per-process cost, not per chunk)

    def encode_raw() -> None:
        raw_model.encode(
            texts,
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def build(store: Path) -> None:
        open_index(config, config_path=config_path, store_dir=store)

    # Pairs run back to back, in alternating order, so both halves of a pair see about the same
    # load from other processes; the median of the pairs' ratios is the figure to read.
    raw_runs: list[tuple[float, float]] = []
    harness_runs: list[tuple[float, float]] = []
    for attempt in range(repeat):
        store = project / f".evals-{attempt}"
        if attempt % 2:
            harness_runs.append(timed(lambda store=store: build(store)))
            raw_runs.append(timed(encode_raw))
        else:
            raw_runs.append(timed(encode_raw))
            harness_runs.append(timed(lambda store=store: build(store)))
    index = open_index(config, config_path=config_path, store_dir=project / ".evals-0")
    assert index.chunk_count == n == manifest["chunk_count"]
    print(f"chunks: {n} of 64 tokens ({len(manifest['documents'])} files), batch size 64")
    for label, runs in (("raw model.encode", raw_runs), ("harness open_index", harness_runs)):
        best = min(w for w, _ in runs)
        shown = ", ".join(f"{w:.1f} s wall / {c:.1f} s CPU" for w, c in runs)
        print(f"{label:<20} {n / best:7.1f} chunks/s at best  ({shown})")
    pairs = list(zip(raw_runs, harness_runs, strict=True))
    wall = statistics.median(r[0] / h[0] for r, h in pairs)
    cpu = statistics.median(r[1] / h[1] for r, h in pairs)
    print(
        f"harness / raw throughput (median of {len(pairs)} pairs): wall {wall:.3f}x, "
        f"CPU {cpu:.3f}x  (target >= 0.9x)"
    )

    changed = project / "corpus" / "doc00000.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + " A new sentence.", "utf-8")
    start = time.perf_counter()
    rebuilt = open_index(config, config_path=config_path, store_dir=project / ".evals-0")
    print(
        f"rebuild after changing one file: {time.perf_counter() - start:.2f} s, embedded "
        f"{rebuilt.stats.embedded}, reused {rebuilt.stats.reused} of {rebuilt.chunk_count}"
    )


def latency(root: Path, chunks: int, queries: int) -> None:
    project = root / "latency"
    write_corpus(project / "corpus", files=max(1, chunks // 50), words_per_file=50 * 32, seed=2)
    config_path = write_config(project, size=32)
    config = load_retrieval_config(config_path)
    start = time.perf_counter()
    index = open_index(config, config_path=config_path, store_dir=project / ".evals")
    build = time.perf_counter() - start
    print(
        f"\nindex of {index.chunk_count} chunks (32 tokens) built in {build:.1f} s "
        f"({index.chunk_count / build:.0f} chunks/s)"
    )
    rng = random.Random(3)
    questions = [
        f"What is known about the {rng.choice(WORDS)} and {rng.choice(WORDS)} "
        f"of the {rng.choice(WORDS)}?"
        for _ in range(queries)
    ]
    embedder = Embedder(index.model)
    embed_times = []
    for question in questions:
        start = time.perf_counter()
        embedder.encode([question])
        embed_times.append((time.perf_counter() - start) * 1e3)
    print(f"{'mode':<11} {'p50 ms':>8} {'p95 ms':>8}")
    print(
        f"{'(embed)':<11} {percentile(embed_times, 0.5):8.1f} {percentile(embed_times, 0.95):8.1f}"
    )
    for mode in ("similarity", "mmr", "hybrid"):
        search = config.search.model_copy(update={"mode": mode, "top_k": 5})
        moded = open_index(
            config.model_copy(update={"search": search}),
            config_path=config_path,
            store_dir=project / ".evals",
        )
        moded.query(questions[0])  # warm-up (hybrid: builds or loads the BM25 index)
        times = []
        for question in questions:
            start = time.perf_counter()
            moded.query(question)
            times.append((time.perf_counter() - start) * 1e3)
        print(f"{mode:<11} {percentile(times, 0.5):8.1f} {percentile(times, 0.95):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--query-chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("EVALS_CACHE_DIR", str(Path(tmp) / "user-cache"))
        if not args.skip_throughput:
            throughput(Path(tmp), args.chunks, args.repeat)
        if not args.skip_latency:
            latency(Path(tmp), args.query_chunks, args.queries)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
