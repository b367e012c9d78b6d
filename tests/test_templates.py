"""Tests for harness/templates.py: StrictUndefined, the one-variable shortcut equals Jinja2."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest

from harness.errors import ConfigError
from harness.templates import render

PLAIN_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@pytest.mark.parametrize(
    "text, context",
    [
        ("{{ expected }}", {"expected": "Paris"}),
        ("{{expected}}", {"expected": "  spaced \n"}),
        ("{{ expected }}", {"expected": "Zürich {{ not a template }} <b>"}),
        ("{{ expected }}", {"expected": ""}),
        ("{{ n }}", {"n": 3}),
        ("{{ flag }}", {"flag": None}),
        ("{{ items }}", {"items": ["a", 1]}),
        ("{{ expected }}\n", {"expected": "x"}),
        ("{{ expected | upper }}", {"expected": "x"}),
        ("Q: {{ q }}", {"q": "why"}),
    ],
)
def test_render_equals_jinja2(text: str, context: dict[str, Any]) -> None:
    assert render(text, context) == PLAIN_JINJA.from_string(text).render(context)


def test_a_missing_variable_is_a_config_error_naming_where() -> None:
    with pytest.raises(ConfigError) as info:
        render("{{ expected }}", {"other": "x"}, where="scorers[0].value")
    assert "expected" in info.value.message and info.value.field == "scorers[0].value"
