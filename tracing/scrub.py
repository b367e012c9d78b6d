"""Decide what span data may leave the process: drop content when asked, redact secrets always.

Pure functions over attribute mappings, applied by the exporters built in `tracing.setup`, so
the SQLite span store and the OTLP exporter receive the same scrubbed spans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracing.conventions import (
    CONTENT_ATTRIBUTES,
    CONTENT_PREFIXES,
    RETRIEVAL_DOCUMENT_CONTENT_SUFFIX,
    RETRIEVAL_DOCUMENTS,
)
from tracing.redact import redact, redact_value


def is_content_attribute(key: str) -> bool:
    """True for attributes that carry prompt, completion, document or tool-call text."""
    if key in CONTENT_ATTRIBUTES or key.startswith(CONTENT_PREFIXES):
        return True
    return key.startswith(RETRIEVAL_DOCUMENTS) and key.endswith(RETRIEVAL_DOCUMENT_CONTENT_SUFFIX)


def scrub_attributes(
    attributes: Mapping[str, Any] | None, capture_content: bool = True
) -> dict[str, Any]:
    """Copy of `attributes` with secrets redacted and, unless `capture_content`, content dropped."""
    if not attributes:
        return {}
    scrubbed: dict[str, Any] = {}
    for key, value in attributes.items():
        if not capture_content and is_content_attribute(key):
            continue
        if isinstance(value, str):
            scrubbed[key] = redact(value)
        elif isinstance(value, (tuple, list)):
            scrubbed[key] = redact_value(value)
        else:
            scrubbed[key] = value
    return scrubbed


def scrub_text(text: str | None) -> str | None:
    """Redact a span name, status message or similar free text (None passes through)."""
    return None if text is None else redact(text)
