"""Retrieval for RAG evaluation: retrieval configs, chunking, embedding indexes and queries.

`import harness.rag` is cheap: chromadb, sentence-transformers and torch load only when an
index is opened or a model embeds.
"""

from harness.rag.config import (
    Chunking,
    CorpusSource,
    Embedding,
    RetrievalConfig,
    Search,
    load_retrieval_config,
    retrieval_file,
)
from harness.rag.index import (
    BuildStats,
    RetrievalIndex,
    RetrievedChunk,
    index_version,
    open_index,
)

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
