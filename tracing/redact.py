"""Redact secrets (API keys, tokens, passwords) from text and nested span attribute values.

Two sources of secrets: the values of environment variables whose names look secret
(`*_API_KEY`, `*_KEY`, `*_TOKEN`, `*_SECRET*`, `*PASSWORD*`; values of 8+ characters), and
well-known key shapes (OpenAI/Anthropic `sk-...`, Google `AIza...`, `Bearer <token>`, GitHub
`ghp_...`, Slack `xox[bp]-...`, AWS `AKIA...`). Both go into one precompiled regular expression;
the environment is read once per process and again on `refresh_secrets()`. Texts containing
none of the patterns' literal prefixes and no secret value skip the expression altogether.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8

_SECRET_NAME = re.compile(r"(_KEY$|_TOKEN$|_SECRET|PASSWORD)", re.IGNORECASE)

# Literal fragments at least one of which occurs in any text a key pattern matches: a text with
# none of them (and no secret value) skips the regular expression, the common case by far.
_KEY_TRIGGERS: tuple[str, ...] = (
    "sk-",
    "AIza",
    "earer ",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "AKIA",
    "ASIA",
)

# Where a key starts: not inside a word, or right after an escaped control character of a
# JSON-encoded text (`...:\nsk-...` as span attributes hold messages), where `\b` sees `n`.
_START = r"(?:(?<!\w)|(?<=\\[nrtbf]))"

# Shapes of well-known credentials. Prefix-anchored so ordinary prose does not match.
_KEY_PATTERNS: tuple[str, ...] = (
    _START + r"sk-ant-[A-Za-z0-9_\-]{10,}",  # Anthropic
    _START + r"sk-[A-Za-z0-9_\-]{20,}",  # OpenAI and compatible (sk-proj-..., sk-...)
    _START + r"AIza[0-9A-Za-z_\-]{30,}",  # Google API keys
    r"(?<=[Bb]earer )[A-Za-z0-9._~+/\-]{8,}=*",  # HTTP bearer tokens: keep the word
    _START + r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_)
    _START + r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained tokens
    _START + r"xox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack tokens
    _START + r"(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
)


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values (8+ characters) of environment variables whose names look like secrets."""
    env = os.environ if environ is None else environ
    values = {
        value
        for name, value in env.items()
        if _SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH
    }
    # Longest first, so a secret that contains another is replaced whole.
    return sorted(values, key=len, reverse=True)


def _json_escaped(value: str) -> str:
    """`value` as it reads inside a JSON string (non-ASCII characters kept, as ours are)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def _compile(env_values: Iterable[str]) -> re.Pattern[str]:
    alternatives = [re.escape(value) for value in env_values]
    alternatives.extend(_KEY_PATTERNS)
    return re.compile("|".join(alternatives))


class _Matcher:
    """The compiled pattern and the literal triggers that make running it worthwhile."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # As JSON-encoded texts hold them too (span attributes holding messages, arguments): a
        # value with a quote, backslash or control character reads differently there. Longest
        # first, so a secret that contains another is replaced whole.
        values = {*secrets}
        values |= {_json_escaped(value) for value in values}
        ordered = sorted(values, key=len, reverse=True)
        self.pattern = _compile(ordered)
        self.triggers = (*_KEY_TRIGGERS, *ordered)

    def redact(self, text: str) -> str:
        return self.pattern.sub(REDACTED, text) if self.triggered(text) else text

    def triggered(self, text: str) -> bool:
        return any(trigger in text for trigger in self.triggers)


class _Redactor:
    """Holds the current matcher; swapped atomically on refresh so readers never lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.matcher: _Matcher | None = None

    def get(self) -> _Matcher:
        matcher = self.matcher
        if matcher is None:
            matcher = self.refresh()
        return matcher

    def refresh(
        self, environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()
    ) -> _Matcher:
        with self._lock:
            values = secret_env_values(environ)
            values.extend(value for value in extra if len(value) >= MIN_SECRET_LENGTH)
            self.matcher = _Matcher(values)
            return self.matcher


_REDACTOR = _Redactor()


def refresh_secrets(environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> None:
    """Re-read secret values from the environment (or `environ`), plus any `extra` secrets."""
    _REDACTOR.refresh(environ, extra)


def redact(text: str) -> str:
    """Return `text` with every known secret replaced by `[REDACTED]`."""
    if len(text) < MIN_SECRET_LENGTH:
        return text
    return _REDACTOR.get().redact(text)


def may_contain_secret(texts: Iterable[Iterable[str]]) -> bool:
    """Cheap pre-check over groups of strings: False means none of them holds a secret."""
    blob = "\n".join("\n".join(group) for group in texts)
    return len(blob) >= MIN_SECRET_LENGTH and _REDACTOR.get().triggered(blob)


_SCALARS = frozenset({int, float, bool, type(None)})


def nested_strings(value: Any, into: list[str]) -> bool:
    """Append the strings `redact_value` would redact in `value` to `into`. Returns False when
    `value` holds a mapping that is not a dict (which `redact_value` would turn into one)."""
    if isinstance(value, str):
        into.append(value)
        return True
    items: Iterable[Any]
    if isinstance(value, (list, tuple)):
        plain, items = True, value
    elif isinstance(value, Mapping):
        plain, items = isinstance(value, dict), value.values()
    else:
        return True
    # Plain strings (most items) at C speed, then the few containers.
    into.extend([item for item in items if type(item) is str])
    for item in items:
        if type(item) is not str and type(item) not in _SCALARS:
            plain = nested_strings(item, into) and plain
    return plain


def needs_redaction(values: Iterable[Any]) -> bool:
    """Cheap pre-check over many values at once: False means none holds a secret and
    `redact_value` would return each one equal and with the same kinds of containers, so it
    can be skipped (one scan of all their strings, instead of one per string)."""
    strings: list[str] = []
    plain = True
    for value in values:
        if type(value) is str:
            strings.append(value)
        elif value is not None:
            plain = nested_strings(value, strings) and plain
    return not plain or may_contain_secret((strings,))


def redact_value(value: Any) -> Any:
    """Redact strings inside `value`: a string, or lists, tuples and dicts of them, nested."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple):
        return tuple(redact_value(item) for item in value)
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    return value
