"""Jinja2 templates with StrictUndefined: one environment, compile once, render per case."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from harness.errors import ConfigError

# Sandboxed: templates come from suite files and datasets; they must not reach Python internals.
_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


def is_template(text: str) -> bool:
    """True when `text` holds Jinja2 syntax (plain strings skip rendering entirely)."""
    return "{{" in text or "{%" in text or "{#" in text


@lru_cache(maxsize=4096)
def _compile(text: str) -> jinja2.Template:
    return _ENV.from_string(text)


def compile_template(text: str, *, where: str | None = None) -> jinja2.Template:
    """Compile `text`, turning a syntax error into a ConfigError naming `where`."""
    try:
        return _compile(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template syntax error: {exc.message}", field=where) from exc


def variables(text: str) -> set[str]:
    """The top-level variable names a template reads (for early validation)."""
    return set(meta.find_undeclared_variables(_ENV.parse(text)))


# `{{ name }}` alone: by far the most common template (expected values); a string variable
# renders as itself, so it skips Jinja2's per-render context set-up (~40 us).
_ONE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def render(text: str, context: dict[str, Any], *, where: str | None = None) -> str:
    """Render `text` against `context`; a missing variable is a ConfigError naming it."""
    if not is_template(text):
        return text
    single = _ONE_VARIABLE.fullmatch(text)
    if single is not None:
        value = context.get(single.group(1))
        if isinstance(value, str):
            return value
    template = compile_template(text, where=where)
    try:
        return template.render(context)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"template variable missing: {exc.message}", field=where) from exc
    except jinja2.TemplateError as exc:
        raise ConfigError(f"template error: {exc}", field=where) from exc


def render_value(value: Any, context: dict[str, Any], *, where: str | None = None) -> Any:
    """Render strings (recursively inside lists and dicts); other values pass through."""
    if isinstance(value, str):
        return render(value, context, where=where)
    if isinstance(value, list):
        return [render_value(v, context, where=where) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context, where=where) for k, v in value.items()}
    return value
