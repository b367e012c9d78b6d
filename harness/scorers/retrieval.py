"""Retrieval metric scorers: hit@k, recall@k, precision@k, MRR, nDCG@k over retrieved chunks.

Retrieval metrics (`hit-at-k`, `recall-at-k`, `precision-at-k`, `mrr`, `ndcg-at-k`) judge the
chunks the target retrieved (ScoreContext.retrieved, in rank order as returned) against the
case's labels: the relevant document or chunk ids in the case column `relevant` (or
`metadata.relevant`; another column with `relevant_field`), or a reference answer that must
appear in a chunk (`reference: "{{ expected }}"`). A case without labels is a configuration
error when the suite is checked: these metrics are undefined without relevant items. The
formulas and their conventions (ties, duplicates, k beyond the results) are in
harness.retrieval_metrics. By default a metric passes when the top k holds a relevant item;
`threshold` demands more.

The LLM-free proxies of answer quality live in harness.scorers.answer_proxies.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from harness import retrieval_metrics as rm
from harness.errors import ConfigError, ScorerError
from harness.scorers.base import Score, ScoreContext, Scorer, ScorerEnv, ScorerOptions, register
from harness.scorers.rules import Text, clip
from harness.templates import render_value

DEFAULT_FIELD = "relevant"
EXPECTED = "{{ expected }}"
RETRIEVAL_SERVICE = "retrieval"  # ScorerEnv.services key of the suite's retrieval (rag_target)


def retrieved_items(ctx: ScoreContext, scorer: str) -> list[dict[str, Any]]:
    """The chunks the target retrieved; a target that does not retrieve is an error result."""
    if ctx.retrieved is None:
        raise ScorerError(
            f"scorer {scorer} needs retrieved chunks, but the target retrieved nothing "
            "(use a rag or retrieval target, or return 'retrieved' from a python target)",
            kind="missing_retrieval",
        )
    return [item if isinstance(item, dict) else {"text": str(item)} for item in ctx.retrieved]


def item_text(item: dict[str, Any]) -> str:
    return str(item.get("text") or item.get("content") or "")


def item_key(item: dict[str, Any], level: str) -> str:
    if level == "chunk":
        return str(item.get("id") or item.get("chunk_id") or "")
    return str(item.get("document_id") or item.get("doc_id") or item.get("source") or "")


def case_labels(vars: dict[str, Any], field: str) -> list[str]:
    """The relevant ids a case labels in column `field` (or metadata[field]): a list or one id."""
    value = vars.get(field)
    if value is None:
        value = (vars.get("metadata") or {}).get(field)
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return list(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))


class RetrievalMetricOptions(ScorerOptions):
    k: int | None = Field(default=None, ge=1, le=10_000)
    level: Literal["document", "chunk"] = "document"
    relevant_field: str | None = Field(default=None, min_length=1)
    reference: Text | None = None

    @model_validator(mode="after")
    def _one_label_source(self) -> RetrievalMetricOptions:
        if self.reference is not None and self.relevant_field is not None:
            raise ValueError(
                "give either 'relevant_field' (labelled ids) or 'reference' "
                "(an answer a relevant chunk contains), not both"
            )
        return self


class RetrievalMetric(Scorer):
    """Shared machinery of the retrieval metrics; subclasses give `label` and `compute`."""

    Options: ClassVar[type[ScorerOptions]] = RetrievalMetricOptions
    options: RetrievalMetricOptions
    templated = ("reference",)
    label: ClassVar[str]

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        self.field = self.options.relevant_field or DEFAULT_FIELD
        self._retrieval = env.services.get(RETRIEVAL_SERVICE)

    @staticmethod
    def compute(ranking: rm.Ranking, n_relevant: int, k: int) -> float:
        raise NotImplementedError

    def check_case(self, vars: dict[str, Any]) -> None:
        super().check_case(vars)
        case = vars.get("case_id")
        if self.options.reference is not None:
            if self.options.reference == EXPECTED and vars.get("expected") is None:
                raise ConfigError(
                    f"case {case!r} has no expected answer for scorer {self.name}'s reference",
                    field=f"scorer {self.name}: reference",
                )
            if not str(render_value(self.options.reference, vars)).strip():
                raise ConfigError(
                    f"case {case!r}: scorer {self.name}'s reference is empty",
                    field=f"scorer {self.name}: reference",
                )
        elif not case_labels(vars, self.field):
            raise ConfigError(
                f"case {case!r} labels no relevant ids in {self.field!r}, so {self.label} is "
                f"undefined for it; label it, set scorer {self.name}'s 'reference', or leave "
                "the case out (--filter)",
                field=f"scorer {self.name}: relevant_field",
            )

    def k_for(self, retrieved: list[dict[str, Any]]) -> int:
        """The option `k`, else the target's top_k, else the number of chunks retrieved."""
        if self.options.k is not None:
            return self.options.k
        top_k = getattr(self._retrieval, "top_k", None)
        return int(top_k) if top_k else max(1, len(retrieved))

    def ranking(
        self, ctx: ScoreContext, retrieved: list[dict[str, Any]]
    ) -> tuple[rm.Ranking, int, str]:
        """(ranking, number of relevant items, what was relevant) for this case."""
        if self.options.reference is not None:
            reference = str(self.option("reference", ctx)).strip()
            try:
                ranking = rm.match_reference([item_text(i) for i in retrieved], reference)
            except ValueError as exc:
                raise ScorerError(f"scorer {self.name}: {exc}") from None
            return ranking, 1, f"chunks containing {clip(reference, 40)!r}"
        labels = case_labels(ctx.vars, self.field)
        if not labels:
            raise ScorerError(f"case {ctx.case.id!r} labels no relevant ids in {self.field!r}")
        keys = [item_key(i, self.options.level) for i in retrieved]
        ranking = rm.match_ids(keys, labels, documents=self.options.level == "document")
        return ranking, len(labels), f"relevant {self.options.level}s {', '.join(labels)}"

    async def score(self, ctx: ScoreContext) -> Score:
        retrieved = retrieved_items(ctx, self.name)
        ranking, n_relevant, about = self.ranking(ctx, retrieved)
        k = self.k_for(retrieved)
        value = self.compute(ranking, n_relevant, k)
        passed = (
            value >= self.options.threshold if self.options.threshold is not None else (value > 0)
        )
        first = rm.first_relevant_rank(ranking)
        found = f"first relevant at rank {first}" if first else "no relevant chunk retrieved"
        reason = f"{self.label}@{k} = {value:.3g} ({found}; {about})"
        details = {
            "k": k,
            "retrieved": len(retrieved),
            "first_relevant_rank": first,
            "matched": [key for key in ranking[:k]],
        }
        return Score(value=value, passed=passed, reason=reason, details=details)


@register
class HitAtK(RetrievalMetric):
    """1 when any of the top k retrieved chunks is relevant."""

    type_name = "hit-at-k"
    label = "hit"

    @staticmethod
    def compute(ranking: rm.Ranking, n_relevant: int, k: int) -> float:
        return rm.hit_at_k(ranking, k)


@register
class RecallAtK(RetrievalMetric):
    """Share of the relevant items found in the top k."""

    type_name = "recall-at-k"
    label = "recall"

    @staticmethod
    def compute(ranking: rm.Ranking, n_relevant: int, k: int) -> float:
        return rm.recall_at_k(ranking, n_relevant, k)


@register
class PrecisionAtK(RetrievalMetric):
    """Share of the top k positions holding a relevant chunk."""

    type_name = "precision-at-k"
    label = "precision"

    @staticmethod
    def compute(ranking: rm.Ranking, n_relevant: int, k: int) -> float:
        return rm.precision_at_k(ranking, k)


@register
class MRR(RetrievalMetric):
    """Reciprocal rank of the first relevant chunk within the top k (mean over cases: MRR)."""

    type_name = "mrr"
    label = "rr"

    @staticmethod
    def compute(ranking: rm.Ranking, n_relevant: int, k: int) -> float:
        return rm.reciprocal_rank(ranking, k)


@register
class NDCGAtK(RetrievalMetric):
    """Normalised discounted cumulative gain of the top k (binary relevance)."""

    type_name = "ndcg-at-k"
    label = "ndcg"

    @staticmethod
    def compute(ranking: rm.Ranking, n_relevant: int, k: int) -> float:
        return rm.ndcg_at_k(ranking, n_relevant, k)
