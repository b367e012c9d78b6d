"""Retrieval metrics (harness/retrieval_metrics.py) against hand-computed values, and the
retrieval scorers (harness/scorers/retrieval.py) on hand-built retrieved chunks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from harness import retrieval_metrics as rm
from harness.cases import Case
from harness.errors import ConfigError, ScorerError
from harness.scorers import ScoreContext, ScorerEnv, build_scorer

# Returned documents a, b, a, c, d (a twice: two chunks of one document); relevant: a, c, e.
RANKING = rm.match_ids(["a", "b", "a", "c", "d"], ["a", "c", "e"])
LOG2_3, LOG2_5 = math.log2(3), math.log2(5)


def test_match_ids_marks_each_position() -> None:
    assert RANKING == ["a", None, "a", "c", None]


def test_match_ids_document_labels_may_omit_the_corpus_root() -> None:
    ranking = rm.match_ids(
        ["docs/corpus/mars.md", "docs/corpus/venus.md", "xmars.md"], ["mars.md"], documents=True
    )
    assert ranking == ["mars.md", None, None]
    # Chunk ids match exactly only.
    assert rm.match_ids(["docs/mars.md#0"], ["mars.md#0"]) == [None]


def test_match_ids_deduplicates_labels() -> None:
    assert rm.match_ids(["a"], ["a", "a"]) == ["a"]


@pytest.mark.parametrize(("k", "expected"), [(1, 1.0), (2, 1.0), (5, 1.0)])
def test_hit_at_k(k: int, expected: float) -> None:
    assert rm.hit_at_k(RANKING, k) == expected
    assert rm.hit_at_k([None, None, "a"], 2) == 0.0
    assert rm.hit_at_k([None, None, "a"], 3) == 1.0


def test_recall_counts_each_relevant_item_once() -> None:
    assert rm.recall_at_k(RANKING, 3, 1) == pytest.approx(1 / 3)
    assert rm.recall_at_k(RANKING, 3, 3) == pytest.approx(1 / 3)  # the second `a` adds nothing
    assert rm.recall_at_k(RANKING, 3, 5) == pytest.approx(2 / 3)


def test_precision_judges_every_position_and_divides_by_k() -> None:
    assert rm.precision_at_k(RANKING, 1) == 1.0
    assert rm.precision_at_k(RANKING, 2) == 0.5
    assert rm.precision_at_k(RANKING, 5) == pytest.approx(3 / 5)  # a, a, c
    # k beyond the five results: still over k (retrieving less is not rewarded).
    assert rm.precision_at_k(RANKING, 10) == pytest.approx(3 / 10)


def test_reciprocal_rank() -> None:
    assert rm.reciprocal_rank(RANKING, 5) == 1.0
    assert rm.reciprocal_rank([None, None, "c"], 5) == pytest.approx(1 / 3)
    assert rm.reciprocal_rank([None, None, "c"], 2) == 0.0  # first hit beyond k
    assert rm.reciprocal_rank([], 5) == 0.0


def test_ndcg_by_hand() -> None:
    # First occurrences at ranks 1 and 4: DCG = 1 + 1/log2(5) = 1.430677;
    # ideal: min(5, 3) = 3 hits at ranks 1..3: 1 + 1/log2(3) + 1/2 = 2.130930.
    assert rm.ndcg_at_k(RANKING, 3, 5) == pytest.approx(1.430677 / 2.130930, abs=1e-6)
    assert rm.ndcg_at_k(RANKING, 3, 5) == pytest.approx((1 + 1 / LOG2_5) / (1 + 1 / LOG2_3 + 0.5))
    # k = 2: one hit at rank 1; ideal min(2, 3) = 2 hits: 1 + 1/log2(3).
    assert rm.ndcg_at_k(RANKING, 3, 2) == pytest.approx(1 / (1 + 1 / LOG2_3))
    # A single relevant item at rank 2: 1/log2(3) over an ideal of 1.
    assert rm.ndcg_at_k([None, "x"], 1, 5) == pytest.approx(1 / LOG2_3)
    assert rm.ndcg_at_k(["x", "y"], 2, 2) == pytest.approx(1.0)


def test_duplicates_never_push_a_metric_above_one() -> None:
    ranking = ["a", "a", "a"]
    assert rm.recall_at_k(ranking, 1, 3) == 1.0
    assert rm.ndcg_at_k(ranking, 1, 3) == 1.0
    assert rm.reciprocal_rank(ranking, 3) == 1.0
    assert rm.precision_at_k(ranking, 3) == 1.0  # each chunk of a relevant document is relevant


def test_k_larger_than_the_results() -> None:
    ranking = ["a", None]
    assert rm.hit_at_k(ranking, 10) == 1.0
    assert rm.recall_at_k(ranking, 2, 10) == 0.5
    assert rm.precision_at_k(ranking, 10) == pytest.approx(0.1)
    # Ideal DCG over min(10, 2) = 2 hits.
    assert rm.ndcg_at_k(ranking, 2, 10) == pytest.approx(1 / (1 + 1 / LOG2_3))


def test_nothing_retrieved_scores_zero() -> None:
    for value in (
        rm.hit_at_k([], 3),
        rm.recall_at_k([], 1, 3),
        rm.precision_at_k([], 3),
        rm.reciprocal_rank([], 3),
        rm.ndcg_at_k([], 1, 3),
    ):
        assert value == 0.0


def test_no_relevant_items_is_undefined() -> None:
    with pytest.raises(ValueError, match="undefined"):
        rm.recall_at_k(["a"], 0, 3)
    with pytest.raises(ValueError, match="undefined"):
        rm.ndcg_at_k(["a"], 0, 3)
    with pytest.raises(ValueError, match="k must be"):
        rm.hit_at_k(["a"], 0)


def test_match_reference_ignores_case_and_whitespace() -> None:
    texts = ["Mars has two moons.", "OLYMPUS\n  mons is tall", "Olympus Mons again"]
    assert rm.match_reference(texts, "olympus mons") == [None, rm.REFERENCE, rm.REFERENCE]
    ranking = rm.match_reference(texts, "Olympus Mons")
    # One relevant item (the answer), found first at rank 2; both chunks count for precision.
    assert rm.recall_at_k(ranking, 1, 3) == 1.0
    assert rm.reciprocal_rank(ranking, 3) == 0.5
    assert rm.ndcg_at_k(ranking, 1, 3) == pytest.approx(1 / LOG2_3)
    assert rm.precision_at_k(ranking, 3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="empty"):
        rm.match_reference(texts, "  ")


# --- the scorers ------------------------------------------------------------------------------


def chunk(doc: str, index: int, score: float, rank: int, text: str = "") -> dict[str, Any]:
    return {
        "id": f"{doc}#{index}",
        "document_id": f"docs/{doc}",
        "text": text or f"{doc} text",
        "score": score,
        "metadata": {},
        "rank": rank,
    }


def context(retrieved: list[dict[str, Any]] | None, **fields: Any) -> ScoreContext:
    expected = fields.pop("expected", None)
    case = Case(id="c1", fields=fields, expected=expected)
    return ScoreContext(
        case=case,
        output=fields.get("output", "answer"),
        vars=case.template_vars(),
        retrieved=retrieved,
    )


def scorer(spec: dict[str, Any], **services: Any) -> Any:
    return build_scorer(
        spec, ScorerEnv(project_dir=Path("."), base_dir=Path("."), services=services)
    )


async def test_ties_in_score_keep_the_returned_order() -> None:
    # Two chunks with the same score: the one returned first is rank 1, never re-sorted.
    first = [chunk("venus.md", 0, 0.5, 1), chunk("mars.md", 0, 0.5, 2)]
    second = list(reversed(first))
    mrr = scorer({"type": "mrr"})
    assert (await mrr.score(context(first, relevant=["mars.md"]))).value == 0.5
    assert (await mrr.score(context(second, relevant=["mars.md"]))).value == 1.0


async def test_default_k_is_the_targets_top_k() -> None:
    class Retrieval:
        top_k = 4

    retrieved = [chunk("mars.md", 0, 0.9, 1)]
    precision = scorer({"type": "precision-at-k"}, retrieval=Retrieval())
    score = await precision.score(context(retrieved, relevant="mars.md"))
    assert score.value == 0.25 and score.details and score.details["k"] == 4
    # Without a retrieval service: the number of chunks retrieved.
    score = await scorer({"type": "precision-at-k"}).score(context(retrieved, relevant="mars.md"))
    assert score.value == 1.0


async def test_default_verdict_is_any_relevant_chunk_and_threshold_demands_more() -> None:
    retrieved = [chunk("venus.md", 0, 0.9, 1), chunk("mars.md", 0, 0.8, 2)]
    ctx = context(retrieved, relevant=["mars.md"])
    assert (await scorer({"type": "ndcg-at-k"}).score(ctx)).passed
    strict = await scorer({"type": "ndcg-at-k", "threshold": 0.9}).score(ctx)
    assert not strict.passed and strict.value == pytest.approx(1 / LOG2_3)
    miss = context(retrieved, relevant=["earth.md"])
    assert not (await scorer({"type": "hit-at-k"}).score(miss)).passed


async def test_chunk_level_and_metadata_labels() -> None:
    retrieved = [chunk("mars.md", 0, 0.9, 1), chunk("mars.md", 1, 0.8, 2)]
    recall = scorer({"type": "recall-at-k", "level": "chunk", "k": 2})
    case = Case(id="c", fields={}, metadata={"relevant": ["mars.md#1", "mars.md#7"]})
    ctx = ScoreContext(case=case, output="x", vars=case.template_vars(), retrieved=retrieved)
    score = await recall.score(ctx)
    assert score.value == 0.5


async def test_reference_mode_and_custom_field() -> None:
    retrieved = [
        chunk("a.md", 0, 0.9, 1, "nothing here"),
        chunk("b.md", 0, 0.8, 2, "Olympus Mons is tall"),
    ]
    hit = scorer({"type": "mrr", "reference": "{{ expected }}"})
    assert (await hit.score(context(retrieved, expected="olympus mons"))).value == 0.5
    gold = scorer({"type": "hit-at-k", "relevant_field": "gold", "k": 1})
    assert (await gold.score(context(retrieved, gold=["b.md"]))).value == 0.0


def test_a_case_without_labels_is_refused_at_check_time() -> None:
    hit = scorer({"type": "hit-at-k"})
    with pytest.raises(ConfigError, match="labels no relevant ids"):
        hit.check_case(Case(id="c", fields={"relevant": []}).template_vars())
    reference = scorer({"type": "hit-at-k", "reference": "{{ expected }}"})
    with pytest.raises(ConfigError, match="no expected answer"):
        reference.check_case(Case(id="c", fields={}).template_vars())
    with pytest.raises(ConfigError, match="either"):
        scorer({"type": "hit-at-k", "reference": "x", "relevant_field": "gold"})


async def test_a_target_that_did_not_retrieve_is_an_error() -> None:
    with pytest.raises(ScorerError, match="retrieved nothing"):
        await scorer({"type": "hit-at-k"}).score(context(None, relevant=["a"]))


async def test_context_overlap() -> None:
    retrieved = [chunk("mars.md", 0, 0.9, 1, "Mars has two moons, Phobos and Deimos.")]
    overlap = scorer({"type": "context-overlap"})
    score = await overlap.score(context(retrieved, output="The moons are Phobos and Titan."))
    # Content words: moons, phobos, titan (the/are/and are stopwords): 2 of 3 in the context.
    assert score.value == pytest.approx(2 / 3) and score.passed
    assert "titan" in score.reason
    empty = await overlap.score(context(retrieved, output="the and of"))
    assert empty.value == 0.0 and not empty.passed


async def test_answer_contains_reference() -> None:
    contains = scorer({"type": "answer-contains-reference"})
    ctx = context([], expected="Phobos", output="It is PHOBOS.")
    assert (await contains.score(ctx)).passed
    with pytest.raises(ConfigError, match="no expected answer"):
        contains.check_case(Case(id="c", fields={}).template_vars())


async def test_embedding_similarity_with_the_retrieval_embedder() -> None:
    class Retrieval:
        top_k = 3

        def embed(self, texts: list[str]) -> list[list[float]]:
            return [[1.0, 0.0] if "mars" in t.lower() else [0.6, 0.8] for t in texts]

    similarity = scorer({"type": "embedding-similarity"}, retrieval=Retrieval())
    same = await similarity.score(context([], expected="Mars", output="mars!"))
    assert same.value == pytest.approx(1.0) and same.passed
    other = await similarity.score(context([], expected="Mars", output="Venus"))
    assert other.value == pytest.approx(0.6) and not other.passed  # default threshold 0.7
    with pytest.raises(ConfigError, match="needs an embedding model"):
        scorer({"type": "embedding-similarity"})
