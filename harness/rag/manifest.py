"""Index manifests (documents, chunk hashes, chunking, model) and their diffs and lineage.

A manifest is the registered content of an `index` version: exactly what the index version
hashes, made readable. Chunk `n` of document `d` has id `d#n`; each document lists its chunks'
text hashes in order. A retrieval config's search settings are not part of it: configs that
differ only in how they query share one index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.rag.chunking import CHUNKER_VERSION, Chunk
from harness.rag.config import RetrievalConfig
from harness.rag.corpus import Document
from harness.rag.embedding import EmbeddingModel
from harness.registry import record_version
from harness.store import Store

MANIFEST_SCHEMA = 1
HASH_CHARS = 16


def build_manifest(
    config: RetrievalConfig,
    model: EmbeddingModel,
    documents: list[Document],
    chunks: list[Chunk],
    version: str,
) -> dict[str, Any]:
    """The manifest of an index built from `documents` cut into `chunks`."""
    by_document: dict[str, list[str]] = {d.id: [] for d in documents}
    for chunk in chunks:
        by_document[chunk.document_id].append(chunk.hash[:HASH_CHARS])
    return {
        "schema": MANIFEST_SCHEMA,
        "name": config.name,
        "version": version,
        "chunking": config.chunking.model_dump(mode="json"),
        "chunker": CHUNKER_VERSION,
        "embedding": {"model": model.name, "weights": model.weights_hash},
        "documents": {
            d.id: {"source": d.source, "hash": d.hash[:HASH_CHARS], "chunks": by_document[d.id]}
            for d in documents
        },
        "document_count": len(documents),
        "chunk_count": len(chunks),
    }


def manifest_chunks(manifest: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(document id, chunk id, chunk hash) of every chunk in a manifest."""
    for document_id, entry in (manifest.get("documents") or {}).items():
        for index, chunk_hash in enumerate(entry.get("chunks") or []):
            yield document_id, f"{document_id}#{index}", chunk_hash


@dataclass
class IndexDiff:
    """What changed between two index manifests."""

    documents_added: list[str] = field(default_factory=list)
    documents_removed: list[str] = field(default_factory=list)
    documents_changed: list[str] = field(default_factory=list)
    chunks_added: list[str] = field(default_factory=list)
    chunks_removed: list[str] = field(default_factory=list)
    chunks_changed: list[str] = field(default_factory=list)
    settings: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def same(self) -> bool:
        return not any(
            (
                self.documents_added,
                self.documents_removed,
                self.documents_changed,
                self.chunks_added,
                self.chunks_removed,
                self.chunks_changed,
                self.settings,
            )
        )


def diff_manifests(before: dict[str, Any], after: dict[str, Any]) -> IndexDiff:
    """Documents and chunks added, removed and changed (same id, other content), plus the
    settings (chunking, chunker, embedding model) that differ."""
    result = IndexDiff()
    docs_a, docs_b = before.get("documents") or {}, after.get("documents") or {}
    result.documents_added = sorted(set(docs_b) - set(docs_a))
    result.documents_removed = sorted(set(docs_a) - set(docs_b))
    result.documents_changed = sorted(
        d for d in set(docs_a) & set(docs_b) if docs_a[d].get("hash") != docs_b[d].get("hash")
    )
    chunks_a = {chunk_id: h for _, chunk_id, h in manifest_chunks(before)}
    chunks_b = {chunk_id: h for _, chunk_id, h in manifest_chunks(after)}
    result.chunks_added = _natural(set(chunks_b) - set(chunks_a))
    result.chunks_removed = _natural(set(chunks_a) - set(chunks_b))
    result.chunks_changed = _natural(
        c for c in set(chunks_a) & set(chunks_b) if chunks_a[c] != chunks_b[c]
    )
    for key in ("chunking", "chunker", "embedding"):
        if before.get(key) != after.get(key):
            result.settings[key] = (before.get(key), after.get(key))
    return result


def _natural(ids: Any) -> list[str]:
    """Chunk ids by document, then by number (doc#2 before doc#10)."""

    def key(chunk_id: str) -> tuple[str, int]:
        document, _, number = chunk_id.rpartition("#")
        return document, int(number) if number.isdigit() else -1

    return sorted(ids, key=key)


def index_artifacts(
    config: RetrievalConfig, version: str, manifest: dict[str, Any], ref: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """A run manifest's `artifacts` entries for a retrieval config and its index."""
    retrieval = {"name": config.name, "version": config.version, "content": config.content()}
    index = {"name": config.name, "version": version, "content": manifest}
    if ref is not None:
        retrieval["ref"] = ref
    return {"retrieval": [retrieval], "index": [index]}


def record_index(
    store: Store,
    config: RetrievalConfig,
    version: str,
    manifest: dict[str, Any],
    *,
    git_commit: str | None = None,
    author: str | None = None,
) -> tuple[bool, bool]:
    """Register the retrieval config and index versions; returns whether each was new."""
    _, config_new = record_version(
        store,
        "retrieval",
        config.name,
        config.content(),
        config.version,
        git_commit=git_commit,
        author=author,
    )
    _, index_new = record_version(
        store, "index", config.name, manifest, version, git_commit=git_commit, author=author
    )
    return config_new, index_new
