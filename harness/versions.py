"""Content addressing: canonical JSON, content hashes and short version ids of artifacts."""

from __future__ import annotations

import hashlib
import json
from typing import Any

SHORT_VERSION_LEN = 8


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace: equal content, equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(obj: Any) -> str:
    """Full sha256 hex of an object's canonical JSON (strings are hashed as JSON strings)."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def short_version(obj: Any) -> str:
    """The version id users see: the first 8 hex characters of the content hash."""
    return content_hash(obj)[:SHORT_VERSION_LEN]
