"""Cheap, LLM-free proxies of a RAG answer's quality: contains the reference, overlaps the
retrieved context, is close to the reference in embedding space."""

from __future__ import annotations

import asyncio
import math
import re
import unicodedata
from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness.errors import ConfigError, ScorerError
from harness.scorers.base import Score, ScoreContext, Scorer, ScorerEnv, ScorerOptions, register
from harness.scorers.retrieval import EXPECTED, RETRIEVAL_SERVICE, item_text, retrieved_items
from harness.scorers.rules import IContains, IContainsOptions, Needle, clip, output_text

if TYPE_CHECKING:  # the embedding stack (numpy, the index) loads only when a scorer embeds
    from harness.rag.embedding import Embedder


class ContainsReferenceOptions(IContainsOptions):
    value: Needle = EXPECTED


@register
class AnswerContainsReference(IContains):
    """The answer contains the reference answer (`value`, default the case's expected), ignoring
    case: `icontains` with the reference as its default."""

    type_name = "answer-contains-reference"
    Options = ContainsReferenceOptions
    options: ContainsReferenceOptions

    def check_case(self, vars: dict[str, Any]) -> None:
        super().check_case(vars)
        if self.options.value == EXPECTED and vars.get("expected") is None:
            raise ConfigError(
                f"case {vars.get('case_id')!r} has no expected answer to look for",
                field=f"scorer {self.name}: value",
            )


_WORD = re.compile(r"[^\W_]+")
STOPWORD_TEXT = (
    "a an and are as at be but by for from has have he her his i in is it its of on or our she "
    "so that the their them there they this to was we were what when where which who will with "
    "you your"
)
STOPWORDS = frozenset(STOPWORD_TEXT.split())


def words(text: str, *, drop_stopwords: bool) -> list[str]:
    """Case-folded word tokens of `text` (letters and digits), optionally without stopwords."""
    tokens = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    return [t for t in tokens if not (drop_stopwords and t in STOPWORDS)]


class ContextOverlapOptions(ScorerOptions):
    stopwords: bool = True  # ignore common English function words on both sides


@register
class ContextOverlap(Scorer):
    """Share of the answer's words (with repeats; stopwords ignored) that appear in the
    retrieved context: a cheap grounding proxy. An answer with no content words scores 0."""

    type_name = "context-overlap"
    Options = ContextOverlapOptions
    options: ContextOverlapOptions
    default_threshold = 0.5

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        retrieved = retrieved_items(ctx, self.name)
        drop = self.options.stopwords
        context = set(words(" ".join(item_text(i) for i in retrieved), drop_stopwords=drop))
        answer = words(output_text(ctx), drop_stopwords=drop)
        if not answer:
            return 0.0, "the answer has no content words to compare"
        found = [t for t in answer if t in context]
        missing = list(dict.fromkeys(t for t in answer if t not in context))
        reason = f"{len(found)}/{len(answer)} answer words appear in the retrieved context"
        if missing:
            reason += f"; not in it: {clip(' '.join(missing), 60)}"
        return len(found) / len(answer), reason


class EmbeddingSimilarityOptions(ScorerOptions):
    value: Needle = EXPECTED
    model: str | None = Field(default=None, min_length=1)


def cosine(a: list[float], b: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return 0.0 if norm == 0 else sum(x * y for x, y in zip(a, b, strict=True)) / norm


@register
class EmbeddingSimilarity(Scorer):
    """Cosine similarity of the answer and the reference (`value`, default the case's expected)
    embedded with the suite's retrieval embedding model, or the sentence-transformers `model`."""

    type_name = "embedding-similarity"
    Options = EmbeddingSimilarityOptions
    options: EmbeddingSimilarityOptions
    default_threshold = 0.7

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        retrieval = env.services.get(RETRIEVAL_SERVICE)
        if self.options.model is None and retrieval is None:
            raise ConfigError(
                "embedding-similarity needs an embedding model: use it with a rag "
                "or retrieval target, or set 'model' (a sentence-transformers "
                "model name)",
                field="model",
            )
        self._retrieval = retrieval
        self._embedder: Embedder | None = None

    def check_case(self, vars: dict[str, Any]) -> None:
        super().check_case(vars)
        if self.options.value == EXPECTED and vars.get("expected") is None:
            raise ConfigError(
                f"case {vars.get('case_id')!r} has no expected answer to compare",
                field=f"scorer {self.name}: value",
            )

    def _embed(self, texts: list[str]) -> list[list[float]]:
        if self.options.model is not None:
            if self._embedder is None:
                from harness.rag.embedding import Embedder, resolve_model

                self._embedder = Embedder(resolve_model(self.options.model))
            return [list(map(float, v)) for v in self._embedder.encode(texts)]
        assert self._retrieval is not None
        return list(self._retrieval.embed(texts))

    async def score(self, ctx: ScoreContext) -> Score:
        reference = str(self.option("value", ctx))
        answer = output_text(ctx)
        if not answer.strip():
            return Score(0.0, self.threshold <= 0.0, "the answer is empty")
        vectors = await asyncio.to_thread(self._embed, [answer, reference])
        value = cosine([float(x) for x in vectors[0]], [float(x) for x in vectors[1]])
        if not math.isfinite(value):
            raise ScorerError(f"scorer {self.name} produced a non-finite similarity")
        value = min(1.0, max(0.0, value))
        return Score(
            value,
            value >= self.threshold,
            f"cosine similarity {value:.3f} to {clip(reference, 40)!r}",
        )
