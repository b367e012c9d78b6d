"""The scorer contract: options models, the Score value, the context a scorer sees, the registry."""

from __future__ import annotations

import difflib
import math
from abc import ABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.cases import Case
from harness.errors import ConfigError, ScorerError
from harness.templates import render_value


class ScorerOptions(BaseModel):
    """Options every scorer accepts; each scorer type extends this with its own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str | None = None
    weight: float = Field(default=1.0, ge=0)
    threshold: float | None = Field(default=None, ge=0, le=1)


@dataclass(slots=True)
class Score:
    """What a scorer returns: a value in [0, 1], a verdict and a human-readable reason."""

    value: float
    passed: bool
    reason: str = ""
    details: dict[str, Any] | None = None


@dataclass(slots=True)
class ScoreContext:
    """Everything a scorer may look at for one (case, model, epoch)."""

    case: Case
    output: str | None
    vars: dict[str, Any]
    model: str = ""
    latency_ms: float | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    retrieved: list[dict[str, Any]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ScorerEnv:
    """What a scorer may need at build time: where relative paths and user code live."""

    project_dir: Path
    base_dir: Path
    services: dict[str, Any] = field(default_factory=dict)


class Scorer(ABC):
    """A configured scorer. Subclasses set `type_name`, `Options`, and implement `evaluate`.

    `evaluate` returns (value in [0, 1], reason); the verdict is value >= threshold, where the
    threshold is the option `threshold` or the class's `default_threshold`. Scorers whose verdict
    is not a threshold on the value (judges) override `score` instead.
    """

    type_name: ClassVar[str]
    Options: ClassVar[type[ScorerOptions]] = ScorerOptions
    default_threshold: ClassVar[float] = 1.0
    # Option names whose string values are Jinja2 templates over the case's variables.
    templated: ClassVar[tuple[str, ...]] = ("value",)

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        self.options = options
        self.env = env
        self.name = options.name or options.type
        self.weight = options.weight
        self.threshold = (
            options.threshold if options.threshold is not None else self.default_threshold
        )

    def option(self, key: str, ctx: ScoreContext) -> Any:
        """The option `key`, rendered against the case's variables when it is templated."""
        value = getattr(self.options, key)
        if key in self.templated:
            return render_value(value, ctx.vars, where=f"scorer {self.name}: {key}")
        return value

    def check_case(self, vars: dict[str, Any]) -> None:
        """Raise ConfigError when a templated option cannot render for this case."""
        for key in self.templated:
            value = getattr(self.options, key, None)
            if value is not None:
                render_value(value, vars, where=f"scorer {self.name}: {key}")

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        """Compute (value, reason) for one output. Rule scorers implement this."""
        raise NotImplementedError

    async def score(self, ctx: ScoreContext) -> Score:
        """Score one output. Raise ScorerError (or anything) for an `error` result."""
        value, reason = self.evaluate(ctx)
        if not math.isfinite(float(value)):
            raise ScorerError(f"scorer {self.name} produced a non-finite score ({value})")
        value = min(1.0, max(0.0, float(value)))
        return Score(value=value, passed=value >= self.threshold, reason=reason)

    def waits(self) -> bool:
        """True when scoring may wait on something (a model, a thread, user code); a rule
        scorer (only `evaluate`) never does, so the runner need not make it a task."""
        return type(self).score is not Scorer.score

    def config(self) -> dict[str, Any]:
        """The exact configuration this scorer was built from (stored with the run)."""
        return self.options.model_dump(exclude_none=True)

    def artifacts(self) -> dict[str, list[dict[str, Any]]]:
        """Versioned artifacts this scorer uses (e.g. a judge's rubric), by kind, for lineage."""
        return {}


class NegatedScorer(Scorer):
    """`not-<type>`: passes exactly when the wrapped scorer fails; value is 1 - value."""

    def __init__(self, inner: Scorer, options: ScorerOptions) -> None:
        self.inner = inner
        self.options = options
        self.env = inner.env
        self.name = options.name or options.type
        self.weight = options.weight
        self.threshold = inner.threshold

    def check_case(self, vars: dict[str, Any]) -> None:
        self.inner.check_case(vars)

    def artifacts(self) -> dict[str, list[dict[str, Any]]]:
        return self.inner.artifacts()

    def waits(self) -> bool:
        return self.inner.waits()

    async def score(self, ctx: ScoreContext) -> Score:
        inner = await self.inner.score(ctx)
        return Score(
            value=1.0 - inner.value,
            passed=not inner.passed,
            reason=f"not ({inner.reason})" if inner.reason else "negated",
            details=inner.details,
        )


class ScorerRegistry:
    """Scorer classes keyed by the `type` name used in suite files."""

    def __init__(self) -> None:
        self._types: dict[str, type[Scorer]] = {}

    def register(self, cls: type[Scorer]) -> type[Scorer]:
        if cls.type_name in self._types:
            raise ValueError(f"scorer type {cls.type_name!r} registered twice")
        self._types[cls.type_name] = cls
        return cls

    def types(self) -> list[str]:
        return sorted(self._types)

    def get(self, type_name: str) -> type[Scorer] | None:
        return self._types.get(type_name)

    def build(self, spec: dict[str, Any], env: ScorerEnv, *, where: str = "scorers") -> Scorer:
        """Build a scorer from its suite-file mapping; bad options raise ConfigError."""
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise ConfigError("each scorer needs a 'type'", field=where)
        type_name: str = spec["type"]
        negated = type_name.startswith("not-")
        base_name = type_name[4:] if negated else type_name
        cls = self._types.get(base_name)
        if cls is None:
            hint = difflib.get_close_matches(base_name, self._types, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"unknown scorer type {type_name!r}{suggestion}; known: {', '.join(self.types())}",
                field=f"{where}.type",
            )
        try:
            options = cls.Options.model_validate({**spec, "type": base_name})
        except ValidationError as exc:
            # A typo shows up both as an unknown key and as a missing one: name the typo.
            errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
            first = errors[0]
            loc = ".".join(str(p) for p in first["loc"] if not _is_union_tag(p))
            message = str(first["msg"]).removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                key = str(first["loc"][-1])
                hint = difflib.get_close_matches(key, list(cls.Options.model_fields), n=1)
                message = f"unknown key {key!r} for scorer {type_name!r}" + (
                    f" (did you mean {hint[0]!r}?)" if hint else ""
                )
            elif first["type"] == "missing":
                message = f"scorer {type_name!r} needs {loc!r}"
            raise ConfigError(message, field=f"{where}.{loc}" if loc else where) from None
        try:
            scorer = cls(options, env)
        except ConfigError as exc:
            field_name = f"{where}.{exc.field}" if exc.field else where
            raise ConfigError(exc.message, path=exc.path, line=exc.line, field=field_name) from None
        if not negated:
            return scorer
        outer = options.model_copy(update={"type": type_name})
        return NegatedScorer(scorer, outer)


def _is_union_tag(part: Any) -> bool:
    # pydantic puts union member names ("str", "constrained-str", ...) into error locations.
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "list", "dict"}
        or "[" in part
        or part.startswith(("function-", "constrained-"))
    )


registry = ScorerRegistry()
register = registry.register
