"""Embedding indexes (harness/rag/index.py, embedding.py, search.py, manifest.py): versions,
incremental rebuilds, query modes, filters, threshold, spans, lineage and the chroma offline
trap. Uses the bundled all-MiniLM-L6-v2 model on a corpus of a few chunks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracing
from harness import registry
from harness.errors import ConfigError
from harness.rag import RetrievalConfig, index_version, load_retrieval_config, open_index
from harness.rag import index as index_module
from harness.rag.embedding import Embedder, file_sha256, resolve_model
from harness.rag.manifest import diff_manifests, record_index
from harness.store import Store

CORPUS = {
    "paris.md": "# Paris\n\nParis is the capital of France. The Eiffel Tower stands there.\n\n"
    "# Food\n\nCroissants and baguettes are baked every morning in Paris.\n",
    "rome.txt": "Rome is the capital of Italy. The Colosseum is an ancient amphitheatre.",
    "zorblax.txt": "The zorblax protocol negotiates quantum handshakes between satellites.",
    "empty.txt": "   \n",
    "faq.jsonl": '{"id": "faq-es", "text": "Madrid is the capital of Spain.", '
    '"metadata": {"lang": "es"}}\n'
    '{"id": "faq-pt", "text": "Lisbon is the capital of Portugal.", "metadata": {"lang": "pt"}}\n',
}
CONFIG = """\
name: docs
description: A tiny test corpus.
corpus:
  - ../docs/*.md
  - {path: ../docs/*.txt, metadata: {topic: misc}}
  - ../docs/*.jsonl
chunking: {strategy: markdown, size: 64, overlap: 8}
search: {top_k: 3}
"""


@pytest.fixture(autouse=True)
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALS_CACHE_DIR", str(tmp_path / "user-cache"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    for name, text in CORPUS.items():
        (tmp_path / "docs" / name).write_text(text, encoding="utf-8")
    (tmp_path / "retrieval").mkdir()
    (tmp_path / "retrieval" / "docs.yaml").write_text(CONFIG, encoding="utf-8")
    return tmp_path


def config_of(project: Path, **search: object) -> tuple[RetrievalConfig, Path]:
    path = project / "retrieval" / "docs.yaml"
    config = load_retrieval_config(path)
    if search:
        config = config.model_copy(update={"search": config.search.model_copy(update=search)})
    return config, path


def opened(project: Path, **search: object) -> index_module.RetrievalIndex:
    config, path = config_of(project, **search)
    return open_index(config, config_path=path, store_dir=project / ".evals")


@pytest.fixture
def embedded_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the embedding model is asked to embed."""
    seen: list[str] = []
    original = Embedder._encode_batch

    def counting(self: Embedder, texts: list[str]):  # type: ignore[no-untyped-def]
        seen.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(Embedder, "_encode_batch", counting)
    return seen


# --- versions -----------------------------------------------------------------------------------
def test_index_version_ignores_mtime_and_yaml_formatting(project: Path) -> None:
    config, path = config_of(project)
    before = index_version(config, path)
    assert len(before) == 8 and int(before, 16) >= 0
    os.utime(project / "docs" / "rome.txt", (1, 1))
    path.write_text(
        "# the same index, written differently, with other search settings\n"
        "name: docs\ndescription: changed\ncorpus: ['../docs/*.md', "
        "{path: '../docs/*.txt', metadata: {topic: misc}}, ../docs/*.jsonl]\n"
        "chunking:\n  strategy: markdown\n  size: 64\n  overlap: 8\n"
        "search: {top_k: 10, mode: hybrid}\nembedding: {batch_size: 8}\n",
        encoding="utf-8",
    )
    assert index_version(load_retrieval_config(path), path) == before


def test_index_version_changes_with_corpus_chunking_and_model(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, path = config_of(project)
    before = index_version(config, path)
    other_chunking = config.model_copy(
        update={"chunking": config.chunking.model_copy(update={"size": 65})}
    )
    assert index_version(other_chunking, path) != before
    other_name = config.model_copy(
        update={
            "embedding": config.embedding.model_copy(
                update={"model": "sentence-transformers/all-MiniLM-L6-v2"}
            )
        }
    )
    assert index_version(other_name, path) != before
    real = resolve_model(config.embedding.model)
    with monkeypatch.context() as patched:
        patched.setattr(
            index_module, "resolve_model", lambda name: replace(real, weights_hash="0" * 64)
        )
        assert index_version(config, path) != before  # same name, other weights
    (project / "docs" / "rome.txt").write_text("Rome is in Italy.", encoding="utf-8")
    assert index_version(config, path) != before
    (project / "docs" / "rome.txt").write_text(CORPUS["rome.txt"], encoding="utf-8")
    assert index_version(config, path) == before
    (project / "docs" / "new.txt").write_text("A new document.", encoding="utf-8")
    assert index_version(config, path) != before


def test_weights_hash_is_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    first = file_sha256(weights)
    record = json.loads((tmp_path / "user-cache" / "file-sha256.json").read_text())
    assert record[str(weights.resolve())]["sha256"] == first
    weights.write_bytes(b"other weights!")
    assert file_sha256(weights) != first
    model = resolve_model("all-MiniLM-L6-v2")
    assert model.weights_hash == resolve_model("all-MiniLM-L6-v2").weights_hash
    assert model.path.name == "model" and (model.path / "model.safetensors").exists()


def test_unknown_models_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not available on this machine"):
        resolve_model("no-such-org/no-such-model-xyz")


# --- building -----------------------------------------------------------------------------------
def test_build_then_reopen_then_rebuild_only_embeds_changed_chunks(
    project: Path, embedded_texts: list[str]
) -> None:
    progress: list[tuple[int, int]] = []
    config, path = config_of(project)
    index = open_index(
        config,
        config_path=path,
        store_dir=project / ".evals",
        progress=lambda done, total: progress.append((done, total)),
    )
    assert index.stats.built and index.chunk_count == 6
    assert (index.stats.documents, index.stats.embedded, index.stats.reused) == (6, 6, 0)
    assert len(embedded_texts) == 6 and progress[-1] == (6, 6)
    assert index.name == "docs" and index.version == index_version(config, path)
    assert index.config_version == config.version

    again = opened(project)
    assert not again.stats.built and again.chunk_count == 6 and len(embedded_texts) == 6

    embedded_texts.clear()
    (project / "docs" / "paris.md").write_text(
        CORPUS["paris.md"].replace("every morning", "at dawn"), encoding="utf-8"
    )
    rebuilt = opened(project)
    assert rebuilt.version != index.version and rebuilt.stats.built
    assert embedded_texts == ["# Food\n\nCroissants and baguettes are baked at dawn in Paris."]
    assert (rebuilt.stats.embedded, rebuilt.stats.reused) == (1, 5)

    diff = diff_manifests(index.manifest(), rebuilt.manifest())
    assert diff.documents_changed == ["paris.md"] and diff.chunks_changed == ["paris.md#1"]
    assert not diff.chunks_added and not diff.chunks_removed and not diff.settings


def test_a_missing_index_is_an_error_when_not_building(project: Path) -> None:
    config, path = config_of(project)
    with pytest.raises(ConfigError, match=r"index docs@[0-9a-f]{8} is not built"):
        open_index(config, config_path=path, store_dir=project / ".evals", build=False)


def test_an_all_empty_corpus_builds_an_empty_index(tmp_path: Path) -> None:
    (tmp_path / "empty.md").write_text("\n\n", encoding="utf-8")
    path = tmp_path / "docs.yaml"
    path.write_text("name: empty\ncorpus: [empty.md]\n", encoding="utf-8")
    index = open_index(load_retrieval_config(path), config_path=path, store_dir=tmp_path / "s")
    assert index.chunk_count == 0 and index.query("anything") == []


# --- querying -----------------------------------------------------------------------------------
def test_similarity_ranks_the_paris_chunk_first(project: Path) -> None:
    results = opened(project).query("What is the capital of France?")
    assert [r.rank for r in results] == [1, 2, 3]
    top = results[0]
    assert (top.id, top.document_id) == ("paris.md#0", "paris.md")
    assert top.text.startswith("# Paris") and top.metadata["heading"] == "Paris"
    assert top.metadata["source"] == "../docs/paris.md"
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_top_k_filters_and_threshold(project: Path) -> None:
    index = opened(project)
    assert len(index.query("capital city", top_k=1)) == 1
    assert len(index.query("capital city", top_k=50)) == 6  # k beyond the index: all chunks
    spanish = index.query("capital city", filters={"lang": "es"})
    assert [r.id for r in spanish] == ["faq-es#0"]
    both = index.query("capital", filters={"lang": {"$in": ["es", "pt"]}})
    assert {r.id for r in both} == {"faq-es#0", "faq-pt#0"}
    misc = index.query("capital", filters={"topic": "misc", "document_id": "rome.txt"})
    assert [r.id for r in misc] == ["rome.txt#0"]
    configured = opened(project, filters={"topic": "misc"})
    assert {r.document_id for r in configured.query("capital")} == {"rome.txt", "zorblax.txt"}
    strict = opened(project, score_threshold=0.5).query("What is the capital of France?")
    assert [r.id for r in strict] == ["paris.md#0"] and strict[0].score >= 0.5
    assert opened(project, score_threshold=1.0).query("unrelated words") == []
    with pytest.raises(ConfigError, match=r"search\.filters"):
        index.query("x", filters={"lang": {"$nope": 1}})


def test_mmr_prefers_diverse_chunks(project: Path) -> None:
    question = "What is the capital of Spain or Portugal?"
    similar = opened(project).query(question, top_k=3)
    diverse = opened(project, mode="mmr", mmr_lambda=0.3).query(question, top_k=3)
    assert diverse[0].id == similar[0].id  # the first pick is the most relevant
    assert len({r.id for r in diverse}) == 3
    relevance_only = opened(project, mode="mmr", mmr_lambda=1.0).query(question, top_k=3)
    assert [r.id for r in relevance_only] == [r.id for r in similar]


def test_hybrid_finds_a_rare_keyword_and_alpha_one_is_similarity(project: Path) -> None:
    keyword = opened(project, mode="hybrid", hybrid_alpha=0.3).query("zorblax")
    assert keyword[0].id == "zorblax.txt#0" and 0 < keyword[0].score <= 1
    question = "Which city has the Colosseum?"
    vectors_only = opened(project, mode="hybrid", hybrid_alpha=1.0).query(question)
    assert [r.id for r in vectors_only] == [r.id for r in opened(project).query(question)]
    filtered = opened(project, mode="hybrid").query("zorblax capital", filters={"lang": "pt"})
    assert [r.id for r in filtered] == ["faq-pt#0"]
    bm25_dirs = list((project / ".evals" / "bm25").iterdir())
    assert len(bm25_dirs) == 1 and (bm25_dirs[0] / "ids.json").exists()  # cached per version


def test_query_emits_a_retriever_span_with_an_embedding_child(project: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    index = opened(project, query_template="question: {{ query }} ({{ lang }})")
    with tracing.use_tracer(provider.get_tracer("test")):
        results = index.query("capital of France", top_k=2, variables={"lang": "en"})
    spans = {span.name: span for span in exporter.get_finished_spans()}
    retriever = spans[f"retrieval docs@{index.version}"]
    embedding = spans["embeddings all-MiniLM-L6-v2"]
    assert embedding.parent is not None and embedding.parent.span_id == retriever.context.span_id
    attributes = dict(retriever.attributes or {})
    assert attributes["openinference.span.kind"] == "RETRIEVER"
    assert attributes["input.value"] == "question: capital of France (en)"
    assert attributes["evals.retrieval.top_k"] == 2
    assert attributes["retrieval.documents.0.document.id"] == results[0].id
    assert attributes["retrieval.documents.1.document.score"] == pytest.approx(results[1].score)
    assert dict(embedding.attributes or {})["openinference.span.kind"] == "EMBEDDING"
    provider.shutdown()


def test_embed_returns_unit_vectors_of_the_index_model(project: Path) -> None:
    vectors = opened(project).embed(["Paris", "Rome"])
    assert len(vectors) == 2 and len(vectors[0]) == 384
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-4)


# --- lineage ------------------------------------------------------------------------------------
def test_artifacts_and_registry_records(project: Path) -> None:
    index = opened(project)
    artifacts = index.artifacts("docs")
    (retrieval,), (entry,) = artifacts["retrieval"], artifacts["index"]
    assert retrieval == {
        "name": "docs",
        "version": index.config_version,
        "content": index.config.content(),
        "ref": "docs",
    }
    manifest = entry["content"]
    assert entry["version"] == index.version and manifest["chunk_count"] == 6
    assert manifest["documents"]["empty.txt"]["chunks"] == []
    assert len(manifest["documents"]["paris.md"]["chunks"]) == 2
    assert manifest["embedding"]["model"] == "all-MiniLM-L6-v2"
    with Store.open(project / ".evals" / "evals.db") as store:
        assert record_index(store, index.config, index.version, manifest) == (True, True)
        assert record_index(store, index.config, index.version, manifest) == (False, False)
        assert registry.get_version(store, "index", "docs", index.version) is not None
        # A config differing only in search settings shares the index: no conflict.
        other = opened(project, top_k=9)
        assert record_index(store, other.config, other.version, other.manifest()) == (True, False)
    (project / ".evals" / "indexes" / f"idx_docs_{index.version}.json").unlink()
    assert opened(project).manifest() == manifest  # recomputed from the corpus when missing


# --- the chroma offline trap --------------------------------------------------------------------
def test_a_fresh_process_queries_an_existing_collection(project: Path) -> None:
    opened(project)
    script = textwrap.dedent(
        """
        import json
        from pathlib import Path
        from harness.rag import load_retrieval_config, open_index
        path = Path("retrieval/docs.yaml")
        index = open_index(load_retrieval_config(path), config_path=path,
                           store_dir=Path(".evals"), build=False)
        print(json.dumps([r.id for r in index.query("What is the capital of France?")]))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EVALS_CACHE_DIR": str(project / "uc")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])[0] == "paris.md#0"


# --- a chroma server ----------------------------------------------------------------------------
@pytest.fixture
def chroma_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`chroma run` on a free local port (the CLI ships with the chromadb package)."""
    binary = Path(sys.executable).parent / "chroma"
    if not binary.exists():
        pytest.skip("the chroma CLI is not installed")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            str(binary),
            "run",
            "--path",
            str(tmp_path / "server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_chroma_server_holds_the_index(project: Path, chroma_server: str) -> None:
    config, path = config_of(project)
    built = open_index(config, config_path=path, store_dir=project / "a", chroma_url=chroma_server)
    assert built.stats.built and not (project / "a" / "chroma").exists()
    # Another machine (another store dir, no embedding cache) finds it on the server.
    found = open_index(
        config, config_path=path, store_dir=project / "b", chroma_url=chroma_server, build=False
    )
    assert not found.stats.built
    assert found.query("What is the capital of France?")[0].id == "paris.md#0"
