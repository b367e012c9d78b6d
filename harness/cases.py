"""The eval case: one row of a dataset, with a stable id, expected value and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Case:
    """One dataset row. `fields` holds every column (the template variables)."""

    id: str
    fields: dict[str, Any]
    expected: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def template_vars(self) -> dict[str, Any]:
        """Variables visible to prompt and scorer templates."""
        return {
            **self.fields,
            "expected": self.expected,
            "metadata": self.metadata,
            "case_id": self.id,
        }
