"""What changed between two runs' manifests, as a short list for the top of a comparison."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_MAX_SHOWN = 80


@dataclass
class Change:
    """One difference in lineage: what, and its baseline and candidate values (as text)."""

    what: str
    base: str
    cand: str


def _text(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _versioned(block: dict[str, Any] | None, name_key: str) -> str | None:
    if not block:
        return None
    return f"{block.get(name_key)}@{block.get('version')}"


def _keyed(items: list[dict[str, Any]] | None, key: Any) -> dict[str, dict[str, Any]]:
    return {key(item): item for item in items or []}


def lineage_changes(base: dict[str, Any], cand: dict[str, Any]) -> list[Change]:
    """The differences that can explain a change in results, most telling first."""
    changes: list[Change] = []

    def note(what: str, before: Any, after: Any) -> None:
        if before != after:
            changes.append(Change(what, _text(before), _text(after)))

    note("prompt", _versioned(base.get("prompt"), "name"), _versioned(cand.get("prompt"), "name"))
    base_data, cand_data = base.get("dataset") or {}, cand.get("dataset") or {}
    note("dataset", _versioned(base_data, "source"), _versioned(cand_data, "source"))
    note("selection", base_data.get("selection"), cand_data.get("selection"))
    note("target", base.get("target"), cand.get("target"))

    def model_key(model: dict[str, Any]) -> str:
        return str(model.get("name") or model.get("id"))

    before_models = _keyed(base.get("models"), model_key)
    after_models = _keyed(cand.get("models"), model_key)
    for label in sorted(before_models.keys() | after_models.keys()):
        old, new = before_models.get(label), after_models.get(label)
        if old is None or new is None:
            note(
                f"model {label}",
                "absent" if old is None else "present",
                "absent" if new is None else "present",
            )
            continue
        note(f"model {label} id", old.get("id"), new.get("id"))
        note(f"model {label} params", old.get("params") or {}, new.get("params") or {})

    def scorer_key(scorer: dict[str, Any]) -> str:
        return str(scorer.get("name") or scorer.get("type"))

    before_scorers = _keyed(base.get("scorers"), scorer_key)
    after_scorers = _keyed(cand.get("scorers"), scorer_key)
    for name in sorted(before_scorers.keys() | after_scorers.keys()):
        old, new = before_scorers.get(name), after_scorers.get(name)
        if old is None or new is None:
            note(
                f"scorer {name}",
                "absent" if old is None else "present",
                "absent" if new is None else "present",
            )
        else:
            note(f"scorer {name}", old, new)

    note("thresholds", base.get("thresholds") or {}, cand.get("thresholds") or {})
    note("repeat", base.get("repeat"), cand.get("repeat"))
    note("seed", base.get("seed"), cand.get("seed"))
    note("suite", _versioned(base.get("suite"), "name"), _versioned(cand.get("suite"), "name"))
    base_git, cand_git = base.get("git") or {}, cand.get("git") or {}
    note("git commit", _commit(base_git), _commit(cand_git))
    base_env, cand_env = base.get("environment") or {}, cand.get("environment") or {}
    note("harness", base_env.get("harness"), cand_env.get("harness"))
    base_packages = base_env.get("packages") or {}
    cand_packages = cand_env.get("packages") or {}
    for package in sorted(base_packages.keys() | cand_packages.keys()):
        note(f"package {package}", base_packages.get(package), cand_packages.get(package))
    return changes


def _commit(git: dict[str, Any]) -> str | None:
    commit = git.get("commit")
    if commit is None:
        return None
    return str(commit)[:10] + (" (dirty)" if git.get("dirty") else "")
