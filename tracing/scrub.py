"""Decide what span data may leave the process: drop content when asked, redact secrets always.

Pure functions over attribute mappings, applied by the exporters built in `tracing.setup`, so
the SQLite span store and the OTLP exporter receive the same scrubbed spans. A span is checked
for secrets as a whole first (`may_hold_secret`): most spans hold none, and then nothing is
rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from tracing.conventions import (
    CONTENT_ATTRIBUTES,
    CONTENT_PREFIXES,
    RETRIEVAL_DOCUMENT_CONTENT_SUFFIX,
    RETRIEVAL_DOCUMENTS,
)
from tracing.redact import may_contain_secret, nested_strings, redact, redact_value


def is_content_attribute(key: str) -> bool:
    """True for attributes that carry prompt, completion, document or tool-call text."""
    if key in CONTENT_ATTRIBUTES or key.startswith(CONTENT_PREFIXES):
        return True
    return key.startswith(RETRIEVAL_DOCUMENTS) and key.endswith(RETRIEVAL_DOCUMENT_CONTENT_SUFFIX)


def plain_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A plain dict copy (OTel's BoundedAttributes copies fast with its own `copy`)."""
    if not attributes:
        return {}
    copy = getattr(attributes, "copy", None)
    copied = copy() if callable(copy) else None
    return copied if isinstance(copied, dict) else dict(attributes)


def drop_content(attributes: dict[str, Any]) -> dict[str, Any]:
    """`attributes` without the content ones."""
    return {k: v for k, v in attributes.items() if not is_content_attribute(k)}


def may_hold_secret(
    attribute_maps: Iterable[Mapping[str, Any] | None], texts: Iterable[str | None]
) -> bool:
    """Cheap pre-check over the parts of one span: False means none of its strings (attribute
    values, inside lists and mappings too, and free texts) holds a secret, so nothing needs
    redacting."""
    strings = [text for text in texts if text]
    for attributes in attribute_maps:
        if not attributes:
            continue
        if type(attributes) is not dict and type(attributes) is not MappingProxyType:
            attributes = plain_attributes(attributes)  # OTel's BoundedAttributes iterates slowly
        nested_strings(attributes, strings)
    return may_contain_secret((strings,))


def redact_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """`attributes` with secrets in string (and string-list) values redacted."""
    return {k: redact_value(v) for k, v in attributes.items()}


def scrub_attributes(
    attributes: Mapping[str, Any] | None, capture_content: bool = True
) -> dict[str, Any]:
    """Copy of `attributes` with secrets redacted and, unless `capture_content`, content dropped."""
    (scrubbed,), _ = scrub_parts([attributes], [], capture_content)
    return scrubbed


def scrub_parts(
    attribute_maps: Sequence[Mapping[str, Any] | None],
    texts: Sequence[str | None],
    capture_content: bool = True,
) -> tuple[list[dict[str, Any]], list[str | None]]:
    """Scrub the parts of one span together: its attribute maps (span, events, links, ...) and
    free texts (name, status message). Content is dropped from the maps unless
    `capture_content`; secrets are redacted everywhere, checked for in one pass."""
    maps = [plain_attributes(attributes) for attributes in attribute_maps]
    if not capture_content:
        maps = [drop_content(attributes) for attributes in maps]
    if not may_hold_secret(maps, texts):
        return maps, list(texts)
    return (
        [redact_attributes(attributes) for attributes in maps],
        [None if text is None else redact(text) for text in texts],
    )
