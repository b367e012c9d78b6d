"""The RAG targets: retrieve chunks for a case's query, then (rag) generate an answer with them.

`rag` renders the suite's prompt with the retrieved chunks available to the template as
`chunks` (a list of {id, document_id, text, score, metadata, rank}) and `context` (a numbered
block with chunk ids, ready for citations), and calls the model once. `retrieval` stops after
retrieving: its output is the retrieved chunk ids, one per line, so retrieval metrics run with
no model at all. Both store the retrieved chunks with each result (TargetResult.retrieved).

The index is not opened while the suite is validated: `prepare()` opens it (building it first
when its version is missing) when the run starts, or the first query does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tracing
from harness.cases import Case
from harness.errors import ConfigError
from harness.prompts import Prompt
from harness.providers import ChatRequest, ModelClient
from harness.rag.config import RetrievalConfig, load_retrieval_config, retrieval_file
from harness.rag.index import RetrievalIndex, RetrievedChunk, open_index
from harness.store import STORE_DIRNAME
from harness.targets import TargetResult, generate, merged_params
from harness.templates import render, render_value

QUERY_FIELDS = ("question", "query", "input")
RESERVED = ("chunks", "context")  # template variables the rag target supplies


def chunk_record(chunk: RetrievedChunk) -> dict[str, Any]:
    """A retrieved chunk as stored with a result and shown to templates."""
    return {
        "id": chunk.id,
        "document_id": chunk.document_id,
        "text": chunk.text,
        "score": float(chunk.score),
        "metadata": dict(chunk.metadata or {}),
        "rank": int(chunk.rank),
    }


def context_block(chunks: list[dict[str, Any]]) -> str:
    """The chunks as one numbered block, each headed by its id for citations."""
    return "\n\n".join(f"[{c['rank']}] (id: {c['id']}) {c['text'].strip()}" for c in chunks)


class RetrievalSource:
    """A suite's retrieval config and, once the run starts, its index (opened once, shared)."""

    def __init__(
        self,
        config: RetrievalConfig,
        config_path: Path,
        *,
        ref: str,
        display: str,
        top_k: int | None,
        project_dir: Path,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.ref = ref
        self.display = display
        self.top_k: int = top_k or int(config.search.top_k)
        self.store_dir = project_dir / STORE_DIRNAME  # holds chroma/ and the embedding cache
        self.chroma_url: str | None = None
        self._index: RetrievalIndex | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.config.name)

    def prepare(
        self,
        *,
        store_dir: Path | None = None,
        chroma_url: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> RetrievalIndex:
        """Open the index (building it when its version is missing); idempotent. `store_dir`
        is the run store's directory (.evals): the index lives in its chroma/ folder."""
        with self._lock:
            if self._index is None:
                if store_dir is not None:
                    self.store_dir = store_dir
                self.chroma_url = chroma_url or self.chroma_url
                self._index = open_index(
                    self.config,
                    config_path=self.config_path,
                    store_dir=self.store_dir,
                    chroma_url=self.chroma_url,
                    build=True,
                    progress=progress,
                )
            return self._index

    @property
    def index(self) -> RetrievalIndex:
        return self._index if self._index is not None else self.prepare()

    def query(
        self, text: str, filters: dict[str, Any] | None, variables: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Retrieve the top_k chunks for `text` (blocking; one query at a time); `variables`
        feed the config's search.query_template beside `query`."""
        index = self.index
        with self._lock:
            found = index.query(text, top_k=self.top_k, filters=filters, variables=variables)
        return [chunk_record(chunk) for chunk in found]

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed texts with the index's embedding model (blocking)."""
        index = self.index
        with self._lock:
            return index.embed(texts)

    def artifacts(self) -> dict[str, list[dict[str, Any]]]:
        """The retrieval config and index versions, in the run manifest's `artifacts` shape."""
        return self.index.artifacts(self.ref)


class RetrievalTarget:
    """Retrieve the case's query only; output: the retrieved chunk ids, one per line."""

    kind = "retrieval"

    def __init__(
        self,
        source: RetrievalSource,
        *,
        query: str | None = None,
        filters: dict[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.query_template = query
        self.filters = filters

    # --- configuration --------------------------------------------------------------------
    def query_text(self, case: Case) -> str:
        """The case's query: the target's `query` template, else its question/query/input."""
        vars = case.template_vars()
        if self.query_template is not None:
            text = render(self.query_template, vars, where=f"case {case.id!r}: target.query")
        else:
            field = next((f for f in QUERY_FIELDS if case.fields.get(f) is not None), None)
            if field is None:
                raise ConfigError(
                    f"case {case.id!r} has no query: give it a {'/'.join(QUERY_FIELDS)} "
                    "column or set target.query (a template over the case)",
                    field="target.query",
                )
            text = str(case.fields[field])
        if not text.strip():
            raise ConfigError(f"case {case.id!r}: the query is empty", field="target.query")
        return text

    def case_filters(self, case: Case) -> dict[str, Any] | None:
        if self.filters is None:
            return None
        value = render_value(
            self.filters, case.template_vars(), where=f"case {case.id!r}: target.filters"
        )
        return dict(value)

    def check_case(self, case: Case) -> None:
        self.query_text(case)
        self.case_filters(case)

    def prepare(self, **options: Any) -> None:
        """Open (or build) the index before the run's first case."""
        self.source.prepare(**options)

    def artifacts(self) -> dict[str, list[dict[str, Any]]]:
        return self.source.artifacts()

    # --- running --------------------------------------------------------------------------
    async def retrieve(self, case: Case) -> list[dict[str, Any]]:
        text = self.query_text(case)
        return await asyncio.to_thread(
            self.source.query, text, self.case_filters(case), case.template_vars()
        )

    async def run(self, case: Case, client: ModelClient | None, epoch: int) -> TargetResult:
        started = time.perf_counter()
        try:
            chunks = await self.retrieve(case)
        except Exception as exc:  # the index failed for this case: an error result, not a fail
            return _failed(exc, started)
        return TargetResult(
            output="\n".join(c["id"] for c in chunks),
            retrieved=chunks,
            latency_ms=(time.perf_counter() - started) * 1e3,
        )


class RagTarget(RetrievalTarget):
    """Retrieve, render the prompt with the chunks (`chunks`, `context`), call the model once."""

    kind = "rag"

    def __init__(
        self,
        prompt: Prompt,
        source: RetrievalSource,
        *,
        query: str | None = None,
        filters: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(source, query=query, filters=filters)
        self.prompt = prompt

    def with_chunks(self, case: Case, chunks: list[dict[str, Any]]) -> Case:
        """The case as the prompt sees it: its fields plus `chunks` and `context`."""
        fields = {**case.fields, "chunks": chunks, "context": context_block(chunks)}
        return Case(id=case.id, fields=fields, expected=case.expected, metadata=case.metadata)

    def check_case(self, case: Case) -> None:
        super().check_case(case)
        taken = [name for name in RESERVED if name in case.fields]
        if taken:
            raise ConfigError(
                f"case {case.id!r} has a {taken[0]!r} column, but a rag target fills "
                f"{' and '.join(RESERVED)} with the retrieved chunks; rename the column",
                field="target",
            )
        example = [
            {
                "id": "example#0",
                "document_id": "example",
                "text": "example text",
                "score": 1.0,
                "metadata": {},
                "rank": 1,
            }
        ]
        self.prompt.render(self.with_chunks(case, example))

    async def run(self, case: Case, client: ModelClient | None, epoch: int) -> TargetResult:
        assert client is not None, "rag targets need a model"
        with tracing.step_span(None, "rag", kind="CHAIN") as span:
            result = await self._run(case, client, epoch)
            span.set_output(result.output)
            span.set_attribute("evals.rag.chunks", len(result.retrieved or []))
            if result.error is not None:
                span.set_error(result.error, result.error_kind or "error")
            return result

    async def _run(self, case: Case, client: ModelClient, epoch: int) -> TargetResult:
        started = time.perf_counter()
        try:
            chunks = await self.retrieve(case)
        except Exception as exc:
            return _failed(exc, started)
        try:
            messages = self.prompt.render(self.with_chunks(case, chunks))
        except ConfigError as exc:  # e.g. `chunks[0]` when nothing passed the score threshold
            return TargetResult(
                output=None,
                retrieved=chunks,
                error=f"the prompt did not render with {len(chunks)} retrieved chunk(s): {exc}",
                error_kind="render_error",
                latency_ms=(time.perf_counter() - started) * 1e3,
            )
        request = ChatRequest(
            messages=messages,
            params=merged_params(self.prompt, client),
            epoch=epoch,
            **self.prompt.request_options(),
        )
        return await generate(client, request, started, retrieved=chunks, latency_from_start=True)


def _failed(exc: Exception, started: float) -> TargetResult:
    return TargetResult(
        output=None,
        error=f"retrieval failed: {type(exc).__name__}: {exc}",
        error_kind="retrieval_error",
        latency_ms=(time.perf_counter() - started) * 1e3,
    )


def load_source(
    ref: str, *, top_k: int | None, project_dir: Path, suite_dir: Path
) -> RetrievalSource:
    """Resolve `name`, `name@version` or `path.yaml` to its retrieval config (not its index).
    A pinned version must be the working copy's: a suite never silently retrieves with an
    edited config. Raises ConfigError (field target.retrieval when the file is not the cause)."""
    name, _, pinned = ref.partition("@")
    path, shown = retrieval_file(name, project_dir, suite_dir)
    if not path.exists():
        raise ConfigError(
            f"retrieval config {name!r} not found (looked for {shown})", field="target.retrieval"
        )
    config = load_retrieval_config(path, display=shown)
    if pinned and pinned != config.version:
        raise ConfigError(
            f"retrieval config {name!r} is at version {config.version}, but {ref!r} was asked "
            "for (only the working copy's version can run; labels are not resolved yet)",
            field="target.retrieval",
        )
    return RetrievalSource(
        config, path, ref=ref, display=shown, top_k=top_k, project_dir=project_dir
    )
