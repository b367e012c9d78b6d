"""Retrieval metrics as pure functions: hit@k, recall@k, precision@k, MRR and nDCG@k.

A ranking is what the retriever returned, in the order it returned it (ties in score keep that
order: rank is position, never re-sorted). Each position holds the key of the relevant item it
matches, or None: `match_ids` judges chunk or document ids against labelled ids, and
`match_reference` judges chunk texts against a reference answer (every chunk containing it
matches the single key `REFERENCE`).

Relevance is binary. A relevant key earns credit once, at its first position: later chunks of
the same relevant document (or a chunk returned twice) add nothing to recall, MRR or nDCG, so
those stay in [0, 1]. Precision is the share of the top-k positions holding a relevant item,
each chunk judged on its own, divided by k even when fewer than k items came back (trec_eval's
P@k: retrieving less is not rewarded). nDCG uses the log2(rank + 1) discount, ideal DCG over
min(k, number of relevant items). Every metric needs k >= 1 and at least one relevant item:
with no relevant labels a metric is undefined, and the scorers refuse such a case when the suite
is checked.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Collection, Sequence

REFERENCE = "reference"  # the one relevant key of a ranking judged against a reference answer

Ranking = Sequence[str | None]  # per returned position: the relevant key it matches, or None


def matches_document(label: str, document_id: str) -> bool:
    """Whether a labelled document id names `document_id`: equal, or a trailing path part of it
    (`mars.md` names `docs/corpus/mars.md`), so labels need not repeat the corpus root."""
    if label == document_id:
        return True
    label_parts = [p for p in label.replace("\\", "/").split("/") if p]
    id_parts = [p for p in document_id.replace("\\", "/").split("/") if p]
    return bool(label_parts) and id_parts[-len(label_parts) :] == label_parts


def match_ids(
    retrieved: Sequence[str], relevant: Collection[str], *, documents: bool = False
) -> list[str | None]:
    """Judge returned ids against labelled relevant ids: each position's matching label or None.
    With `documents`, a label may name a document by a trailing part of its path."""
    labels = list(dict.fromkeys(relevant))
    ranking: list[str | None] = []
    for item in retrieved:
        if item in labels:
            ranking.append(item)
        elif documents:
            ranking.append(next((label for label in labels if matches_document(label, item)), None))
        else:
            ranking.append(None)
    return ranking


def normalize_text(text: str) -> str:
    """Case-folded, NFKC-normalised text with runs of whitespace collapsed to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def match_reference(texts: Sequence[str], reference: str) -> list[str | None]:
    """Judge returned chunk texts against a reference answer: a chunk containing it (ignoring
    case and whitespace differences) matches `REFERENCE`."""
    needle = normalize_text(reference)
    if not needle:
        raise ValueError("the reference answer is empty; nothing to look for")
    return [REFERENCE if needle in normalize_text(text) else None for text in texts]


def _check(k: int, n_relevant: int | None = None) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if n_relevant is not None and n_relevant < 1:
        raise ValueError("the metric is undefined without relevant items")


def _first_hits(ranking: Ranking, k: int) -> list[int]:
    """1-based ranks within the top k where a relevant key appears for the first time."""
    seen: set[str] = set()
    ranks = []
    for rank, key in enumerate(ranking[:k], 1):
        if key is not None and key not in seen:
            seen.add(key)
            ranks.append(rank)
    return ranks


def hit_at_k(ranking: Ranking, k: int) -> float:
    """1.0 when any of the top k positions is relevant, else 0.0."""
    _check(k)
    return 1.0 if any(key is not None for key in ranking[:k]) else 0.0


def recall_at_k(ranking: Ranking, n_relevant: int, k: int) -> float:
    """Distinct relevant items in the top k, over all relevant items."""
    _check(k, n_relevant)
    return min(1.0, len(_first_hits(ranking, k)) / n_relevant)


def precision_at_k(ranking: Ranking, k: int) -> float:
    """Relevant positions in the top k, over k (not over the number returned)."""
    _check(k)
    return sum(1 for key in ranking[:k] if key is not None) / k


def reciprocal_rank(ranking: Ranking, k: int) -> float:
    """1 / rank of the first relevant position within the top k; 0.0 when there is none."""
    _check(k)
    hits = _first_hits(ranking, k)
    return 1.0 / hits[0] if hits else 0.0


def dcg(ranks: Sequence[int]) -> float:
    """Discounted cumulative gain of binary hits at 1-based `ranks`: sum of 1 / log2(rank + 1)."""
    return sum(1.0 / math.log2(rank + 1) for rank in ranks)


def ndcg_at_k(ranking: Ranking, n_relevant: int, k: int) -> float:
    """DCG of the top k (first occurrences only) over the ideal DCG of min(k, n_relevant) hits
    at the top."""
    _check(k, n_relevant)
    ideal = dcg(range(1, min(k, n_relevant) + 1))
    return dcg(_first_hits(ranking, k)) / ideal


def first_relevant_rank(ranking: Ranking) -> int | None:
    """The 1-based rank of the first relevant position anywhere in the ranking, or None."""
    hits = _first_hits(ranking, len(ranking)) if ranking else []
    return hits[0] if hits else None
