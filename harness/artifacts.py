"""Working copies of versioned artifacts and references to them: `qa`, `qa@label`, `qa@3f2a1c09`.

A working copy is the file users edit (prompts/qa.yaml); `ArtifactKind` says where a kind's
files live, how they load into canonical content, and how that content reads as YAML. The RAG
and judge modules replace the generic loaders of `retrieval` and `rubric` with `register_kind`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.config import PromptConfig
from harness.errors import ConfigError
from harness.prompts import Prompt, prompt_content, prompt_from_file, split_ref
from harness.registry import (
    WORKING_COPY,
    VersionRecord,
    current_author,
    current_commit,
    record_version,
    resolve,
)
from harness.store import Store
from harness.templates import compile_template
from harness.versions import canonical_json, short_version
from harness.yamlfile import load_yaml


@dataclass(frozen=True)
class Artifact:
    """Content looked up by reference: a working copy or a registered version."""

    kind: str
    name: str
    version: str
    content: Any
    origin: str  # "prompts/qa.yaml" or "registry"


@dataclass(frozen=True)
class ArtifactKind:
    """How one kind's working copies are found, read and shown."""

    kind: str
    directory: str
    load: Callable[[Path, str], tuple[str, Any]]  # (file, shown path) -> (name, content)
    display: Callable[[Any], Any]


def _load_prompt(path: Path, shown: str) -> tuple[str, Any]:
    prompt = prompt_from_file(path, display=shown)
    return prompt.name, prompt.content()


def _display_prompt(content: Any) -> Any:
    try:  # PromptConfig's field order (name, messages, params, ...) reads best
        return prompt_content(PromptConfig.model_validate(_sorted(content)))
    except ValueError:
        return content


def _load_mapping(path: Path, shown: str) -> tuple[str, Any]:
    """Generic YAML artifact: a mapping with a `name`; `description` does not shape behaviour."""
    doc = load_yaml(path, display=shown)
    if not isinstance(doc.data, dict):
        raise doc.error("expected a mapping at the top of the file")
    name = doc.data.get("name")
    if not isinstance(name, str) or not name:
        raise doc.error("required field missing", ("name",))
    return name, {k: v for k, v in doc.data.items() if k != "description"}


def _sorted(content: Any) -> Any:
    return json.loads(canonical_json(content))


ARTIFACT_KINDS: dict[str, ArtifactKind] = {
    "prompt": ArtifactKind("prompt", "prompts", _load_prompt, _display_prompt),
    "rubric": ArtifactKind("rubric", "rubrics", _load_mapping, _sorted),
    "retrieval": ArtifactKind("retrieval", "retrieval", _load_mapping, _sorted),
}


def register_kind(kind: ArtifactKind) -> None:
    """Replace how a kind's working copies load (the RAG and judge modules set their own)."""
    ARTIFACT_KINDS[kind.kind] = kind


def artifact_kind(kind: str) -> ArtifactKind:
    if kind not in ARTIFACT_KINDS:
        raise ConfigError(f"no working copies for kind {kind!r}")
    return ARTIFACT_KINDS[kind]


def _is_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or "/" in ref


def working_file(kind: str, ref: str, project_dir: Path) -> tuple[Path, str]:
    """The file a working-copy reference names: a path, else <kind dir>/<name>.yaml."""
    if _is_path(ref):
        return (project_dir / ref).resolve(), ref
    directory = artifact_kind(kind).directory
    for suffix in (".yaml", ".yml"):
        shown = f"{directory}/{ref}{suffix}"
        if (project_dir / shown).exists():
            return project_dir / shown, shown
    shown = f"{directory}/{ref}.yaml"
    return project_dir / shown, shown


def working_copy(kind: str, ref: str, project_dir: Path) -> Artifact:
    """Read and version the working copy (the file on disk) of `ref`."""
    path, shown = working_file(kind, ref, project_dir)
    if not path.exists():
        raise ConfigError(f"no working copy of {kind} {ref!r}", path=shown)
    name, content = artifact_kind(kind).load(path, shown)
    return Artifact(kind, name, short_version(content), _sorted(content), shown)


def registry_name(kind: str, ref: str, project_dir: Path) -> str:
    """The registered name a reference means: the name inside the file, else the file stem."""
    if not _is_path(ref):
        return ref
    path, _ = working_file(kind, ref, project_dir)
    if path.exists():
        return working_copy(kind, ref, project_dir).name
    return Path(ref).stem


def lookup(store: Store | None, kind: str, ref: str, project_dir: Path) -> Artifact:
    """`name` / `name@current` (working copy), `name@label` or `name@version` (registry)."""
    name, selector = split_ref(ref)
    if selector is None or selector == WORKING_COPY:
        return working_copy(kind, name, project_dir)
    name = registry_name(kind, name, project_dir)
    if store is None:
        raise ConfigError(f"cannot resolve {name}@{selector}: no versions are registered yet")
    record = resolve(store, kind, name, selector)
    return Artifact(kind, record.name, record.version, record.content, "registry")


def register_working(
    store: Store, kind: str, ref: str, project_dir: Path
) -> tuple[VersionRecord, bool]:
    """Register the working copy of `ref`; returns (record, whether it was new)."""
    artifact = working_copy(kind, ref, project_dir)
    return record_version(
        store,
        kind,
        artifact.name,
        artifact.content,
        artifact.version,
        git_commit=current_commit(project_dir),
        author=current_author(project_dir),
    )


def content_yaml(kind: str, content: Any) -> str:
    """The exact content as YAML, in the kind's reading order (multi-line strings as blocks)."""
    display = ARTIFACT_KINDS[kind].display if kind in ARTIFACT_KINDS else _sorted
    return to_yaml(display(content))


def to_yaml(value: Any) -> str:
    """YAML for people: keys in the order given, multi-line strings as literal blocks."""
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def unified_diff(before: str, after: str, before_label: str, after_label: str) -> str:
    """A unified diff of two texts ('' when equal)."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=before_label,
        tofile=after_label,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


# --- suites -----------------------------------------------------------------------------------
def open_existing(store_path: Path) -> Store | None:
    """The store when its file exists; reading the registry never creates one."""
    return Store.open(store_path, create=False) if store_path.exists() else None


def prompt_from_record(record: VersionRecord, ref: str) -> Prompt:
    """A runnable Prompt from registered content."""
    config = PromptConfig.model_validate(record.content)
    for message in config.messages:
        compile_template(message.content)
    return Prompt(config=config, version=record.version, source=f"registry:{ref}")


def prompt_resolver(store_path: Path, project_dir: Path) -> Callable[[str, str], Prompt]:
    """The `resolve_prompt(name, selector)` load_suite uses for `qa@label` / `qa@version`."""

    def resolve_prompt(name: str, selector: str) -> Prompt:
        if selector == WORKING_COPY:
            path, shown = working_file("prompt", name, project_dir)
            return prompt_from_file(path, display=shown)
        name = registry_name("prompt", name, project_dir)
        store = open_existing(store_path)
        if store is None:
            raise ConfigError(
                f"cannot resolve {name}@{selector}: no version registry at "
                f"{store_path} (register with `evals prompt register {name}`)"
            )
        with store:
            record = resolve(store, "prompt", name, selector)
        return prompt_from_record(record, f"{name}@{selector}")

    return resolve_prompt
