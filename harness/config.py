"""Pydantic models of every user-written YAML file, validated with file:line: field errors."""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.datasets import DatasetSpec
from harness.errors import ConfigError
from harness.yamlfile import Loc, YamlDoc

# Strings that look like real credentials; a config file holding one is refused.
SECRET_PATTERN = re.compile(
    r"\b(sk-[A-Za-z0-9_\-]{20,}|sk-ant-[A-Za-z0-9_\-]{20,}|AIza[0-9A-Za-z_\-]{35}"
    r"|ghp_[A-Za-z0-9]{30,}|xox[bp]-[A-Za-z0-9\-]{20,}|AKIA[0-9A-Z]{16})"
)
SECRET_KEYS = {"api_key", "apikey", "api-key", "token", "secret", "password", "authorization"}


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Message(Strict):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class PromptConfig(Strict):
    """prompts/<name>.yaml: chat message templates plus model params, tools, response_format."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    messages: list[Message] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class Price(Strict):
    """A per-model price override, in US dollars per million tokens."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class ModelConfig(Strict):
    """One model under evaluation: a litellm model string plus how to reach and pace it."""

    id: str = Field(min_length=1)
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    api_base: str | None = None
    api_version: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    concurrency: int | None = Field(default=None, ge=1, le=1024)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    retry_budget_s: float = Field(default=180.0, gt=0)
    backoff_s: float = Field(default=0.5, ge=0)
    price: Price | None = None
    litellm: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_literal_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("api_key", "apikey", "key"):
                if key in data:
                    raise ValueError(
                        f"literal API keys are not allowed in files ('{key}'); "
                        "name an environment variable with api_key_env"
                    )
        if isinstance(data, str):
            return {"id": data}
        return data

    @field_validator("litellm")
    @classmethod
    def _no_keys_in_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key.lower() in SECRET_KEYS or "key" in key.lower():
                raise ValueError(f"'{key}' may not be set in a file; use api_key_env")
        return value

    @property
    def label(self) -> str:
        """How results name this model (its `name`, else its id)."""
        return self.name or self.id


class TargetConfig(Strict):
    """What is evaluated: chat (prompt -> model), replay (outputs in the dataset), python
    (the user's function), agent (the model calling the suite's tools until it answers), rag
    (retrieve with a retrieval config, then prompt -> model), retrieval (retrieve only)."""

    type: Literal["chat", "replay", "python", "agent", "rag", "retrieval"]
    function: str | None = None
    output_field: str = "output"
    tools: list[str] = Field(default_factory=list)
    max_steps: int = Field(default=8, ge=1, le=100)
    retrieval: str | None = Field(default=None, min_length=1)  # retrieval/<name>.yaml or a path
    top_k: int | None = Field(default=None, ge=1, le=1000)  # overrides the config's search.top_k
    query: str | None = Field(default=None, min_length=1)  # template over the case's variables
    filters: dict[str, Any] | None = None  # metadata filters, values templated per case

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data.startswith("python:"):
                return {"type": "python", "function": data.removeprefix("python:")}
            return {"type": data}
        if isinstance(data, dict) and "python" in data and "type" not in data:
            rest = {k: v for k, v in data.items() if k != "python"}
            return {"type": "python", "function": data["python"], **rest}
        return data

    @model_validator(mode="after")
    def _function_for_python(self) -> TargetConfig:
        if self.type == "python" and not self.function:
            raise ValueError("a python target needs 'function: module:function'")
        if self.type == "agent" and not self.tools:
            raise ValueError("an agent target needs 'tools: [module:function, ...]'")
        if self.type in ("rag", "retrieval"):
            if not self.retrieval:
                raise ValueError(
                    f"a {self.type} target needs 'retrieval: <name>' "
                    "(retrieval/<name>.yaml, or a .yaml path)"
                )
        else:
            for key in ("retrieval", "top_k", "query", "filters"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' applies only to rag and retrieval targets")
        return self


def _fraction(value: Any) -> Any:
    """'10%' -> 0.1; numbers pass through (fractions: 0.1 is ten percent)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage") from None
    return value


class GatePolicy(Strict):
    """A suite's `gate:` block: when a candidate run fails CI against its baseline.

    Fractions may be written as numbers (0.05) or percentages ('5%'). `max_drop` is in absolute
    pass-rate points, one value for every metric or a mapping by metric name (a scorer's name,
    `all` for every scorer passing, `default` for the rest).
    """

    max_drop: float | dict[str, float] = 0.0
    alpha: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["holm", "none"] = "holm"
    max_cost_increase: float | None = Field(default=None, ge=0)
    max_cost_per_case_increase: float | None = Field(default=None, ge=0)
    max_latency_increase: float | None = Field(default=None, ge=0)
    critical: list[str] = Field(default_factory=list)
    max_error_rate: float = Field(default=0.10, ge=0, le=1)
    min_kappa: float | None = Field(default=None, ge=-1, le=1)

    @field_validator("max_drop", mode="before")
    @classmethod
    def _drops(cls, value: Any) -> Any:
        drops = value if isinstance(value, dict) else {"default": value}
        parsed = {key: _fraction(item) for key, item in drops.items()}
        for key, item in parsed.items():
            if not isinstance(item, int | float) or not 0 <= item <= 1:
                raise ValueError(f"max_drop {key!r} must be a fraction in [0, 1], got {item!r}")
        return parsed if isinstance(value, dict) else parsed["default"]

    @field_validator(
        "max_cost_increase",
        "max_cost_per_case_increase",
        "max_latency_increase",
        "max_error_rate",
        mode="before",
    )
    @classmethod
    def _percent(cls, value: Any) -> Any:
        return _fraction(value)

    def drop_for(self, metric: str) -> float:
        """The allowed pass-rate drop of one metric."""
        if isinstance(self.max_drop, dict):
            return float(self.max_drop.get(metric, self.max_drop.get("default", 0.0)))
        return float(self.max_drop)


class SuiteConfig(Strict):
    """evalsets/<name>.yaml: dataset x prompt x target x models x scorers, plus thresholds."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    dataset: DatasetSpec
    prompt: str | None = None
    target: TargetConfig = Field(default_factory=lambda: TargetConfig(type="chat"))
    models: list[ModelConfig] = Field(default_factory=list)
    scorers: list[dict[str, Any]] = Field(min_length=1)
    thresholds: dict[str, float] = Field(default_factory=dict)
    repeat: int = Field(default=1, ge=1, le=100)
    seed: int = 0
    concurrency: int | None = Field(default=None, ge=1, le=1024)
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    gate: GatePolicy | None = None

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("thresholds")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for key, rate in value.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"threshold {key!r} must be a pass rate in [0, 1], got {rate}")
        return value

    @model_validator(mode="after")
    def _needs_prompt_and_models(self) -> SuiteConfig:
        if self.target.type in ("chat", "agent", "rag"):
            if not self.prompt:
                raise ValueError(f"a {self.target.type} target needs 'prompt'")
            if not self.models:
                raise ValueError(f"a {self.target.type} target needs at least one model")
        if self.target.type == "retrieval" and (self.prompt or self.models):
            raise ValueError(
                "a retrieval target calls no model and renders no prompt; remove "
                "'prompt' and 'models' (or use type: rag)"
            )
        labels = [m.label for m in self.models]
        dupes = {x for x in labels if labels.count(x) > 1}
        if dupes:
            raise ValueError(f"duplicate model {sorted(dupes)[0]!r}; give one a distinct 'name'")
        return self


M = TypeVar("M", bound=BaseModel)


def _describe(error: dict[str, Any], model: type[BaseModel], loc: Loc) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        known = _known_fields(model, loc[:-1])
        hint = difflib.get_close_matches(key, known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"unknown key {key!r}{suggestion}"
    if kind == "missing":
        return "required field missing"
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def _known_fields(model: type[BaseModel], loc: Loc) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return []
        annotation = info.annotation
        current = _first_model(annotation)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _first_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def validate(doc: YamlDoc, model: type[M]) -> M:
    """Validate a YAML document against `model`; the first problem becomes a ConfigError."""
    if not isinstance(doc.data, dict):
        raise doc.error("expected a mapping at the top of the file")
    check_no_secrets(doc)
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if not _is_union_tag(p))
        raise doc.error(_describe(dict(first), model, loc), loc) from None


def _is_union_tag(part: Any) -> bool:
    # pydantic puts validator/union member names ("function-before[...]") into locations.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def check_no_secrets(doc: YamlDoc) -> None:
    """Refuse a file holding a literal credential anywhere in its values."""

    def walk(value: Any, loc: Loc) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*loc, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, (*loc, index))
        elif isinstance(value, str) and SECRET_PATTERN.search(value):
            raise doc.error(
                "this looks like a literal API key; keep keys in the environment "
                "(api_key_env: NAME)",
                loc,
            )

    walk(doc.data, ())


def suite_schema() -> dict[str, Any]:
    """JSON Schema of suite files (for editors' autocomplete)."""
    return SuiteConfig.model_json_schema()


def schema_for(kind: str) -> dict[str, Any]:
    """JSON Schema for one file kind: suite or prompt."""
    models: dict[str, type[BaseModel]] = {"suite": SuiteConfig, "prompt": PromptConfig}
    if kind not in models:
        raise ConfigError(f"unknown schema {kind!r}; choose one of {', '.join(models)}")
    return models[kind].model_json_schema()
