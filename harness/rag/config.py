"""Retrieval config files (retrieval/<name>.yaml): pydantic models, loading, references, versions.

A retrieval config has an index part (corpus, chunking, embedding) and a query part (search).
Its version is the short hash of its content without `description`; the index it builds has
its own version (see `harness.rag.index.index_version`), which only the index part shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.artifacts import ArtifactKind, register_kind
from harness.config import Strict, validate
from harness.errors import ConfigError
from harness.templates import compile_template
from harness.versions import canonical_json, short_version
from harness.yamlfile import load_yaml

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
CORPUS_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".jsonl", ".pdf")


class CorpusSource(Strict):
    """A glob of corpus files (relative to the config file) with metadata for their chunks."""

    path: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Chunking(Strict):
    """How documents split into chunks. `size` and `overlap` count characters for the
    `characters` strategy and word tokens (see `harness.rag.chunking`) for every other one:
    the window for `tokens`, the most a chunk may hold for sentences, paragraphs and markdown."""

    strategy: Literal["tokens", "characters", "sentences", "paragraphs", "markdown"] = "tokens"
    size: int = Field(default=200, ge=1, le=100_000)
    overlap: int = Field(default=20, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Chunking:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


class Embedding(Strict):
    """The sentence-transformers model that embeds chunks and queries."""

    model: str = Field(default=DEFAULT_EMBEDDING_MODEL, min_length=1)
    batch_size: int = Field(default=64, ge=1, le=4096)


class Search(Strict):
    """How a query retrieves: mode, how many chunks, filters, threshold, query template."""

    top_k: int = Field(default=5, ge=1, le=1000)
    mode: Literal["similarity", "mmr", "hybrid"] = "similarity"
    mmr_lambda: float = Field(default=0.5, ge=0, le=1)
    hybrid_alpha: float = Field(default=0.5, ge=0, le=1)
    score_threshold: float | None = Field(default=None, ge=0, le=1)
    filters: dict[str, Any] | None = None
    query_template: str | None = None

    @field_validator("query_template")
    @classmethod
    def _template_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_template(value)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
        return value


class RetrievalConfig(Strict):
    """retrieval/<name>.yaml: corpus, chunking and embedding model (the index), and search."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    corpus: list[str | CorpusSource] = Field(min_length=1)
    chunking: Chunking = Field(default_factory=Chunking)
    embedding: Embedding = Field(default_factory=Embedding)
    search: Search = Field(default_factory=Search)

    def sources(self) -> list[CorpusSource]:
        """Every corpus entry as a CorpusSource (a bare glob has no metadata)."""
        return [CorpusSource(path=s) if isinstance(s, str) else s for s in self.corpus]

    def content(self) -> dict[str, Any]:
        """What the config version hashes: everything but the description."""
        return retrieval_content(self)

    @property
    def version(self) -> str:
        return short_version(self.content())


def retrieval_content(config: RetrievalConfig) -> dict[str, Any]:
    """The canonical content of a retrieval config (defaults filled in, no description)."""
    return config.model_dump(mode="json", exclude={"description"})


def load_retrieval_config(path: Path, *, display: str | None = None) -> RetrievalConfig:
    """Load and validate a retrieval config; problems are ConfigErrors with file:line."""
    doc = load_yaml(path, display=display)
    return validate(doc, RetrievalConfig)


def retrieval_file(ref_name: str, project_dir: Path, suite_dir: Path) -> tuple[Path, str]:
    """Where a retrieval reference points: a path ending in .yaml (relative to the suite file),
    else retrieval/<name>.yaml in the project. Returns (path, how to show it)."""
    if ref_name.endswith((".yaml", ".yml")):
        return (suite_dir / ref_name).resolve(), ref_name
    for suffix in (".yaml", ".yml"):
        shown = f"retrieval/{ref_name}{suffix}"
        if (project_dir / shown).exists():
            return project_dir / shown, shown
    shown = f"retrieval/{ref_name}.yaml"
    return project_dir / shown, shown


def _load_working_copy(path: Path, shown: str) -> tuple[str, Any]:
    config = load_retrieval_config(path, display=shown)
    return config.name, config.content()


def _display(content: Any) -> Any:
    """Content in the file's reading order (name, corpus, chunking, embedding, search)."""
    try:
        return RetrievalConfig.model_validate(content).model_dump(
            mode="json", exclude={"description"}
        )
    except ValueError:
        return _sorted(content)


def _sorted(content: Any) -> Any:
    return json.loads(canonical_json(content))


# `evals retrieval list|show|register` and runs then version configs the same way we do.
register_kind(ArtifactKind("retrieval", "retrieval", _load_working_copy, _display))
