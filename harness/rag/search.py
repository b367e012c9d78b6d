"""Ranking for the query modes: MMR selection, BM25 (bm25s) scores, hybrid fusion, filters.

Scores are in [0, 1], higher is better: vector relevance is the cosine similarity clipped at 0;
a BM25 score is divided by the best BM25 score among the query's candidates; the hybrid score
is `alpha * vector + (1 - alpha) * bm25` (alpha 1: vectors only, 0: BM25 only).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BM25_STOPWORDS = "en"


def relevance(distance: float) -> float:
    """Chroma's cosine distance (1 - cos) as a similarity in [0, 1]."""
    return float(min(1.0, max(0.0, 1.0 - distance)))


def mmr_order(query: np.ndarray, candidates: np.ndarray, k: int, lambda_mult: float) -> list[int]:
    """Maximal marginal relevance: indices of `k` candidates, each maximising
    lambda * sim(query) - (1 - lambda) * max sim(already chosen). Vectors are unit length."""
    if len(candidates) == 0:
        return []
    to_query = candidates @ query
    pairwise = candidates @ candidates.T
    chosen: list[int] = []
    remaining = list(range(len(candidates)))
    while remaining and len(chosen) < k:
        if chosen:
            redundancy = pairwise[np.ix_(remaining, chosen)].max(axis=1)
        else:
            redundancy = np.zeros(len(remaining))
        objective = lambda_mult * to_query[remaining] - (1 - lambda_mult) * redundancy
        best = remaining[int(np.argmax(objective))]  # argmax: first of ties, a stable order
        chosen.append(best)
        remaining.remove(best)
    return chosen


def fuse(
    vector: dict[str, float], keyword: dict[str, float], alpha: float
) -> list[tuple[str, float]]:
    """Hybrid ranking of the union of candidates: (id, score) best first, ties by id."""
    top = max(keyword.values(), default=0.0)
    fused = {
        chunk_id: alpha * vector.get(chunk_id, 0.0)
        + (1 - alpha) * (keyword.get(chunk_id, 0.0) / top if top > 0 else 0.0)
        for chunk_id in {*vector, *keyword}
    }
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def to_where(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """A chroma `where` from a filter mapping: {key: value, ...} ANDs equalities; values may
    be chroma operators ({"$in": [...]}); a mapping already using $and/$or passes through."""
    if not filters:
        return None
    if len(filters) == 1 or any(str(key).startswith("$") for key in filters):
        return dict(filters)
    return {"$and": [{key: value} for key, value in sorted(filters.items())]}


class Bm25Index:
    """A bm25s index over an index version's chunk texts, saved under `directory` and loaded
    from there next time (built on first hybrid query)."""

    def __init__(self, directory: Path, load_corpus: Callable[[], tuple[list[str], list[str]]]):
        self.directory = directory
        self._load_corpus = load_corpus
        self._lock = threading.Lock()
        self._retriever: Any = None
        self._ids: list[str] = []

    def _ensure(self) -> None:
        with self._lock:
            if self._retriever is not None:
                return
            import bm25s

            ids_file = self.directory / "ids.json"
            if ids_file.exists():
                try:
                    self._retriever = bm25s.BM25.load(str(self.directory))
                    self._ids = json.loads(ids_file.read_text(encoding="utf-8"))
                    return
                except (OSError, ValueError):
                    self._retriever = None  # a damaged cache is rebuilt below
            ids, texts = self._load_corpus()
            retriever = bm25s.BM25()
            tokens = bm25s.tokenize(
                texts, stopwords=BM25_STOPWORDS, return_ids=False, show_progress=False
            )
            retriever.index(tokens, show_progress=False)
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                retriever.save(str(self.directory))
                ids_file.write_text(json.dumps(ids), encoding="utf-8")  # last: marks complete
            except OSError:
                pass  # an unwritable cache only costs a rebuild next process
            self._retriever, self._ids = retriever, ids

    def scores(self, query: str) -> dict[str, float]:
        """Raw BM25 scores of every chunk that matches `query` at all (score above 0)."""
        import bm25s

        self._ensure()
        tokens = bm25s.tokenize(
            [query], stopwords=BM25_STOPWORDS, return_ids=False, show_progress=False
        )[0]
        known = [token for token in tokens if token in self._retriever.vocab_dict]
        if not known or not self._ids:
            return {}
        raw = np.asarray(self._retriever.get_scores(known), dtype=np.float64)
        return {self._ids[i]: float(raw[i]) for i in np.flatnonzero(raw > 0)}


def cosine(query: np.ndarray, vectors: Sequence[Any]) -> list[float]:
    """Clipped cosine similarity of unit-length `query` to each (unit-length) vector."""
    if len(vectors) == 0:
        return []
    matrix = np.asarray(vectors, dtype=np.float32)
    return [float(min(1.0, max(0.0, v))) for v in matrix @ query]
