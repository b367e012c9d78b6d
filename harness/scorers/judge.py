"""The `judge` scorer: an LLM grades one output against a versioned rubric.

The verdict is the majority of `samples` structured judge answers (see harness.judging for
delimiting, re-asks and tie handling). A judge that gives no usable answer makes the result
an `error` (kind judge_error), never a fail or a 0. Judge tokens, cost and cache hits go to
Score.details["judge"], apart from the system under test's.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import Field

from harness import judging
from harness.config import ModelConfig
from harness.errors import ConfigError, ScorerError
from harness.model_checks import check_model
from harness.providers import ClientPool, ModelClient
from harness.rubrics import load_rubric
from harness.scorers.base import Score, ScoreContext, Scorer, ScorerEnv, ScorerOptions, register
from harness.templates import render_value

DEFAULT_REFERENCE = "{{ expected }}"


class JudgeOptions(ScorerOptions):
    rubric: str = Field(min_length=1)
    judge: ModelConfig
    samples: int = Field(default=1, ge=1, le=25)
    reference: str = DEFAULT_REFERENCE
    context: str | None = None
    input: str | None = None
    max_reasks: int = Field(default=2, ge=0, le=5)
    structured: Literal["auto", "json_schema", "json_object", "off"] = "auto"


@register
class Judge(Scorer):
    """Grade the output with an LLM judge against a rubric (pass/fail or a 1..N scale)."""

    type_name = "judge"
    Options = JudgeOptions
    options: JudgeOptions
    templated = ("reference", "context", "input")

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        if self.options.threshold is not None:
            raise ConfigError(
                "a judge passes at its rubric's scale (scale.pass), not at 'threshold'; remove it",
                field="threshold",
            )
        try:
            self.rubric = load_rubric(self.options.rubric, env.project_dir, env.base_dir)
        except ConfigError as exc:
            raise ConfigError(str(exc), field="rubric") from None
        try:
            check_model(self.options.judge, where="judge")
        except ConfigError as exc:
            raise ConfigError(exc.message, field="judge") from None
        except RuntimeError as exc:  # the local model's package or runtime is missing
            raise ConfigError(str(exc), field="judge.id") from None
        pool = env.services.get("clients")
        self._pool: ClientPool = pool if isinstance(pool, ClientPool) else ClientPool()
        self._format: dict[str, Any] | None = None
        self._format_ready = False

    # --- configuration --------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The options, with the rubric pinned to the version this run judged with."""
        return {**super().config(), "rubric": self.rubric.ref}

    def artifacts(self) -> dict[str, list[dict[str, Any]]]:
        """The versioned artifacts this scorer uses, in the run manifest's `artifacts` shape."""
        entry = {
            "name": self.rubric.name,
            "version": self.rubric.version,
            "content": self.rubric.rubric.content(),
            "ref": self.options.rubric,
        }
        return {"rubric": [entry]}

    def check_case(self, vars: dict[str, Any]) -> None:
        super().check_case(vars)
        if "reference" in self.rubric.rubric.uses:
            reference = self.options.reference
            rendered = str(self._render(reference, vars, "reference")).strip()
            if not rendered or (reference == DEFAULT_REFERENCE and vars.get("expected") is None):
                raise ConfigError(
                    f"case {vars.get('case_id')!r}: rubric {self.rubric.name!r} uses a reference "
                    "answer, but the case has none (fill the dataset's expected column or set "
                    "the scorer's 'reference')",
                    field=f"scorer {self.name}: reference",
                )

    def _render(self, value: Any, vars: dict[str, Any], key: str) -> Any:
        return render_value(value, vars, where=f"scorer {self.name}: {key}")

    @property
    def client(self) -> ModelClient:
        return self._pool.client(self.options.judge)

    # --- sections -------------------------------------------------------------------------
    def sections(self, ctx: ScoreContext) -> dict[str, str]:
        """The raw text of each section the rubric uses, for this case."""
        uses = self.rubric.rubric.uses
        sections = {"output": ctx.output or ""}
        if "input" in uses:
            sections["input"] = self._input(ctx)
        if "reference" in uses:
            sections["reference"] = str(self.option("reference", ctx))
        if "context" in uses:
            sections["context"] = self._context(ctx)
        return sections

    def _input(self, ctx: ScoreContext) -> str:
        if self.options.input is not None:
            return str(self.option("input", ctx))
        return judging.input_text(ctx.messages, ctx.case.fields, ctx.output)

    def _context(self, ctx: ScoreContext) -> str:
        if self.options.context is not None:
            return str(self.option("context", ctx))
        if not ctx.retrieved:
            raise ScorerError(
                f"rubric {self.rubric.name!r} judges against retrieved context, "
                "but the target retrieved nothing (set the scorer's 'context')",
                kind="missing_context",
            )
        parts = []
        for number, item in enumerate(ctx.retrieved, 1):
            text = item.get("text") or item.get("content") or item.get("document") or item
            parts.append(f"[{number}] {text}")
        return "\n\n".join(parts)

    # --- scoring --------------------------------------------------------------------------
    def _response_format(self) -> dict[str, Any] | None:
        if not self._format_ready:
            schema = judging.verdict_schema(self.rubric.rubric.scale)
            self._format = judging.response_format(
                self.options.judge, schema, self.options.structured
            )
            self._format_ready = True
        return self._format

    async def _sample(
        self, messages: list[dict[str, Any]], index: int
    ) -> judging.Answer[tuple[float, str]]:
        params = {**judging.DEFAULT_PARAMS, **self.options.judge.params}
        params["seed"] = int(params.get("seed") or 0) + index  # k distinct requests
        scale = self.rubric.rubric.scale
        return await judging.ask(
            self.client,
            messages,
            judging.verdict_parser(scale),
            params=params,
            fmt=self._response_format(),
            max_reasks=self.options.max_reasks,
            form=f'{{"reason": "...", "score": <{scale.describe()}>}}',
        )

    async def score(self, ctx: ScoreContext) -> Score:
        sections = self.sections(ctx)
        nonce = judging.make_nonce(ctx.case.id, self.rubric.version, *sorted(sections.items()))
        messages = judging.verdict_messages(self.rubric, sections, nonce)
        outcomes = await asyncio.gather(
            *(self._sample(messages, i) for i in range(self.options.samples)),
            return_exceptions=True,
        )
        answers = [o for o in outcomes if isinstance(o, judging.Answer)]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        calls = [c for a in answers for c in a.calls]
        if failures:
            first = failures[0]
            if not isinstance(first, judging.JudgeError):
                raise first
            spent = judging.usage(calls)
            for failure in failures:
                if isinstance(failure, judging.JudgeError):
                    spent = _add_usage(spent, failure.details)
            about = {
                **self._about(),
                "problem": first.details.get("problem"),
                "replies": first.details.get("replies"),
            }
            raise judging.JudgeError(
                f"{len(failures)} of {self.options.samples} judge sample(s) failed: {first}",
                kind=first.kind,
                raw=first.raw,
                details={"judge": {**about, **spent}},
            )
        scores = [a.value[0] for a in answers]
        result = judging.aggregate(scores, self.rubric.rubric.scale)
        details = {
            **self._about(),
            "scores": scores,
            "reasons": [a.value[1] for a in answers],
            "mean_score": result.mean_score,
            "tie": result.tie,
            **judging.usage(calls),
        }
        return Score(
            value=result.value,
            passed=result.passed,
            reason=self._reason(result, answers),
            details={"unstable": result.unstable, "agreement": result.agreement, "judge": details},
        )

    def _about(self) -> dict[str, Any]:
        return {
            "model": self.options.judge.label,
            "rubric": self.rubric.name,
            "rubric_version": self.rubric.version,
            "scale": self.rubric.rubric.scale.dump(),
            "samples": self.options.samples,
        }

    def _reason(
        self, result: judging.Aggregate, answers: list[judging.Answer[tuple[float, str]]]
    ) -> str:
        scale = self.rubric.rubric.scale
        agreeing = [
            a.value[1] for a in answers if (a.value[0] >= scale.pass_at) == result.passed
        ] or [answers[0].value[1]]
        verdict = "pass" if result.passed else "fail"
        score = "" if scale.is_pass_fail else f" {result.mean_score:g}/{scale.max}"
        text = f"{self.rubric.name}: {verdict}{score}: {agreeing[0]}".rstrip(": ")
        if result.unstable:
            text += (
                f" (unstable: {result.agreement:.0%} of {len(answers)} samples agree"
                f"{'; a tie, decided by the mean score' if result.tie else ''})"
            )
        return text


def _add_usage(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = dict(total)
    for key in ("calls", "input_tokens", "output_tokens", "cached"):
        out[key] = int(out.get(key) or 0) + int(more.get(key) or 0)
    costs = (out.get("cost_usd"), more.get("cost_usd", 0.0))
    out["cost_usd"] = None if None in costs else float(sum(c or 0.0 for c in costs))
    return out
