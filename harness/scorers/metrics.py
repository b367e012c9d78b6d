"""Metric scorers: measure an output (number, similarity, ROUGE-L, BLEU, size, latency, cost).

Each compares a measured quantity with an expected value or a bound and returns a value in
[0, 1]. A missing output (None) is measured as the empty string.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Literal

from pydantic import Field
from rapidfuzz import fuzz

from harness.errors import ConfigError, ScorerError
from harness.scorers.base import ScoreContext, Scorer, ScorerEnv, ScorerOptions, register
from harness.scorers.rules import Text, output_text, show
from harness.templates import is_template, render_value

_NUMBER = re.compile(
    r"""
    (?P<sign>[-+\u2212])?
    (?P<mantissa>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d*)?|\.\d+)
    (?P<exponent>[eE][-+]?\d+)?
    """,
    re.VERBOSE,
)
# Scripts written without spaces between words: each character is one ROUGE token.
_UNSPACED = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_UNSPACED}]|[^\W_{_UNSPACED}]+")


def parse_number(text: str) -> float | None:
    """The first number in `text` ("1,234.5", "-3", "2.5e-3", "−7"), or None when there is none."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    sign = "-" if match["sign"] in ("-", "\u2212") else ""
    return float(sign + match["mantissa"].replace(",", "") + (match["exponent"] or ""))


def format_number(number: float) -> str:
    """A number as a person would write it: 42 rather than 42.0."""
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


def expected_number(value: Any) -> float:
    """An expected `value` as a finite number; its whole text must be one number (ValueError)."""
    text = str(value).strip()
    number = parse_number(text) if _NUMBER.fullmatch(text) else None
    if number is None or not math.isfinite(number):
        raise ValueError(f"value {text!r} is not a number")
    return number


class NumberOptions(ScorerOptions):
    value: Text
    tolerance: float = Field(default=0.0, ge=0)
    relative: float = Field(default=0.0, ge=0)


@register
class Number(Scorer):
    """The first number in the output is within max(tolerance, relative × |value|) of `value`."""

    type_name = "number"
    Options = NumberOptions
    options: NumberOptions

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        value = self.options.value
        if not (isinstance(value, str) and is_template(value)):
            try:
                expected_number(value)
            except ValueError as exc:
                raise ConfigError(str(exc), field="value") from None

    def check_case(self, vars: dict[str, Any]) -> None:
        """Also refuse a case whose rendered `value` is not a number."""
        where = f"scorer {self.name}: value"
        try:
            expected_number(render_value(self.options.value, vars, where=where))
        except ValueError as exc:
            raise ConfigError(str(exc), field=where) from None

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        try:
            expected = expected_number(self.option("value", ctx))
        except ValueError as exc:
            raise ScorerError(str(exc)) from None
        allowed = max(self.options.tolerance, self.options.relative * abs(expected))
        target = format_number(expected) + (f" ± {format_number(allowed)}" if allowed else "")
        actual = parse_number(output_text(ctx))
        if actual is None:
            return 0.0, f"no number in output (expected {target})"
        within = abs(actual - expected) <= allowed
        relation = "is" if within else "is not"
        return float(within), f"output number {format_number(actual)} {relation} {target}"


# --- text similarity ------------------------------------------------------------------------


class SimilarityOptions(ScorerOptions):
    value: Text
    method: Literal["ratio", "partial", "token_set"] = "ratio"
    ignore_case: bool = False


_FUZZ = {"ratio": fuzz.ratio, "partial": fuzz.partial_ratio, "token_set": fuzz.token_set_ratio}


@register
class Similarity(Scorer):
    """Normalized edit similarity of the output to `value` (rapidfuzz, 0–100 scaled to 0–1)."""

    type_name = "similarity"
    Options = SimilarityOptions
    options: SimilarityOptions
    default_threshold = 0.8

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        shown = str(self.option("value", ctx))
        expected, output = shown.strip(), output_text(ctx).strip()
        if self.options.ignore_case:
            expected, output = expected.casefold(), output.casefold()
        if expected and output:
            value = _FUZZ[self.options.method](output, expected) / 100
        else:  # rapidfuzz scores against an empty string inconsistently across methods
            value = float(expected == output)
        method = self.options.method
        return value, f"{method} similarity of output to {show(shown)} is {value:.2f}"


class UnicodeTokenizer:
    """ROUGE tokens for any script: case-folded words, and single CJK characters.

    rouge-score's default tokenizer keeps only [a-z0-9], which erases "東京" and splits
    "Zürich"; on ASCII text this one gives the same tokens (without stemming).
    """

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.casefold())


@functools.cache
def rouge_l_scorer() -> Any:
    """rouge-score's ROUGE-L scorer, imported on first use: it pulls in nltk (about a second)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())


class RougeOptions(ScorerOptions):
    value: Text


@register
class RougeL(Scorer):
    """ROUGE-L F-measure (longest common subsequence of tokens) of the output against `value`."""

    type_name = "rouge-l"
    Options = RougeOptions
    default_threshold = 0.5

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        self.rouge = rouge_l_scorer()

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        expected = str(self.option("value", ctx))
        output = output_text(ctx)
        if not _TOKEN.search(expected) and not _TOKEN.search(output):
            return 1.0, "output and reference are both empty"
        value = float(self.rouge.score(expected, output)["rougeL"].fmeasure)
        return value, f"ROUGE-L F-measure of output against {show(expected)} is {value:.2f}"


class BleuOptions(ScorerOptions):
    value: Text | None = None
    values: list[Text] | None = Field(default=None, min_length=1)
    tokenize: Literal["13a", "intl", "char", "zh", "none"] = "13a"


@register
class Bleu(Scorer):
    """Sentence BLEU (sacrebleu, exponential smoothing) against `value` or several `values`."""

    type_name = "bleu"
    Options = BleuOptions
    options: BleuOptions
    default_threshold = 0.3
    templated = ("value", "values")

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        if (self.options.value is None) == (self.options.values is None):
            raise ConfigError("give exactly one of 'value' or 'values'", field="value")
        from sacrebleu.metrics import BLEU  # imported by suites that use it only (~30 ms)

        self.bleu = BLEU(tokenize=self.options.tokenize, effective_order=True)

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        if self.options.values is not None:
            references = [str(v) for v in self.option("values", ctx)]
        else:
            references = [str(self.option("value", ctx))]
        output = output_text(ctx)
        value = self.bleu.sentence_score(output, references).score / 100
        against = show(references[0]) if len(references) == 1 else f"{len(references)} references"
        return value, f"BLEU of output against {against} is {value:.2f}"


# --- size, latency, cost --------------------------------------------------------------------


class LengthOptions(ScorerOptions):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)
    unit: Literal["chars", "words"] = "chars"


@register
class Length(Scorer):
    """The stripped output's length in characters (code points) or words is within [min, max]."""

    type_name = "length"
    Options = LengthOptions
    options: LengthOptions
    templated = ()

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        low, high = self.options.min, self.options.max
        if low is None and high is None:
            raise ConfigError("give 'min', 'max' or both", field="min")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"min {low} exceeds max {high}", field="min")

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        text = output_text(ctx).strip()
        unit = self.options.unit
        size = len(text.split()) if unit == "words" else len(text)
        low, high = self.options.min, self.options.max
        measured = f"output has {size} {unit}"
        if low is not None and size < low:
            return 0.0, f"{measured}, fewer than the minimum {low}"
        if high is not None and size > high:
            return 0.0, f"{measured}, more than the maximum {high}"
        if low is None or high is None:
            return (
                1.0,
                f"{measured}, at least {low}" if high is None else f"{measured}, at most {high}",
            )
        return 1.0, f"{measured}, within {low}–{high}"


class LatencyOptions(ScorerOptions):
    max_ms: float = Field(gt=0)


@register
class Latency(Scorer):
    """The model call took at most `max_ms` milliseconds; an unmeasured latency is an error."""

    type_name = "latency"
    Options = LatencyOptions
    options: LatencyOptions
    templated = ()

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        if ctx.latency_ms is None:
            raise ScorerError("no latency recorded for this output", kind="missing_latency")
        limit = self.options.max_ms
        within = ctx.latency_ms <= limit
        relation = "<=" if within else ">"
        return float(within), f"latency {ctx.latency_ms:.0f} ms {relation} {limit:g} ms"


class CostOptions(ScorerOptions):
    max_usd: float = Field(ge=0)


@register
class Cost(Scorer):
    """The output cost at most `max_usd` dollars; an unknown cost is an error."""

    type_name = "cost"
    Options = CostOptions
    options: CostOptions
    templated = ()

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        if ctx.cost_usd is None:
            raise ScorerError("no cost recorded for this output", kind="missing_cost")
        limit = self.options.max_usd
        within = ctx.cost_usd <= limit
        relation = "<=" if within else ">"
        return float(within), f"cost ${ctx.cost_usd:.6g} {relation} ${limit:.6g}"
