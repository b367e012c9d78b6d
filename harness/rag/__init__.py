"""Retrieval for RAG evaluation: retrieval configs, chunking, embedding indexes and queries.

`import harness.rag` is cheap: chromadb, sentence-transformers and torch load only when an
index is opened or a model embeds.
"""

from typing import Any

from harness.rag.config import (
    Chunking,
    CorpusSource,
    Embedding,
    RetrievalConfig,
    Search,
    load_retrieval_config,
    retrieval_file,
)

# The index module brings numpy (~60 ms of import): it loads at first use of one of its names,
# so suites without retrieval (which import the config module, for its artifact kind) skip it.
_INDEX_NAMES = ("BuildStats", "RetrievalIndex", "RetrievedChunk", "index_version", "open_index")


def __getattr__(name: str) -> Any:
    if name in _INDEX_NAMES:
        from harness.rag import index

        return getattr(index, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BuildStats",
    "Chunking",
    "CorpusSource",
    "Embedding",
    "RetrievalConfig",
    "RetrievalIndex",
    "RetrievedChunk",
    "Search",
    "index_version",
    "load_retrieval_config",
    "open_index",
    "retrieval_file",
]
