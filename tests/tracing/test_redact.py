"""Secret redaction (tracing.redact) and export-time scrubbing rules (tracing.scrub)."""

from __future__ import annotations

import json
from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest

from tracing.redact import (
    REDACTED,
    needs_redaction,
    redact,
    redact_value,
    refresh_secrets,
    secret_env_values,
)
from tracing.scrub import is_content_attribute, scrub_attributes


@pytest.fixture(autouse=True)
def fresh_secrets() -> Iterator[None]:
    refresh_secrets()
    yield
    refresh_secrets()


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
        "sk-ant-api03-abcdefghijklmnop_qrstu",
        "sk-abcdefghijklmnopqrstuvwx",
        "AIzaSyA1234567890abcdefghijklmnopqrstu",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "xoxb-1234567890-abcdefghij",
        "xoxp-1234567890-abcdefghij",
        "AKIAIOSFODNN7EXAMPLE",
    ],
)
def test_key_patterns_are_redacted(secret: str) -> None:
    assert redact(f"key={secret} end") == f"key={REDACTED} end"


def test_bearer_token_keeps_the_scheme() -> None:
    assert redact("Authorization: Bearer abc.def-ghi_123") == f"Authorization: Bearer {REDACTED}"


def test_ordinary_text_is_untouched() -> None:
    text = "The task-oriented sk- prefix, a risk-free skiing trip, AKIA is short."
    assert redact(text) == text
    assert redact("short") == "short"


def test_env_secrets_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "OPENAI_API_KEY": "plain-value-123",
        "GATEWAY_KEY": "gateway-value-456",
        "HF_TOKEN": "hf-value-789xyz",
        "CLIENT_SECRET_ID": "client-secret-1",
        "DB_PASSWORD_FILE": "db-password-1",
        "SHORT_TOKEN": "1234567",  # under 8 characters: ignored
        "HOME": "/home/somebody",  # not a secret name
    }
    assert set(secret_env_values(env)) == {
        "plain-value-123",
        "gateway-value-456",
        "hf-value-789xyz",
        "client-secret-1",
        "db-password-1",
    }
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-canary-0042")
    assert redact("uses tok-canary-0042 here") == "uses tok-canary-0042 here"  # not yet read
    refresh_secrets()
    assert redact("uses tok-canary-0042 here") == f"uses {REDACTED} here"


def test_extra_secrets_and_special_characters() -> None:
    refresh_secrets(environ={}, extra=["p@ss.w*rd+(1)"])
    assert redact("x p@ss.w*rd+(1) y") == f"x {REDACTED} y"


@pytest.mark.parametrize("key", ["sk-proj-A1b2C3d4A1b2C3d4A1b2C3d4", "AKIAIOSFODNN7EXAMPLE"])
def test_secrets_are_redacted_inside_json_encoded_text(key: str) -> None:
    # Span attributes hold messages as JSON: a key after a line break reads `\\nsk-...` there,
    # and a secret value with a quote or a backslash reads escaped.
    password = 'pa"ss\\word-123'
    refresh_secrets(environ={"DB_PASSWORD": password}, extra=["tab\tbed-secret"])
    text = f"My key is:\n{key}\npassword {password}, and tab\tbed-secret"
    encoded = json.dumps([{"content": text}], ensure_ascii=False)
    redacted = redact(encoded)
    assert json.loads(redacted) == [
        {"content": f"My key is:\n{REDACTED}\npassword {REDACTED}, and {REDACTED}"}
    ]
    assert redact(text) == f"My key is:\n{REDACTED}\npassword {REDACTED}, and {REDACTED}"


def test_redact_value_nested() -> None:
    secret = "sk-abcdefghijklmnopqrstuvwx"
    value = {"a": [secret, 1, ("x", secret)], "b": {"c": secret}, "d": 2.5, "e": None}
    assert redact_value(value) == {
        "a": [REDACTED, 1, ("x", REDACTED)],
        "b": {"c": REDACTED},
        "d": 2.5,
        "e": None,
    }


def test_content_attributes() -> None:
    content = [
        "input.value",
        "output.value",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "llm.input_messages.0.message.content",
        "llm.output_messages.3.message.tool_calls.0.tool_call.function.arguments",
        "retrieval.documents.7.document.content",
        "embedding.embeddings.0.embedding.text",
        "evals.retrieval.query",
    ]
    metadata = [
        "gen_ai.usage.input_tokens",
        "llm.token_count.prompt",
        "retrieval.documents.7.document.id",
        "retrieval.documents.7.document.score",
        "llm.model_name",
        "evals.cost_usd",
        "input.mime_type",
    ]
    assert all(is_content_attribute(key) for key in content)
    assert not any(is_content_attribute(key) for key in metadata)


def test_scrub_attributes_drops_content_and_redacts() -> None:
    secret = "sk-abcdefghijklmnopqrstuvwx"
    attributes = {
        "input.value": "hello",
        "gen_ai.usage.input_tokens": 3,
        "note": f"key {secret}",
        "tags": (secret, "ok"),
    }
    assert scrub_attributes(attributes, capture_content=False) == {
        "gen_ai.usage.input_tokens": 3,
        "note": f"key {REDACTED}",
        "tags": (REDACTED, "ok"),
    }
    assert scrub_attributes(attributes)["input.value"] == "hello"


def test_secrets_nested_in_mapping_values_are_found() -> None:
    shaped = "sk-proj-abcdefghijklmnopqrstuvwx"
    scrubbed = scrub_attributes({"outer": {"inner": [f"key {shaped}"]}, "n": 1})
    assert scrubbed == {"outer": {"inner": ["key [REDACTED]"]}, "n": 1}


Pair = namedtuple("Pair", "left right")
CLEAN_VALUES: list[Any] = [
    None,
    "plain text, long enough",
    ["a list", ("of", "nested", 1, 2.5, True, None), {"and": ["maps"]}],
    {"fields": {"q": "question?"}, "expected": None, "metadata": {"tags": ["x"]}},
    OrderedDict(a="dict subclass"),
    Pair("named", "tuple"),
    42,
]


@pytest.mark.parametrize("value", CLEAN_VALUES)
def test_a_clean_value_needs_no_redaction_and_redacting_would_change_nothing(value: Any) -> None:
    assert not needs_redaction([value])
    assert redact_value(value) == value
    assert not needs_redaction(CLEAN_VALUES)


@pytest.mark.parametrize(
    "place",
    [
        lambda s: s,
        lambda s: [["deep", [s]]],
        lambda s: ("x", s),
        lambda s: {"a": {"b": [{"c": s}]}},
        lambda s: OrderedDict(k=s),
    ],
)
def test_a_secret_anywhere_in_any_value_needs_redaction(place: Any) -> None:
    refresh_secrets(environ={}, extra=["hunter2-is-long"])
    for secret in ("sk-proj-abcdefghijklmnopqrstuvwx", "hunter2-is-long"):
        assert needs_redaction([*CLEAN_VALUES, place(secret)])
        assert redact_value(place(secret)) != place(secret)


def test_a_mapping_that_is_not_a_dict_needs_redaction() -> None:
    # `redact_value` turns it into a dict: skipping it would store another shape.
    assert needs_redaction([{"a": MappingProxyType({"b": "c"})}])
