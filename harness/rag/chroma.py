"""The chromadb adapter: clients, collections, chunk writes, our registered embedding function.

The only module that imports chromadb; `harness.rag.index` imports it when an index is opened,
never at `import harness.rag`. Collections are created with `HarnessEmbeddingFunction`, which
is registered with chromadb when this module loads, so any process that opens a collection
through us (a fresh one included) finds it and never falls back to chroma's default model,
which it would try to download. We always pass embeddings ourselves; the function only runs
if someone queries the collection by text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.config import Settings
from chromadb.errors import NotFoundError
from chromadb.utils.embedding_functions import register_embedding_function

from harness.errors import ConfigError
from harness.rag.chunking import Chunk
from harness.rag.config import DEFAULT_EMBEDDING_MODEL
from harness.rag.embedding import Embedder, embed_cached, resolve_model
from harness.rag.manifest import HASH_CHARS

EMBEDDING_FUNCTION_NAME = "evals_harness"


def _settings() -> Settings:
    # A fresh object per client: chromadb.HttpClient rewrites the settings it is given in place,
    # so a shared instance would turn every later PersistentClient into a server client.
    return Settings(anonymized_telemetry=False)


@register_embedding_function
class HarnessEmbeddingFunction(EmbeddingFunction[Documents]):
    """Embeds with the index's sentence-transformers model (loaded lazily, offline)."""

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL) -> None:
        self.model = model
        self._embedder: Embedder | None = None

    def __call__(self, input: Documents) -> Embeddings:
        if self._embedder is None:
            self._embedder = Embedder(resolve_model(self.model))
        return list(self._embedder.encode(list(input)))

    @staticmethod
    def name() -> str:
        return EMBEDDING_FUNCTION_NAME

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HarnessEmbeddingFunction:
        return HarnessEmbeddingFunction(str(config.get("model") or DEFAULT_EMBEDDING_MODEL))

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model}

    def default_space(self) -> Any:
        return "cosine"


@lru_cache(maxsize=8)
def client(store_dir: Path, chroma_url: str | None = None) -> ClientAPI:
    """A PersistentClient under store_dir/chroma, or an HttpClient for a chroma server."""
    try:
        if chroma_url is None:
            path = store_dir / "chroma"
            path.mkdir(parents=True, exist_ok=True)
            return chromadb.PersistentClient(path=str(path), settings=_settings())
        url = urlparse(chroma_url if "://" in chroma_url else f"http://{chroma_url}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"--chroma-url {chroma_url!r} is not an http(s) URL")
        port = url.port or (443 if url.scheme == "https" else 8000)
        remote = chromadb.HttpClient(
            host=url.hostname, port=port, ssl=url.scheme == "https", settings=_settings()
        )
        remote.heartbeat()
        return remote
    except ConfigError:
        raise
    except Exception as exc:  # chromadb raises many kinds; all mean "no usable vector store"
        where = chroma_url or str(store_dir / "chroma")
        raise ConfigError(f"cannot open the chroma store at {where}: {exc}") from None


def collection_name(name: str, version: str) -> str:
    """`idx_<name>_<version>`, within chroma's rules (3-512 of [A-Za-z0-9._-], alnum ends)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:200]
    return f"idx_{safe}_{version}"


def get_collection(api: ClientAPI, name: str) -> Collection | None:
    """The collection called `name`, or None."""
    try:
        # No embedding function given: chroma rebuilds ours from the collection's config.
        return api.get_collection(name)
    except (NotFoundError, ValueError):
        return None


def create_collection(
    api: ClientAPI, name: str, model: str, metadata: dict[str, Any]
) -> Collection:
    """Create (or reopen, to finish an interrupted build) a cosine-space collection."""
    return api.get_or_create_collection(
        name,
        embedding_function=HarnessEmbeddingFunction(model),  # type: ignore[arg-type]
        configuration={"hnsw": {"space": "cosine"}},
        metadata=metadata,
    )


def max_batch_size(api: ClientAPI) -> int:
    try:
        return max(1, int(api.get_max_batch_size()))
    except Exception:  # an older server without the endpoint
        return 1000


def embed_and_upsert(
    collection: Collection,
    chunks: list[Chunk],
    embedder: Embedder,
    *,
    cache_path: Path,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Embed (or take from the cache) every chunk's vector and upsert the chunks; writes run
    on a second thread while the model embeds the next batch (both release the GIL).
    Returns (texts embedded, chunks reused from the cache)."""
    by_hash: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_hash.setdefault(chunk.hash, []).append(chunk)
    writes: list[Future[None]] = []

    def upsert(part: list[Chunk], vectors: np.ndarray) -> None:
        collection.upsert(
            ids=[c.id for c in part],
            embeddings=vectors,
            documents=[c.text for c in part],
            metadatas=[{**c.metadata, "chunk_hash": c.hash[:HASH_CHARS]} for c in part],
        )

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chroma-upsert") as writer:

        def on_vectors(hashes: list[str], vectors: np.ndarray) -> None:
            rows = [(c, i) for i, h in enumerate(hashes) for c in by_hash[h]]
            for first in range(0, len(rows), batch_size):
                part = rows[first : first + batch_size]
                writes.append(
                    writer.submit(upsert, [c for c, _ in part], vectors[[i for _, i in part]])
                )
            while writes and writes[0].done():
                writes.pop(0).result()  # a failed write stops the build early

        try:
            items = [(c.hash, c.text) for c in chunks]
            return embed_cached(items, embedder, cache_path, on_vectors, progress)
        finally:
            for write in writes:
                write.result()
