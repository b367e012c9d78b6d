"""Tests of the rule and metric scorers, built and scored through the registry like the runner."""

from __future__ import annotations

import importlib
import json
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness.cases import Case
from harness.errors import ConfigError, ScorerError
from harness.scorers import Score, ScoreContext, Scorer, ScorerEnv, build_scorer, registry

CASE = Case(
    id="case-1",
    fields={"country": "Switzerland", "city": "Zürich", "n": 42, "big": "1,234.5", "blank": ""},
    expected="Paris",
)
# Scorers that read no files get an env pointing nowhere, so an accidental read fails loudly.
NOWHERE = ScorerEnv(project_dir=Path("/nonexistent-project"), base_dir=Path("/nonexistent-project"))


def build(spec: dict[str, Any], env: ScorerEnv = NOWHERE, where: str = "scorers") -> Scorer:
    return registry.build(spec, env, where=where)


async def score(
    spec: dict[str, Any],
    output: str | None,
    *,
    case: Case = CASE,
    env: ScorerEnv = NOWHERE,
    **context: Any,
) -> Score:
    scorer = build(spec, env)
    return await scorer.score(
        ScoreContext(case=case, output=output, vars=case.template_vars(), **context)
    )


def config_error(spec: dict[str, Any], env: ScorerEnv = NOWHERE) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(spec, env)
    return info.value


# --- the registry ---------------------------------------------------------------------------


def test_every_rule_and_metric_type_is_registered() -> None:
    assert set(registry.types()) >= {
        "equals",
        "contains",
        "icontains",
        "contains-any",
        "contains-all",
        "starts-with",
        "regex",
        "is-json",
        "json-schema",
        "json-path",
        "number",
        "similarity",
        "rouge-l",
        "bleu",
        "length",
        "latency",
        "cost",
        "python",
    }
    assert build_scorer == registry.build


def test_unknown_type_is_a_config_error_with_a_hint() -> None:
    error = config_error({"type": "icontain", "value": "x"})
    assert error.field == "scorers.type"
    assert "unknown scorer type 'icontain' (did you mean 'icontains'?)" in error.message


def test_unknown_negated_type_gets_the_hint_too() -> None:
    error = config_error({"type": "not-contians", "value": "x"})
    assert "(did you mean 'contains'?)" in error.message


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "number", "value": 3, "tolerence": 1}, "scorers.tolerence"),
        ({"type": "contains", "value": "Paris", "ignorecase": True}, "scorers.ignorecase"),
        ({"type": "icontains", "value": "Paris", "ignore_case": False}, "scorers.ignore_case"),
        ({"type": "regex", "pattern": "x", "value": "x"}, "scorers.value"),
        ({"type": "latency", "max_ms": 100, "max_usd": 1}, "scorers.max_usd"),
        ({"type": "number", "value": 1, "tolerance": "loose"}, "scorers.tolerance"),
        ({"type": "number", "value": 1, "tolerance": -1}, "scorers.tolerance"),
        ({"type": "contains", "value": "x", "threshold": 1.5}, "scorers.threshold"),
        ({"type": "contains", "value": "x", "weight": -1}, "scorers.weight"),
        ({"type": "contains"}, "scorers.value"),
        ({"type": "contains", "value": ""}, "scorers.value"),
        ({"type": "equals", "value": ["Paris"]}, "scorers.value"),
        ({"type": "number", "value": {"n": 1}}, "scorers.value"),
        ({"type": "contains-any", "values": []}, "scorers.values"),
        ({"type": "similarity", "value": "x", "method": "jaro"}, "scorers.method"),
        ({"type": "length", "max": 3, "unit": "tokens"}, "scorers.unit"),
    ],
)
def test_bad_options_are_config_errors_naming_the_field(spec: dict[str, Any], field: str) -> None:
    assert config_error(spec).field == field


def test_config_error_field_is_prefixed_with_where() -> None:
    with pytest.raises(ConfigError) as info:
        build({"type": "regex", "pattern": "("}, where="scorers[2]")
    assert info.value.field == "scorers[2].pattern"


def test_weight_threshold_and_name_are_kept() -> None:
    scorer = build({"type": "similarity", "value": "x", "weight": 2.5, "threshold": 0.6})
    assert (scorer.weight, scorer.threshold, scorer.name) == (2.5, 0.6, "similarity")
    named = build({"type": "contains", "value": "x", "name": "mentions x"})
    assert named.name == "mentions x"


@pytest.mark.parametrize(
    ("spec", "threshold"),
    [
        ({"type": "equals", "value": "x"}, 1.0),
        ({"type": "contains-all", "values": ["x"]}, 1.0),
        ({"type": "similarity", "value": "x"}, 0.8),
        ({"type": "rouge-l", "value": "x"}, 0.5),
        ({"type": "bleu", "value": "x"}, 0.3),
    ],
)
def test_default_thresholds(spec: dict[str, Any], threshold: float) -> None:
    assert build(spec).threshold == threshold


def test_config_records_the_options_and_rebuilds_the_same_scorer() -> None:
    scorer = build({"type": "number", "value": "{{ n }}", "tolerance": 0.5})
    assert scorer.config() == {
        "type": "number",
        "value": "{{ n }}",
        "tolerance": 0.5,
        "relative": 0.0,
        "weight": 1.0,
    }
    assert build(scorer.config()).config() == scorer.config()


async def test_threshold_decides_the_verdict_on_partial_values() -> None:
    spec = {"type": "contains-all", "values": ["Paris", "Lyon", "Nice"]}
    strict = await score(spec, "Paris and Lyon")
    lenient = await score({**spec, "threshold": 0.6}, "Paris and Lyon")
    assert (strict.value, strict.passed) == (pytest.approx(2 / 3), False)
    assert (lenient.value, lenient.passed) == (pytest.approx(2 / 3), True)


async def test_missing_template_variable_is_a_config_error_before_scoring() -> None:
    scorer = build({"type": "contains", "value": "{{ capital }}"})
    with pytest.raises(ConfigError) as info:
        scorer.check_case(CASE.template_vars())
    assert info.value.field == "scorer contains: value"
    assert "capital" in info.value.message


# --- negation -------------------------------------------------------------------------------


async def test_not_contains_passes_when_the_value_is_absent() -> None:
    result = await score({"type": "not-contains", "value": "Paris"}, "It is Lyon.")
    assert (result.value, result.passed) == (1.0, True)
    assert result.reason == "not (output does not contain 'Paris')"


async def test_not_contains_fails_when_the_value_is_present() -> None:
    result = await score({"type": "not-contains", "value": "{{ expected }}"}, "Paris!")
    assert (result.value, result.passed, result.reason) == (
        0.0,
        False,
        "not (output contains 'Paris')",
    )


async def test_negation_keeps_the_type_in_the_recorded_config() -> None:
    scorer = build({"type": "not-regex", "pattern": "sorry", "flags": "i"})
    assert scorer.config()["type"] == "not-regex"
    assert (await score(scorer.config(), "Sorry, I cannot.")).passed is False
    assert (await score(scorer.config(), "Bern")).passed is True


async def test_negated_continuous_scorer_inverts_value_and_verdict() -> None:
    result = await score({"type": "not-similarity", "value": "Paris"}, "Pariss")
    assert result.value == pytest.approx(1 - 10 / 11)
    assert result.passed is False


async def test_negation_does_not_turn_an_error_into_a_pass() -> None:
    with pytest.raises(ScorerError):
        await score({"type": "not-latency", "max_ms": 100}, "x", latency_ms=None)


# --- templates over case variables ----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "output"),
    [
        ({"type": "equals", "value": "{{ expected }}"}, "Paris"),
        ({"type": "contains", "value": "{{ expected }}"}, "It is Paris."),
        ({"type": "icontains", "value": "{{ city }}"}, "ZÜRICH"),
        ({"type": "contains-any", "values": ["{{ expected }}", "Lyon"]}, "Paris"),
        (
            {"type": "contains-all", "values": ["{{ city }}", "{{ country }}"]},
            "Zürich, Switzerland",
        ),
        ({"type": "starts-with", "value": "{{ expected }}"}, "Paris is the capital"),
        (
            {"type": "json-path", "path": "$.answer", "value": "{{ expected }}"},
            '{"answer": "Paris"}',
        ),
        ({"type": "number", "value": "{{ n }}"}, "42"),
        ({"type": "similarity", "value": "{{ city }}"}, "Zürich"),
        ({"type": "rouge-l", "value": "{{ city }}"}, "Zürich"),
        ({"type": "bleu", "value": "{{ country }} is nice"}, "Switzerland is nice"),
        ({"type": "bleu", "values": ["{{ expected }}", "{{ city }}"]}, "Zürich"),
    ],
)
async def test_expected_values_are_templates_over_case_variables(
    spec: dict[str, Any], output: str
) -> None:
    result = await score(spec, output)
    assert (result.value, result.passed) == (1.0, True), result.reason


async def test_a_value_rendering_empty_is_an_error_not_a_vacuous_pass() -> None:
    with pytest.raises(ScorerError, match="empty"):
        await score({"type": "contains", "value": "{{ blank }}"}, "anything")


# --- equals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "output", "value"),
    [
        ({"value": "Paris"}, "Paris", 1.0),
        ({"value": "Paris"}, "  Paris\n", 1.0),
        ({"value": "Paris"}, "paris", 0.0),
        ({"value": "Paris", "ignore_case": True}, "PARIS", 1.0),
        ({"value": "straße", "ignore_case": True}, "STRASSE", 1.0),
        ({"value": "New York"}, "New   York", 0.0),
        ({"value": "New York", "ignore_whitespace": True}, "New \t York\n", 1.0),
        ({"value": "Paris"}, "Paris.", 0.0),
        ({"value": "Paris", "ignore_punctuation": True}, "Paris.", 1.0),
        ({"value": "Hola", "ignore_punctuation": True}, "¡Hola!", 1.0),
        ({"value": "Zürich", "ignore_punctuation": True}, "«Zürich»", 1.0),
        ({"value": "東京", "ignore_punctuation": True}, "東京。", 1.0),
        ({"value": "Zürich"}, "Zu\u0308rich", 1.0),  # decomposed ü
        ({"value": 42}, "42", 1.0),
        ({"value": "Paris"}, "", 0.0),
        ({"value": "Paris"}, None, 0.0),
        ({"value": ""}, None, 1.0),
    ],
)
async def test_equals(options: dict[str, Any], output: str | None, value: float) -> None:
    result = await score({"type": "equals", **options}, output)
    assert (result.value, result.passed) == (value, value == 1.0)


async def test_equals_reasons() -> None:
    passed = await score({"type": "equals", "value": "Paris"}, "Paris")
    failed = await score({"type": "equals", "value": "Paris"}, " paris \n")
    assert passed.reason == "output equals 'Paris'"
    assert failed.reason == "output 'paris' does not equal 'Paris'"


# --- contains family ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "output", "value", "reason"),
    [
        ({"type": "contains", "value": "Paris"}, "It is Paris.", 1.0, "output contains 'Paris'"),
        (
            {"type": "contains", "value": "paris"},
            "It is Paris.",
            0.0,
            "output does not contain 'paris'",
        ),
        (
            {"type": "contains", "value": "paris", "ignore_case": True},
            "It is Paris.",
            1.0,
            "output contains 'paris' (ignoring case)",
        ),
        (
            {"type": "icontains", "value": "paris"},
            "It is PARIS.",
            1.0,
            "output contains 'paris' (ignoring case)",
        ),
        (
            {"type": "icontains", "value": "ZÜRICH"},
            "in zürich",
            1.0,
            "output contains 'ZÜRICH' (ignoring case)",
        ),
        ({"type": "contains", "value": "東京"}, "首都は東京です", 1.0, "output contains '東京'"),
        ({"type": "contains", "value": 42}, "the answer is 42", 1.0, "output contains '42'"),
        ({"type": "contains", "value": "Paris"}, "", 0.0, "output does not contain 'Paris'"),
        (
            {"type": "icontains", "value": "Paris"},
            None,
            0.0,
            "output does not contain 'Paris' (ignoring case)",
        ),
    ],
)
async def test_contains(
    spec: dict[str, Any], output: str | None, value: float, reason: str
) -> None:
    result = await score(spec, output)
    assert (result.value, result.passed, result.reason) == (value, value == 1.0, reason)


@pytest.mark.parametrize(
    ("spec", "output", "value", "reason"),
    [
        (
            {"type": "contains-any", "values": ["Paris", "Lyon"]},
            "Lyon is nice",
            1.0,
            "output contains 'Lyon'",
        ),
        (
            {"type": "contains-any", "values": ["Paris", "Lyon"]},
            "Bern",
            0.0,
            "output contains none of 'Paris', 'Lyon'",
        ),
        (
            {"type": "contains-any", "values": ["paris"], "ignore_case": True},
            "PARIS",
            1.0,
            "output contains 'paris'",
        ),
        (
            {"type": "contains-any", "values": ["Paris", "東京"]},
            None,
            0.0,
            "output contains none of 'Paris', '東京'",
        ),
        (
            {"type": "contains-all", "values": ["Zürich", "東京"]},
            "Zürich und 東京",
            1.0,
            "output contains all 2 values",
        ),
        (
            {"type": "contains-all", "values": ["Paris", "Lyon", "Bern"]},
            "Paris, Lyon",
            2 / 3,
            "output contains 2 of 3 values; missing 'Bern'",
        ),
        (
            {"type": "contains-all", "values": ["paris", "lyon"], "ignore_case": True},
            "Paris, Lyon",
            1.0,
            "output contains all 2 values",
        ),
        (
            {"type": "contains-all", "values": ["Paris", "Lyon"]},
            "",
            0.0,
            "output contains 0 of 2 values; missing 'Paris', 'Lyon'",
        ),
    ],
)
async def test_contains_any_and_all(
    spec: dict[str, Any], output: str | None, value: float, reason: str
) -> None:
    result = await score(spec, output)
    assert result.value == pytest.approx(value)
    assert (result.passed, result.reason) == (value == 1.0, reason)


@pytest.mark.parametrize(
    ("options", "output", "value", "reason"),
    [
        ({"value": "Paris"}, "\n  Paris is big", 1.0, "output starts with 'Paris'"),
        ({"value": "Paris"}, "The capital is Paris", 0.0, "output does not start with 'Paris'"),
        ({"value": "paris"}, "Paris", 0.0, "output does not start with 'paris'"),
        ({"value": "paris", "ignore_case": True}, "Paris", 1.0, "output starts with 'paris'"),
        ({"value": "東京"}, "東京です", 1.0, "output starts with '東京'"),
        ({"value": "Paris"}, None, 0.0, "output does not start with 'Paris'"),
    ],
)
async def test_starts_with(
    options: dict[str, Any], output: str | None, value: float, reason: str
) -> None:
    result = await score({"type": "starts-with", **options}, output)
    assert (result.value, result.passed, result.reason) == (value, value == 1.0, reason)


# --- regex ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "output", "value"),
    [
        ({"pattern": r"\bParis\b"}, "It is Paris.", 1.0),
        ({"pattern": r"\bParis\b"}, "It is Parisian.", 0.0),
        ({"pattern": "paris"}, "PARIS", 0.0),
        ({"pattern": "paris", "flags": "i"}, "PARIS", 1.0),
        ({"pattern": "^B"}, "A\nB", 0.0),
        ({"pattern": "^B", "flags": "m"}, "A\nB", 1.0),
        ({"pattern": "A.B"}, "A\nB", 0.0),
        ({"pattern": "a.b", "flags": "si"}, "A\nB", 1.0),
        ({"pattern": r"\d{3}"}, "code 123", 1.0),
        ({"pattern": "東京|Zürich"}, "in Zürich", 1.0),
        ({"pattern": "^$"}, None, 1.0),
        ({"pattern": "x"}, None, 0.0),
        # patterns are literal: Jinja braces are not rendered
        ({"pattern": "{{ expected }}"}, "Paris", 0.0),
        ({"pattern": "{{ expected }}"}, "{{ expected }}", 1.0),
    ],
)
async def test_regex(options: dict[str, Any], output: str | None, value: float) -> None:
    result = await score({"type": "regex", **options}, output)
    assert (result.value, result.passed) == (value, value == 1.0)


async def test_regex_reasons() -> None:
    passed = await score({"type": "regex", "pattern": r"\d+"}, "it costs 12 francs")
    failed = await score({"type": "regex", "pattern": r"\d+"}, "free")
    assert passed.reason == r"output matches /\d+/ at '12'"
    assert failed.reason == r"output does not match /\d+/"


def test_invalid_regex_is_a_config_error_naming_the_pattern() -> None:
    error = config_error({"type": "regex", "pattern": "(unclosed"})
    assert error.field == "scorers.pattern"
    assert error.message.startswith("invalid regular expression: missing )")


def test_unknown_regex_flag_is_a_config_error() -> None:
    error = config_error({"type": "regex", "pattern": "x", "flags": "iq"})
    assert error.field == "scorers.flags"
    assert "'q'" in error.message


# --- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "output", "value", "reason"),
    [
        ({}, '{"a": 1}', 1.0, "output is valid JSON (object)"),
        ({}, " [1, 2]\n", 1.0, "output is valid JSON (array)"),
        ({}, '"東京"', 1.0, "output is valid JSON (string)"),
        ({}, '```json\n{"a": 1}\n```', 1.0, "output is valid JSON (object)"),
        ({}, "```\n[true]\n```", 1.0, "output is valid JSON (array)"),
        (
            {"allow_fence": False},
            "```json\n{}\n```",
            0.0,
            "output is not valid JSON: Expecting value: line 1 column 1 (char 0)",
        ),
        ({}, "NaN", 0.0, "output is not valid JSON: NaN is not valid JSON"),
        ({}, "{'a': 1}", 0.0, None),
        ({}, "Sure! ```json\n{}\n```", 0.0, None),
        ({}, "", 0.0, "output is not valid JSON: output is empty"),
        ({}, None, 0.0, "output is not valid JSON: output is empty"),
    ],
)
async def test_is_json(
    options: dict[str, Any], output: str | None, value: float, reason: str | None
) -> None:
    result = await score({"type": "is-json", **options}, output)
    assert (result.value, result.passed) == (value, value == 1.0)
    if reason is not None:
        assert result.reason == reason
    else:
        assert result.reason.startswith("output is not valid JSON: ")


ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer"],
}


@pytest.mark.parametrize(
    ("output", "value", "reason"),
    [
        ('{"answer": "東京", "confidence": 0.9}', 1.0, "output matches the JSON Schema"),
        ('```json\n{"answer": "Paris"}\n```', 1.0, "output matches the JSON Schema"),
        (
            '{"answer": 7}',
            0.0,
            "output does not match the JSON Schema at $.answer: 7 is not of type 'string'",
        ),
        (
            '{"confidence": 1}',
            0.0,
            "output does not match the JSON Schema at $: 'answer' is a required property",
        ),
        ("Paris", 0.0, "output is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (None, 0.0, "output is not valid JSON: output is empty"),
    ],
)
async def test_json_schema_inline(output: str | None, value: float, reason: str) -> None:
    result = await score({"type": "json-schema", "schema": ANSWER_SCHEMA}, output)
    assert (result.value, result.passed, result.reason) == (value, value == 1.0, reason)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
async def test_json_schema_file_is_relative_to_base_dir(tmp_path: Path, suffix: str) -> None:
    (tmp_path / "schemas").mkdir()
    text = json.dumps(ANSWER_SCHEMA)  # JSON is also YAML
    (tmp_path / "schemas" / f"answer{suffix}").write_text(text, encoding="utf-8")
    env = ScorerEnv(project_dir=tmp_path / "elsewhere", base_dir=tmp_path)
    spec = {"type": "json-schema", "schema_file": f"schemas/answer{suffix}"}
    assert (await score(spec, '{"answer": "Bern"}', env=env)).value == 1.0
    assert (await score(spec, '{"answer": null}', env=env)).value == 0.0


def test_json_schema_config_uses_the_yaml_name() -> None:
    scorer = build({"type": "json-schema", "schema": {"type": "object"}})
    assert scorer.config() == {
        "type": "json-schema",
        "schema": {"type": "object"},
        "allow_fence": True,
        "weight": 1.0,
    }


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"type": "json-schema", "schema": {"type": "nope"}}, "scorers.schema", "invalid JSON"),
        ({"type": "json-schema"}, "scorers.schema", "exactly one"),
        (
            {"type": "json-schema", "schema": {}, "schema_file": "a.json"},
            "scorers.schema",
            "exactly one",
        ),
        ({"type": "json-schema", "schema_file": "missing.json"}, "scorers.schema_file", "cannot"),
        ({"type": "json-schema", "schema_file": "broken.json"}, "scorers.schema_file", "cannot"),
    ],
)
def test_bad_json_schema_is_a_config_error(
    tmp_path: Path, spec: dict[str, Any], field: str, message: str
) -> None:
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    error = config_error(spec, ScorerEnv(project_dir=tmp_path, base_dir=tmp_path))
    assert error.field == field
    assert message in error.message


@pytest.mark.parametrize(
    ("options", "output", "value", "reason"),
    [
        (
            {"path": "$.answer", "value": "Paris"},
            '{"answer": "Paris"}',
            1.0,
            '$.answer equals "Paris"',
        ),
        (
            {"path": "$.answer", "value": "Paris"},
            '{"answer": "Lyon"}',
            0.0,
            '$.answer is "Lyon", not "Paris"',
        ),
        ({"path": "$.city", "value": "東京"}, '{"city": "東京"}', 1.0, '$.city equals "東京"'),
        ({"path": "$.n", "value": 42}, '{"n": 42.0}', 1.0, "$.n equals 42.0"),
        ({"path": "$.n", "value": 1}, '{"n": true}', 0.0, "$.n is true, not 1"),
        ({"path": "$.ok", "value": True}, '{"ok": 1}', 0.0, "$.ok is 1, not true"),
        ({"path": "$.x", "value": None}, '{"x": null}', 1.0, "$.x equals null"),
        ({"path": "$.x", "value": None}, '{"x": 0}', 0.0, "$.x is 0, not null"),
        (
            {"path": "$.a", "value": {"b": [1, 2]}},
            '{"a": {"b": [1, 2]}}',
            1.0,
            '$.a equals {"b": [1, 2]}',
        ),
        (
            {"path": "$.items[*].id", "value": [1, 2]},
            '{"items": [{"id": 1}, {"id": 2}]}',
            1.0,
            "$.items[*].id equals [1, 2]",
        ),
        ({"path": "$.n", "value": "{{ n }}"}, '{"n": 42}', 1.0, "$.n equals 42"),
        ({"path": "$.n", "value": "{{ n }}"}, '{"n": "42"}', 1.0, '$.n equals "42"'),
        (
            {"path": "$.c", "value": "{{ city | tojson }}"},
            '{"c": "Zürich"}',
            1.0,
            '$.c equals "Zürich"',
        ),
        ({"path": "$.answer"}, '```json\n{"answer": [1]}\n```', 1.0, "$.answer found: [1]"),
        ({"path": "$.answer"}, '{"other": 1}', 0.0, "$.answer not found in output"),
        (
            {"path": "$.answer", "value": "x"},
            None,
            0.0,
            "output is not valid JSON: output is empty",
        ),
    ],
)
async def test_json_path(
    options: dict[str, Any], output: str | None, value: float, reason: str
) -> None:
    result = await score({"type": "json-path", **options}, output)
    assert (result.value, result.passed, result.reason) == (value, value == 1.0, reason)


def test_json_path_config_keeps_an_explicit_null_value() -> None:
    assert build({"type": "json-path", "path": "$.x", "value": None}).config()["value"] is None
    assert "value" not in build({"type": "json-path", "path": "$.x"}).config()


def test_invalid_json_path_is_a_config_error() -> None:
    error = config_error({"type": "json-path", "path": "$.[", "value": 1})
    assert error.field == "scorers.path"
    assert error.message.startswith("invalid JSONPath '$.['")


# --- number ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "output", "value", "reason"),
    [
        ({"value": 42}, "The answer is 42.", 1.0, "output number 42 is 42"),
        ({"value": 1234.5}, "About 1,234.5 people", 1.0, "output number 1234.5 is 1234.5"),
        ({"value": 1234567}, "1,234,567", 1.0, "output number 1234567 is 1234567"),
        ({"value": -3}, "It is -3 degrees", 1.0, "output number -3 is -3"),
        ({"value": -7}, "\u22127", 1.0, "output number -7 is -7"),
        ({"value": 0.0025}, "rate 2.5e-3", 1.0, "output number 0.0025 is 0.0025"),
        ({"value": 0.5}, "p = .5", 1.0, "output number 0.5 is 0.5"),
        ({"value": 42}, "٤٢ apples", 1.0, "output number 42 is 42"),
        ({"value": 42}, "41", 0.0, "output number 41 is not 42"),
        ({"value": 42, "tolerance": 1}, "41", 1.0, "output number 41 is 42 ± 1"),
        ({"value": 42, "tolerance": 0.5}, "41", 0.0, "output number 41 is not 42 ± 0.5"),
        ({"value": 100, "relative": 0.05}, "104.9", 1.0, "output number 104.9 is 100 ± 5"),
        ({"value": 100, "relative": 0.05}, "106", 0.0, "output number 106 is not 100 ± 5"),
        ({"value": "{{ big }}"}, "1234.5", 1.0, "output number 1234.5 is 1234.5"),
        ({"value": "1,234"}, "1234", 1.0, "output number 1234 is 1234"),
        ({"value": 1}, "1,2345", 1.0, "output number 1 is 1"),  # not a thousands group
        ({"value": 1}, "1,2,3", 1.0, "output number 1 is 1"),
        ({"value": 42}, "no idea", 0.0, "no number in output (expected 42)"),
        ({"value": 42}, None, 0.0, "no number in output (expected 42)"),
    ],
)
async def test_number(
    options: dict[str, Any], output: str | None, value: float, reason: str
) -> None:
    result = await score({"type": "number", **options}, output)
    assert (result.value, result.passed, result.reason) == (value, value == 1.0, reason)


@pytest.mark.parametrize("value", ["abc", "1 or 2", "nan", "1e999", ""])
def test_number_literal_value_must_be_a_number(value: str) -> None:
    error = config_error({"type": "number", "value": value})
    assert error.field == "scorers.value"
    assert "is not a number" in error.message


async def test_number_template_rendering_a_non_number() -> None:
    scorer = build({"type": "number", "value": "{{ expected }}"})
    with pytest.raises(ConfigError, match="'Paris' is not a number"):
        scorer.check_case(CASE.template_vars())
    with pytest.raises(ScorerError, match="'Paris' is not a number"):
        await score({"type": "number", "value": "{{ expected }}"}, "42")


# --- similarity, ROUGE-L, BLEU --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "output", "value"),
    [
        ({"value": "Paris"}, "Paris", 1.0),
        ({"value": 2024}, "2024", 1.0),
        ({"value": "Paris"}, " Pariss\n", 10 / 11),
        ({"value": "Paris"}, "paris", 0.8),
        ({"value": "Paris", "ignore_case": True}, "paris", 1.0),
        ({"value": "Zürich"}, "Zurich", 5 / 6),
        ({"value": "東京"}, "東京都", 0.8),
        ({"value": "Paris", "method": "partial"}, "The capital is Paris", 1.0),
        ({"value": "New York", "method": "token_set"}, "York New", 1.0),
        ({"value": "Paris"}, "", 0.0),
        ({"value": "Paris"}, None, 0.0),
        ({"value": "Paris", "method": "partial"}, None, 0.0),
        ({"value": ""}, None, 1.0),
        ({"value": " ", "method": "token_set"}, "", 1.0),  # rapidfuzz alone says 0 here
    ],
)
async def test_similarity(options: dict[str, Any], output: str | None, value: float) -> None:
    result = await score({"type": "similarity", **options}, output)
    assert result.value == pytest.approx(value)
    assert result.passed is (value >= 0.8)


async def test_similarity_reason_and_threshold() -> None:
    result = await score({"type": "similarity", "value": "Paris", "threshold": 0.95}, "Pariss")
    assert result.passed is False
    assert result.reason == "ratio similarity of output to 'Paris' is 0.91"


@pytest.mark.parametrize(
    ("value", "output", "expected"),
    [
        ("the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("the cat is on the mat", "the cat sat on the mat", 5 / 6),
        ("The Cat", "the cat", 1.0),
        ("Zürich is big", "Zürich is small", 2 / 3),
        ("東京は大きい", "東京は小さい", 4 / 6),
        ("the cat", "a dog", 0.0),
        ("the cat", "", 0.0),
        ("the cat", None, 0.0),
        ("", None, 1.0),
    ],
)
async def test_rouge_l(value: str, output: str | None, expected: float) -> None:
    result = await score({"type": "rouge-l", "value": value}, output)
    assert result.value == pytest.approx(expected)
    assert result.passed is (expected >= 0.5)


async def test_rouge_l_reason() -> None:
    result = await score({"type": "rouge-l", "value": "the cat is on the mat"}, "the cat sat")
    assert result.reason == "ROUGE-L F-measure of output against 'the cat is on the mat' is 0.44"


@pytest.mark.parametrize(
    ("options", "output", "expected"),
    [
        ({"value": "the cat sat on the mat"}, "the cat sat on the mat", 1.0),
        ({"values": ["a dog ran", "the cat sat on the mat"]}, "the cat sat on the mat", 1.0),
        ({"value": "the cat sat on the mat"}, "a dog ran in the park", 0.0811669789),
        ({"value": "the cat sat on the mat"}, "the cat sat on a mat", 0.5372849659),
        ({"value": "Paris"}, "Paris", 1.0),
        ({"value": "東京は大きい", "tokenize": "char"}, "東京は大きい", 1.0),
        ({"value": "the cat"}, "", 0.0),
        ({"value": "the cat"}, None, 0.0),
    ],
)
async def test_bleu(options: dict[str, Any], output: str | None, expected: float) -> None:
    result = await score({"type": "bleu", **options}, output)
    assert result.value == pytest.approx(expected)
    assert result.passed is (expected >= 0.3)


async def test_bleu_partial_match_value_and_reason() -> None:
    result = await score(
        {"type": "bleu", "value": "the cat sat on the mat"}, "the cat sat on a mat"
    )
    assert result.value == pytest.approx(0.5372849659)
    assert result.reason == "BLEU of output against 'the cat sat on the mat' is 0.54"


@pytest.mark.parametrize("options", [{}, {"value": "a", "values": ["b"]}])
def test_bleu_needs_exactly_one_of_value_and_values(options: dict[str, Any]) -> None:
    error = config_error({"type": "bleu", **options})
    assert error.field == "scorers.value"


# --- length, latency, cost ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "output", "value", "reason"),
    [
        ({"min": 1, "max": 10}, "  hello \n", 1.0, "output has 5 chars, within 1–10"),
        (
            {"min": 1, "max": 10},
            "hello world",
            0.0,
            "output has 11 chars, more than the maximum 10",
        ),
        ({"min": 3}, "東京", 0.0, "output has 2 chars, fewer than the minimum 3"),
        ({"min": 2}, "Zu\u0308rich", 1.0, "output has 6 chars, at least 2"),
        (
            {"max": 2, "unit": "words"},
            "one two  three",
            0.0,
            "output has 3 words, more than the maximum 2",
        ),
        ({"max": 3, "unit": "words"}, "one two", 1.0, "output has 2 words, at most 3"),
        ({"min": 1}, None, 0.0, "output has 0 chars, fewer than the minimum 1"),
        ({"max": 0}, "", 1.0, "output has 0 chars, at most 0"),
    ],
)
async def test_length(
    options: dict[str, Any], output: str | None, value: float, reason: str
) -> None:
    result = await score({"type": "length", **options}, output)
    assert (result.value, result.passed, result.reason) == (value, value == 1.0, reason)


@pytest.mark.parametrize(
    ("options", "message"), [({}, "give 'min', 'max' or both"), ({"min": 5, "max": 2}, "exceeds")]
)
def test_length_bounds_are_checked_at_build(options: dict[str, Any], message: str) -> None:
    error = config_error({"type": "length", **options})
    assert (error.field, message in error.message) == ("scorers.min", True)


async def test_latency() -> None:
    spec = {"type": "latency", "max_ms": 200}
    fast = await score(spec, "x", latency_ms=120.4)
    slow = await score(spec, "x", latency_ms=250)
    assert (fast.value, fast.passed, fast.reason) == (1.0, True, "latency 120 ms <= 200 ms")
    assert (slow.value, slow.passed, slow.reason) == (0.0, False, "latency 250 ms > 200 ms")
    assert (await score(spec, None, latency_ms=200)).passed is True


async def test_unmeasured_latency_is_an_error_not_a_pass() -> None:
    with pytest.raises(ScorerError, match="no latency recorded"):
        await score({"type": "latency", "max_ms": 200}, "x")


async def test_cost() -> None:
    spec = {"type": "cost", "max_usd": 0.01}
    free = await score(spec, "x", cost_usd=0.0)
    dear = await score(spec, "x", cost_usd=0.02)
    assert (free.value, free.passed, free.reason) == (1.0, True, "cost $0 <= $0.01")
    assert (dear.value, dear.passed, dear.reason) == (0.0, False, "cost $0.02 > $0.01")


async def test_unknown_cost_is_an_error() -> None:
    with pytest.raises(ScorerError, match="no cost recorded"):
        await score({"type": "cost", "max_usd": 0.01}, "x", cost_usd=None)


def test_latency_and_cost_need_their_limit() -> None:
    assert config_error({"type": "latency"}).field == "scorers.max_ms"
    assert config_error({"type": "latency", "max_ms": 0}).field == "scorers.max_ms"
    assert config_error({"type": "cost", "max_usd": -1}).field == "scorers.max_usd"


# --- python ---------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory on sys.path for this test only."""
    root = tmp_path.resolve()
    monkeypatch.syspath_prepend(str(root))
    return root


def write_module(project: Path, source: str) -> str:
    """Write a module with a name unique to this test (sys.modules is process-wide)."""
    name = f"user_scorers_{uuid.uuid4().hex}"
    (project / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    importlib.invalidate_caches()
    return name


USER_FUNCTIONS = """
    import asyncio
    from harness.scorers import Score

    def boolean(output, ctx):
        return "Paris" in output

    def number(output, ctx):
        return 0.7

    def pair(output, ctx):
        return 0.9, f"close to {ctx.case.expected}"

    def mapping(output, ctx):
        return {"score": 0.2, "passed": True, "reason": "lenient", "details": {"k": 1}}

    def verdict(output, ctx):
        return {"passed": False}

    def score_object(output, ctx):
        return Score(value=0.4, passed=True, reason="custom")

    async def slow(output, ctx):
        await asyncio.sleep(0)
        return len(output) == 0

    def with_args(output, ctx, target, minimum=0):
        return output == target and minimum == 3

    def text(output, ctx):
        return "yes"

    def too_big(output, ctx):
        return 1.5

    def nan(output, ctx):
        return float("nan")

    def typo(output, ctx):
        return {"scroe": 1}

    def crash(output, ctx):
        raise ValueError("boom")

    not_a_function = 3
"""


@pytest.mark.parametrize(
    ("function", "options", "output", "value", "passed", "reason"),
    [
        ("boolean", {}, "Paris", 1.0, True, "{ref} returned True"),
        ("boolean", {}, "Lyon", 0.0, False, "{ref} returned False"),
        ("number", {}, "x", 0.7, False, "{ref} returned 0.7"),
        ("number", {"threshold": 0.5}, "x", 0.7, True, "{ref} returned 0.7"),
        ("pair", {}, "x", 0.9, False, "close to Paris"),
        ("mapping", {}, "x", 0.2, True, "lenient"),
        ("verdict", {}, "x", 0.0, False, "{ref} returned {{'passed': False}}"),
        ("score_object", {}, "x", 0.4, True, "custom"),
        ("slow", {}, None, 1.0, True, "{ref} returned True"),
        ("with_args", {"args": {"target": "{{ city }}", "minimum": 3}}, "Zürich", 1.0, True, None),
        ("with_args", {"args": {"target": "{{ city }}"}}, "Zürich", 0.0, False, None),
    ],
)
async def test_python_scorer(
    project: Path,
    function: str,
    options: dict[str, Any],
    output: str | None,
    value: float,
    passed: bool,
    reason: str | None,
) -> None:
    module = write_module(project, USER_FUNCTIONS)
    env = ScorerEnv(project_dir=project, base_dir=project)
    ref = f"{module}:{function}"
    result = await score({"type": "python", "function": ref, **options}, output, env=env)
    assert (result.value, result.passed) == (pytest.approx(value), passed)
    if reason is not None:
        assert result.reason == reason.format(ref=ref)


async def test_python_scorer_keeps_details(project: Path) -> None:
    module = write_module(project, USER_FUNCTIONS)
    env = ScorerEnv(project_dir=project, base_dir=project)
    result = await score({"type": "python", "function": f"{module}:mapping"}, "x", env=env)
    assert result.details == {"k": 1}


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("text", "returned 'yes'"),
        ("too_big", "returned 1.5"),
        ("nan", "returned nan"),
        ("typo", "dict with keys ['scroe']"),
        ("crash", "raised ValueError('boom')"),
    ],
)
async def test_python_scorer_bad_results_are_errors(
    project: Path, function: str, message: str
) -> None:
    module = write_module(project, USER_FUNCTIONS)
    env = ScorerEnv(project_dir=project, base_dir=project)
    with pytest.raises(ScorerError, match=re.escape(message)):
        await score({"type": "python", "function": f"{module}:{function}"}, "x", env=env)


def test_python_scorer_refuses_modules_outside_the_project(project: Path) -> None:
    env = ScorerEnv(project_dir=project, base_dir=project)
    error = config_error({"type": "python", "function": "json:dumps"}, env)
    assert error.field == "scorers.function"
    assert "outside the project directory" in error.message


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_colon", "expected 'module:function'"),
        ("missing_module_xyz:f", "not found"),
        ("{module}:absent", "has no function 'absent'"),
        ("{module}:not_a_function", "has no function 'not_a_function'"),
    ],
)
def test_python_scorer_bad_function_refs(project: Path, ref: str, message: str) -> None:
    module = write_module(project, USER_FUNCTIONS)
    env = ScorerEnv(project_dir=project, base_dir=project)
    error = config_error({"type": "python", "function": ref.format(module=module)}, env)
    assert error.field == "scorers.function"
    assert message in error.message
