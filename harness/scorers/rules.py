"""Rule scorers: checks of an output's text and JSON, and rules written as project functions.

Every rule returns a value in [0, 1] and a reason naming what was compared. A missing output
(None) is checked as the empty string. Text is NFC-normalized before comparison so composed and
decomposed spellings of "Zürich" compare equal.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import numbers
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BeforeValidator, Field

from harness.errors import ConfigError, ScorerError
from harness.scorers.base import Score, ScoreContext, Scorer, ScorerEnv, ScorerOptions, register
from harness.templates import is_template
from harness.userfuncs import load_function

# An expected text; YAML may give a bare number (`value: 42`), compared as its text.
Text = Annotated[
    str, BeforeValidator(lambda v: str(v) if type(v) in (int, float) else v)  # not bool
]
# An expected substring: an empty one would match every output.
Needle = Annotated[Text, Field(min_length=1)]

_FENCE = re.compile(r"\A```[ \t]*(?:json)?[ \t]*\n?(.*?)```\Z", re.DOTALL | re.IGNORECASE)
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def output_text(ctx: ScoreContext) -> str:
    """The output as NFC-normalized text; a missing output is empty."""
    return unicodedata.normalize("NFC", ctx.output or "")


def clip(text: str, limit: int = 60) -> str:
    """`text` shortened to at most `limit` characters for a reason."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show(text: str) -> str:
    """`text` quoted and shortened for a reason."""
    return repr(clip(text))


def _fold(text: str, ignore_case: bool) -> str:
    return text.casefold() if ignore_case else text


def _needle(value: Any, key: str = "value") -> str:
    """An expected text after rendering; an empty one would match anything, so it is an error."""
    text = unicodedata.normalize("NFC", str(value))
    if not text:
        raise ScorerError(f"{key} rendered to an empty string; nothing to compare")
    return text


def decode_json(text: str, allow_fence: bool) -> Any:
    """Decode strict JSON (no NaN/Infinity), optionally unwrapping a ```json fence."""
    text = text.strip()
    fenced = _FENCE.match(text) if allow_fence else None
    if fenced:
        text = fenced.group(1).strip()
    if not text:
        raise ValueError("output is empty")

    def reject(constant: str) -> Any:
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=reject)


def json_type(data: Any) -> str:
    """The JSON name of a decoded value's type."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(data), "number")


def json_text(data: Any) -> str:
    """A decoded value as short JSON text for a reason."""
    return clip(json.dumps(data, ensure_ascii=False))


def _json_equal(actual: Any, expected: Any) -> bool:
    """JSON equality: unlike Python's, `true` is not 1 and key order does not matter."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            _json_equal(actual[k], expected[k]) for k in actual
        )
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(map(_json_equal, actual, expected))
    return bool(actual == expected)


# --- text -----------------------------------------------------------------------------------


class EqualsOptions(ScorerOptions):
    value: Text
    ignore_case: bool = False
    ignore_whitespace: bool = False
    ignore_punctuation: bool = False


@register
class Equals(Scorer):
    """The output equals `value` (leading and trailing whitespace never count)."""

    type_name = "equals"
    Options = EqualsOptions
    options: EqualsOptions

    def normalize(self, text: str) -> str:
        options = self.options
        text = unicodedata.normalize("NFC", text)
        if options.ignore_punctuation:
            text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
        if options.ignore_whitespace:
            text = " ".join(text.split())
        return _fold(text, options.ignore_case).strip()

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        expected = str(self.option("value", ctx))
        if self.normalize(output_text(ctx)) == self.normalize(expected):
            return 1.0, f"output equals {show(expected)}"
        return 0.0, f"output {show(output_text(ctx).strip())} does not equal {show(expected)}"


class ContainsOptions(ScorerOptions):
    value: Needle
    ignore_case: bool = False


class IContainsOptions(ContainsOptions):
    ignore_case: Literal[True] = True


@register
class Contains(Scorer):
    """The output contains `value` as a substring."""

    type_name = "contains"
    Options: ClassVar[type[ScorerOptions]] = ContainsOptions
    options: ContainsOptions

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        ignore_case = self.options.ignore_case
        needle = _needle(self.option("value", ctx))
        found = _fold(needle, ignore_case) in _fold(output_text(ctx), ignore_case)
        case = " (ignoring case)" if ignore_case else ""
        verb = "contains" if found else "does not contain"
        return float(found), f"output {verb} {show(needle)}{case}"


@register
class IContains(Contains):
    """The output contains `value`, ignoring case (Unicode case folding)."""

    type_name = "icontains"
    Options = IContainsOptions
    options: IContainsOptions


class ContainsManyOptions(ScorerOptions):
    values: list[Needle] = Field(min_length=1)
    ignore_case: bool = False


@register
class ContainsAny(Scorer):
    """The output contains at least one of `values`."""

    type_name = "contains-any"
    Options = ContainsManyOptions
    options: ContainsManyOptions
    templated = ("values",)

    def found(self, ctx: ScoreContext) -> tuple[list[str], list[str]]:
        """(values found, values missing) in the output."""
        options = self.options
        text = _fold(output_text(ctx), options.ignore_case)
        needles = [_needle(v, "values") for v in self.option("values", ctx)]
        hits = [n for n in needles if _fold(n, options.ignore_case) in text]
        return hits, [n for n in needles if n not in hits]

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        hits, missing = self.found(ctx)
        if hits:
            return 1.0, f"output contains {show(hits[0])}"
        return 0.0, f"output contains none of {', '.join(show(n) for n in missing)}"


@register
class ContainsAll(ContainsAny):
    """The output contains every one of `values`; the value is the fraction found."""

    type_name = "contains-all"

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        hits, missing = self.found(ctx)
        total = len(hits) + len(missing)
        if not missing:
            return 1.0, f"output contains all {total} values"
        return len(hits) / total, (
            f"output contains {len(hits)} of {total} values; missing "
            + ", ".join(show(n) for n in missing)
        )


class StartsWithOptions(ScorerOptions):
    value: Needle
    ignore_case: bool = False


@register
class StartsWith(Scorer):
    """The output, after leading whitespace, starts with `value`."""

    type_name = "starts-with"
    Options = StartsWithOptions
    options: StartsWithOptions

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        ignore_case = self.options.ignore_case
        needle = _needle(self.option("value", ctx))
        found = _fold(output_text(ctx).lstrip(), ignore_case).startswith(_fold(needle, ignore_case))
        verb = "starts with" if found else "does not start with"
        return float(found), f"output {verb} {show(needle)}"


class RegexOptions(ScorerOptions):
    pattern: str
    flags: str = ""


@register
class Regex(Scorer):
    """The output matches the regular expression `pattern` anywhere (re.search)."""

    type_name = "regex"
    Options = RegexOptions
    options: RegexOptions
    templated = ()  # patterns are literal: braces are regex syntax

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        flags = 0
        for letter in self.options.flags:
            if letter not in _REGEX_FLAGS:
                known = ", ".join(_REGEX_FLAGS)
                raise ConfigError(f"unknown regex flag {letter!r}; known: {known}", field="flags")
            flags |= _REGEX_FLAGS[letter]
        try:
            self.regex = re.compile(self.options.pattern, flags)
        except re.error as exc:
            raise ConfigError(f"invalid regular expression: {exc}", field="pattern") from None

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        match = self.regex.search(output_text(ctx))
        shown = f"/{self.regex.pattern}/"
        if match is None:
            return 0.0, f"output does not match {shown}"
        return 1.0, f"output matches {shown} at {show(match.group(0))}"


# --- JSON -----------------------------------------------------------------------------------


class IsJsonOptions(ScorerOptions):
    allow_fence: bool = True


@register
class IsJson(Scorer):
    """The output is valid JSON (optionally wrapped in a ```json fence)."""

    type_name = "is-json"
    Options = IsJsonOptions
    options: IsJsonOptions
    templated = ()

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        try:
            data = decode_json(output_text(ctx), self.options.allow_fence)
        except ValueError as exc:
            return 0.0, f"output is not valid JSON: {exc}"
        return 1.0, f"output is valid JSON ({json_type(data)})"


class JsonSchemaOptions(ScorerOptions):
    schema_: dict[str, Any] | bool | None = Field(default=None, alias="schema")
    schema_file: str | None = None
    allow_fence: bool = True


@register
class JsonSchema(Scorer):
    """The output is JSON valid against a JSON Schema (inline `schema` or `schema_file`)."""

    type_name = "json-schema"
    Options = JsonSchemaOptions
    options: JsonSchemaOptions
    templated = ()

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        if (self.options.schema_ is None) == (self.options.schema_file is None):
            raise ConfigError("give exactly one of 'schema' or 'schema_file'", field="schema")
        schema = self.options.schema_
        if self.options.schema_file is not None:
            schema = _load_schema(env.base_dir / self.options.schema_file)
        import jsonschema  # ~45 ms of import: only suites that validate JSON pay it

        validator_class = jsonschema.validators.validator_for(schema)
        try:
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as exc:
            field = "schema_file" if self.options.schema_file else "schema"
            raise ConfigError(f"invalid JSON Schema: {exc.message}", field=field) from None
        self.validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
        self._best_match = jsonschema.exceptions.best_match

    def config(self) -> dict[str, Any]:
        return self.options.model_dump(exclude_none=True, by_alias=True)

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        try:
            data = decode_json(output_text(ctx), self.options.allow_fence)
        except ValueError as exc:
            return 0.0, f"output is not valid JSON: {exc}"
        error = self._best_match(self.validator.iter_errors(data))
        if error is None:
            return 1.0, "output matches the JSON Schema"
        return 0.0, f"output does not match the JSON Schema at {error.json_path}: {error.message}"


def _load_schema(path: Path) -> Any:
    """Read a schema file (JSON, or YAML by suffix) as a build-time ConfigError on failure."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read schema {path}: {exc}", field="schema_file") from None


class JsonPathOptions(ScorerOptions):
    path: str
    value: Any = None
    allow_fence: bool = True


@register
class JsonPath(Scorer):
    """The value at a JSONPath in the JSON output equals `value` (or, without `value`, exists).

    One match is compared itself, several as a list. A templated `value` renders to text, so it
    also matches when the text decodes as JSON to the found value (`{{ n }}` matches 3).
    """

    type_name = "json-path"
    Options = JsonPathOptions
    options: JsonPathOptions

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        from jsonpath_ng.ext import parse as parse_jsonpath

        try:
            self.expression = parse_jsonpath(self.options.path)
        except Exception as exc:  # jsonpath-ng raises bare Exception on parse errors
            raise ConfigError(
                f"invalid JSONPath {self.options.path!r}: {exc}", field="path"
            ) from None

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        options = self.options
        try:
            data = decode_json(output_text(ctx), options.allow_fence)
        except ValueError as exc:
            return 0.0, f"output is not valid JSON: {exc}"
        matches = [m.value for m in self.expression.find(data)]
        if not matches:
            return 0.0, f"{options.path} not found in output"
        actual = matches[0] if len(matches) == 1 else matches
        if "value" not in options.model_fields_set:
            return 1.0, f"{options.path} found: {json_text(actual)}"
        expected = self.option("value", ctx)
        candidates = [expected]
        if isinstance(options.value, str) and is_template(options.value):
            with contextlib.suppress(ValueError):
                candidates.append(json.loads(expected))
        if any(_json_equal(actual, candidate) for candidate in candidates):
            return 1.0, f"{options.path} equals {json_text(actual)}"
        return 0.0, f"{options.path} is {json_text(actual)}, not {json_text(expected)}"

    def config(self) -> dict[str, Any]:
        # `value: null` (expect null) differs from no value (expect the path to exist).
        config = super().config()
        if "value" in self.options.model_fields_set:
            config["value"] = self.options.value
        return config


# --- user code ------------------------------------------------------------------------------


class PythonOptions(ScorerOptions):
    function: str
    args: dict[str, Any] = Field(default_factory=dict)


@register
class Python(Scorer):
    """A project function `module:function`, called as `function(output, ctx, **args)`.

    `output` is "" when there is none. It may be sync or async and return a bool, a number in
    [0, 1], a (number, reason) tuple, a dict with `score`/`passed`/`reason`/`details`, or a
    Score. String args are templates.
    """

    type_name = "python"
    Options = PythonOptions
    options: PythonOptions
    templated = ("args",)

    def __init__(self, options: ScorerOptions, env: ScorerEnv) -> None:
        super().__init__(options, env)
        self.function = load_function(self.options.function, env.project_dir, where="function")

    async def score(self, ctx: ScoreContext) -> Score:
        ref = self.options.function
        args = self.option("args", ctx)
        try:
            result = self.function(ctx.output or "", ctx, **args)
            if inspect.isawaitable(result):
                result = await result
        except ScorerError:
            raise
        except Exception as exc:  # user code: any crash is an `error` result, not a fail
            raise ScorerError(f"{ref} raised {exc!r}", kind="user_function") from exc
        return self.to_score(result, ref)

    def to_score(self, result: Any, ref: str) -> Score:
        """Turn what the user function returned into a Score; anything unexpected is an error."""
        if isinstance(result, Score):
            return Score(_unit(result.value, ref), result.passed, result.reason, result.details)
        fields: dict[str, Any] = {"score": result}
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
            fields = {"score": result[0], "reason": result[1]}
        elif isinstance(result, dict):
            fields = result
            if set(fields) - _RESULT_KEYS or not {"score", "passed"} & set(fields):
                raise ScorerError(
                    f"{ref} returned a dict with keys {sorted(fields)}; expected 'score' and/or "
                    "'passed', optionally 'reason' and 'details'",
                    kind="user_function",
                )
        passed = fields.get("passed")
        if passed is not None and not isinstance(passed, bool):
            raise ScorerError(f"{ref} returned passed={passed!r}", kind="user_function")
        value = _unit(fields.get("score", passed), ref)
        verdict = value >= self.threshold if passed is None else passed
        reason = str(fields.get("reason", f"{ref} returned {result!r}"))
        return Score(value, verdict, reason, fields.get("details"))


_RESULT_KEYS = {"score", "passed", "reason", "details"}


def _unit(result: Any, ref: str) -> float:
    """A user function's score as a float in [0, 1]; booleans count as 1 and 0."""
    if isinstance(result, bool | numbers.Real) and 0.0 <= float(result) <= 1.0:
        return float(result)
    raise ScorerError(
        f"{ref} returned {result!r}; expected a bool, a number in [0, 1], a (number, reason) "
        "tuple, a dict with 'score'/'passed'/'reason', or a Score",
        kind="user_function",
    )
