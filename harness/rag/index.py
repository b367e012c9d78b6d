"""Build and query embedding indexes: one chromadb collection per index version.

The index version hashes the corpus files' contents, the chunking config and the embedding
model (name and weights), and is computed without embedding anything. `open_index` opens the
collection of that version, building it first when missing: chunks whose text is in the
embedding cache are reused, the rest embedded. Queries emit a RETRIEVER span with an EMBEDDING
child span for the query.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import tracing
from harness.errors import ConfigError
from harness.rag.chunking import CHUNKER_VERSION, chunk_document
from harness.rag.config import RetrievalConfig
from harness.rag.corpus import corpus_files, file_fingerprints, load_documents
from harness.rag.embedding import Embedder, EmbeddingModel, resolve_model
from harness.rag.manifest import build_manifest, index_artifacts
from harness.rag.search import Bm25Index, cosine, fuse, mmr_order, relevance, to_where
from harness.templates import render
from harness.versions import short_version

Progress = Callable[[int, int], None]
EMBEDDING_CACHE_FILE = "embeddings.db"
COLLECTION_SCHEMA = 1


@dataclass
class RetrievedChunk:
    """One retrieved chunk, as a target, a metric and a result record see it."""

    id: str
    document_id: str
    text: str
    score: float
    metadata: dict[str, Any]
    rank: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BuildStats:
    """What `open_index` did: built (or found) the index, and how many chunks it embedded."""

    built: bool
    documents: int
    chunks: int
    embedded: int
    reused: int
    seconds: float


def _version(config: RetrievalConfig, fingerprints: list[list[Any]], model: EmbeddingModel) -> str:
    return short_version(
        {
            "corpus": fingerprints,
            "chunking": config.chunking.model_dump(mode="json"),
            "chunker": CHUNKER_VERSION,
            "embedding": {"model": model.name, "weights": model.weights_hash},
        }
    )


def index_version(config: RetrievalConfig, config_path: Path) -> str:
    """The version of the index `config` builds from the files on disk now (no embedding)."""
    files = corpus_files(config, config_path)
    return _version(config, file_fingerprints(files), resolve_model(config.embedding.model))


def local_manifest(config: RetrievalConfig, config_path: Path) -> tuple[str, dict[str, Any]]:
    """(index version, manifest) of the index `config` would build now, without building it."""
    files = corpus_files(config, config_path)
    model = resolve_model(config.embedding.model)
    version = _version(config, file_fingerprints(files), model)
    documents = load_documents(files)
    chunks = [c for d in documents for c in chunk_document(d, config.chunking)]
    return version, build_manifest(config, model, documents, chunks, version)


class RetrievalIndex:
    """An opened index: query it, embed with its model, and describe it for lineage."""

    def __init__(
        self,
        config: RetrievalConfig,
        config_path: Path,
        version: str,
        model: EmbeddingModel,
        collection: Any,
        store_dir: Path,
        stats: BuildStats,
    ) -> None:
        from harness.rag import chroma

        self.config = config
        self.config_path = config_path
        self.version = version
        self.model = model
        self.stats = stats
        self.chunk_count = int(stats.chunks)
        self._collection = collection
        self._embedder = Embedder(model, config.embedding.batch_size)
        self._collection_name = chroma.collection_name(config.name, version)
        self._manifest_file = store_dir / "indexes" / f"{self._collection_name}.json"
        self._bm25 = Bm25Index(store_dir / "bm25" / self._collection_name, self._all_texts)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def config_version(self) -> str:
        return self.config.version

    @property
    def data_source(self) -> str:
        return f"{self.name}@{self.version}"

    # --- lineage ------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The registered content of this index version (documents, chunk hashes, model)."""
        with self._lock:
            try:
                return dict(json.loads(self._manifest_file.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                pass
            version, manifest = local_manifest(self.config, self.config_path)
            if version != self.version:
                raise ConfigError(
                    f"the corpus of {self.name} changed since index {self.version} was "
                    f"opened (now {version}); reopen the index"
                )
            _write_json(self._manifest_file, manifest)
            return manifest

    def artifacts(self, ref: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Run-manifest `artifacts` entries: this retrieval config and this index version."""
        return index_artifacts(self.config, self.version, self.manifest(), ref)

    # --- querying -----------------------------------------------------------------------------
    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length embeddings of `texts` with this index's model."""
        if not texts:
            return []
        with tracing.embedding_span(None, self.model.name, len(texts)):
            return [list(map(float, v)) for v in self._embedder.encode(list(texts))]

    def query(
        self,
        text: str,
        *,
        top_k: int | None = None,
        filters: dict[str, Any] | None = None,
        variables: dict[str, Any] | None = None,
    ) -> list[RetrievedChunk]:
        """The best chunks for `text`, best first, ranked 1.. (mode, threshold and template
        from the config's `search`). `filters` are merged over the config's (a key given here
        wins) and ANDed; `variables` feed the query template beside `query`."""
        search = self.config.search
        k = top_k or search.top_k
        query_text = text
        if search.query_template is not None:
            context = {**(variables or {}), "query": text}
            query_text = render(search.query_template, context, where="search.query_template")
        where = to_where({**(search.filters or {}), **(filters or {})})
        with tracing.retrieval_span(None, query_text, k, data_source=self.data_source) as span:
            with tracing.embedding_span(None, self.model.name, 1, texts=[query_text]):
                vector = self._embedder.encode([query_text])[0]
            hits = self._search(query_text, vector, k, where) if self.chunk_count else []
            if search.score_threshold is not None:
                hits = [hit for hit in hits if hit[1] >= search.score_threshold]
            results = [
                RetrievedChunk(
                    chunk_id,
                    str(meta.get("document_id", chunk_id.rpartition("#")[0])),
                    doc_text,
                    score,
                    meta,
                    rank,
                )
                for rank, (chunk_id, score, doc_text, meta) in enumerate(hits, start=1)
            ]
            span.set_documents(
                [
                    {"id": r.id, "content": r.text, "score": r.score, "metadata": r.metadata}
                    for r in results
                ]
            )
        return results

    def _search(
        self, query_text: str, vector: np.ndarray, k: int, where: dict[str, Any] | None
    ) -> list[tuple[str, float, str, dict[str, Any]]]:
        mode = self.config.search.mode
        if mode == "similarity":
            found = self._nearest(vector, min(k, self.chunk_count), where, embeddings=False)
            return [(cid, score, text, meta) for cid, score, text, meta, _ in found]
        fetch = min(max(4 * k, 20), self.chunk_count)
        found = self._nearest(vector, fetch, where, embeddings=True)
        if mode == "mmr":
            vectors = np.asarray([f[4] for f in found], dtype=np.float32)
            order = mmr_order(vector, vectors, k, self.config.search.mmr_lambda)
            return [found[i][:4] for i in order]
        return self._hybrid(query_text, vector, k, fetch, where, found)

    def _hybrid(
        self,
        query_text: str,
        vector: np.ndarray,
        k: int,
        fetch: int,
        where: dict[str, Any] | None,
        found: list[tuple[str, float, str, dict[str, Any], Any]],
    ) -> list[tuple[str, float, str, dict[str, Any]]]:
        keyword = self._bm25.scores(query_text)
        best_keyword = sorted(keyword, key=lambda cid: (-keyword[cid], cid))[:fetch]
        data = {cid: (text, meta) for cid, _, text, meta, _ in found}
        similarity = {cid: score for cid, score, *_ in found}
        missing = [cid for cid in best_keyword if cid not in data]
        if missing:
            got = self._call(
                lambda: self._collection.get(
                    ids=missing, where=where, include=["documents", "metadatas", "embeddings"]
                )
            )
            for cid, text, meta, emb in zip(
                got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
            ):
                data[cid] = (text, dict(meta or {}))
                similarity[cid] = cosine(vector, [emb])[0]
        keyword = {cid: keyword[cid] for cid in data if cid in keyword}
        fused = fuse(similarity, keyword, self.config.search.hybrid_alpha)[:k]
        return [(cid, score, data[cid][0], data[cid][1]) for cid, score in fused]

    def _nearest(
        self, vector: np.ndarray, n: int, where: dict[str, Any] | None, *, embeddings: bool
    ) -> list[tuple[str, float, str, dict[str, Any], Any]]:
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if embeddings else [])
        result = self._call(
            lambda: self._collection.query(
                query_embeddings=[vector], n_results=n, where=where, include=include
            )
        )
        ids = result["ids"][0]
        vectors = result["embeddings"][0] if embeddings else [None] * len(ids)
        rows = [
            (cid, relevance(dist), text, dict(meta or {}), emb)
            for cid, dist, text, meta, emb in zip(
                ids,
                result["distances"][0],
                result["documents"][0],
                result["metadatas"][0],
                vectors,
                strict=True,
            )
        ]
        return sorted(rows, key=lambda row: (-row[1], row[0]))

    def _call(self, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except (ValueError, TypeError) as exc:  # chroma's errors for a bad `where`
            raise ConfigError(f"index {self.data_source}: {exc}", field="search.filters") from None

    def _all_texts(self) -> tuple[list[str], list[str]]:
        ids: list[str] = []
        texts: list[str] = []
        for offset in range(0, self.chunk_count, 5000):
            page = self._collection.get(include=["documents"], limit=5000, offset=offset)
            ids.extend(page["ids"])
            texts.extend(page["documents"])
        return ids, texts


def open_index(
    config: RetrievalConfig,
    *,
    config_path: Path,
    store_dir: Path,
    chroma_url: str | None = None,
    build: bool = True,
    progress: Progress | None = None,
) -> RetrievalIndex:
    """Open the index of `config`'s current version, building it when missing (and `build`).

    `store_dir` holds the run store (.evals/): the chroma PersistentClient lives in
    store_dir/chroma (unless `chroma_url` names a server), the embedding cache in
    store_dir/embeddings.db. `progress(done, total)` counts chunks while building.
    """
    from harness.rag import chroma

    started = time.perf_counter()
    files = corpus_files(config, config_path)
    model = resolve_model(config.embedding.model)
    version = _version(config, file_fingerprints(files), model)
    store_dir = store_dir.resolve()
    api = chroma.client(store_dir, chroma_url)
    name = chroma.collection_name(config.name, version)
    collection = chroma.get_collection(api, name)
    if collection is not None and (collection.metadata or {}).get("complete"):
        meta = collection.metadata or {}
        stats = BuildStats(
            False,
            int(meta.get("document_count", 0)),
            int(meta.get("chunk_count", collection.count())),
            0,
            0,
            time.perf_counter() - started,
        )
        return RetrievalIndex(config, config_path, version, model, collection, store_dir, stats)
    if not build:
        raise ConfigError(
            f"index {config.name}@{version} is not built; build it with "
            f"`evals index build {config_path}`"
        )
    documents = load_documents(files)
    chunks = [c for d in documents for c in chunk_document(d, config.chunking)]
    metadata: dict[str, Any] = {
        "schema": COLLECTION_SCHEMA,
        "name": config.name,
        "index_version": version,
        "config_version": config.version,
        "model": model.name,
        "weights": model.weights_hash,
        "document_count": len(documents),
        "chunk_count": len(chunks),
        "complete": False,
    }
    collection = chroma.create_collection(api, name, model.name, metadata)
    embedded, reused = chroma.embed_and_upsert(
        collection,
        chunks,
        Embedder(model, config.embedding.batch_size),
        cache_path=store_dir / EMBEDDING_CACHE_FILE,
        batch_size=chroma.max_batch_size(api),
        progress=progress,
    )
    manifest = build_manifest(config, model, documents, chunks, version)
    _write_json(store_dir / "indexes" / f"{name}.json", manifest)
    collection.modify(metadata={**metadata, "complete": True})
    stats = BuildStats(
        True, len(documents), len(chunks), embedded, reused, time.perf_counter() - started
    )
    return RetrievalIndex(config, config_path, version, model, collection, store_dir, stats)


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content), encoding="utf-8")
    temporary.replace(path)
