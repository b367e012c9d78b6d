"""The rag and retrieval targets (harness/rag_target.py) end to end: a tiny corpus indexed with
the bundled embedding model, answers from the fake OpenAI server, spans through an in-memory
exporter, lineage in the run manifest, and the compare view of gold documents."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    FAKE_KEY,
    KEY_ENV,
    invoke,
    model_entry,
    threaded_server,
    write_jsonl,
    write_yaml,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracing
from harness.errors import ConfigError
from harness.execute import execute
from harness.fakeserver import FakeServer, Reply, echo_or_script
from harness.rag import index_version, load_retrieval_config
from harness.runner import Runner, RunOptions, RunOutcome
from harness.store import Store
from harness.suite import load_suite
from tracing import conventions as c

DOCS = {
    "mars.md": "# Mars\n\nMars is red and has two moons, Phobos and Deimos.\n\n"
    "## Volcanoes\n\nOlympus Mons on Mars is the tallest volcano.\n",
    "venus.md": "# Venus\n\nVenus is the hottest planet, with thick clouds of acid.\n",
    "jupiter.md": "# Jupiter\n\nJupiter is the largest planet; Ganymede is its largest moon.\n",
}
ROWS = [
    {
        "id": "volcano",
        "question": "Which is the tallest volcano?",
        "expected": "mars.md",
        "relevant": ["mars.md"],
    },
    {
        "id": "hottest",
        "question": "Which planet is the hottest?",
        "expected": "venus.md",
        "relevant": ["venus.md"],
    },
    {
        "id": "moons",
        "question": "Which planets have named moons?",
        "expected": "mars.md",
        "relevant": ["mars.md", "jupiter.md"],
    },
]
PROMPT = {
    "name": "rag",
    "messages": [
        {"role": "system", "content": "Answer from the context."},
        # The fake server answers with the REPLY line: the top chunk's document id.
        {
            "role": "user",
            "content": "Context:\n{{ context }}\n\nQ: {{ question }}\n"
            "REPLY: {{ chunks[0].document_id }}",
        },
    ],
    "params": {"temperature": 0, "max_tokens": 16},
}


class KeptExporter(InMemorySpanExporter):
    """Keeps collecting after a run shuts its pipeline down."""

    def shutdown(self) -> None:
        return None


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = KeptExporter()
    monkeypatch.setattr(tracing, "setup", functools.partial(tracing.setup, exporters=[exporter]))
    return exporter


@pytest.fixture(scope="module")
def server() -> Any:
    handle = FakeServer(latency_ms=0, seed=0).run_in_thread()
    yield handle
    handle.stop()


def project(
    root: Path,
    api_base: str | None,
    *,
    target: dict[str, Any] | None = None,
    scorers: list[dict[str, Any]] | None = None,
    rows: list[dict[str, Any]] | None = None,
    search: dict[str, Any] | None = None,
    **suite_extra: Any,
) -> Path:
    """A project with docs/, retrieval/tiny.yaml, prompts/rag.yaml and evalsets/rag.yaml."""
    for name, text in DOCS.items():
        (root / "docs").mkdir(parents=True, exist_ok=True)
        (root / "docs" / name).write_text(text, encoding="utf-8")
    write_yaml(
        root / "retrieval" / "tiny.yaml",
        {
            "name": "tiny",
            "corpus": ["../docs/*.md"],
            "chunking": {"strategy": "markdown", "size": 60, "overlap": 0},
            "search": search or {"top_k": 2},
        },
    )
    write_yaml(root / "prompts" / "rag.yaml", PROMPT)
    write_jsonl(root / "evalsets" / "data" / "cases.jsonl", ROWS if rows is None else rows)
    suite: dict[str, Any] = {
        "name": "ragtest",
        "dataset": "data/cases.jsonl",
        "prompt": "rag",
        "target": target or {"type": "rag", "retrieval": "tiny"},
        "models": [model_entry(api_base or "")],
        "scorers": scorers
        or [
            {"type": "hit-at-k"},
            {"type": "mrr"},
            {"type": "icontains", "value": "{{ expected }}"},
        ],
    }
    suite.update(suite_extra)
    return write_yaml(root / "evalsets" / "rag.yaml", suite)


def run(root: Path, suite: Path, runners: list[Runner] | None = None, **options: Any) -> RunOutcome:
    return execute(
        suite,
        project_dir=root,
        store_path=root / ".evals" / "evals.db",
        options=RunOptions(max_error_rate=1.0, **options),
        on_start=(runners.append if runners is not None else None),
    )


def results(root: Path, run_id: str) -> dict[str, Any]:
    with Store.open(root / ".evals" / "evals.db", create=False) as store:
        return {r.case_id: r for r in store.results(run_id)}


def manifest(root: Path, run_id: str) -> dict[str, Any]:
    with Store.open(root / ".evals" / "evals.db", create=False) as store:
        return dict(store.get_run(run_id)["manifest"])


def parents(spans: list[ReadableSpan], span: ReadableSpan) -> list[str]:
    """Names of the span's ancestors, nearest first."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


def test_rag_run_end_to_end(tmp_path: Path, server: Any, memory: InMemorySpanExporter) -> None:
    suite = project(tmp_path, server.url)
    runners: list[Runner] = []
    outcome = run(tmp_path, suite, runners)
    assert outcome.status == "completed"
    rows = results(tmp_path, outcome.run_id)
    assert set(rows) == {"volcano", "hottest", "moons"}

    volcano = rows["volcano"]
    retrieved = volcano.detail["retrieved"]
    assert [chunk["rank"] for chunk in retrieved] == [1, 2]  # the config's top_k
    assert set(retrieved[0]) == {"id", "document_id", "text", "score", "metadata", "rank"}
    assert retrieved[0]["document_id"].endswith("mars.md")
    assert "Olympus Mons" in retrieved[0]["text"]
    assert retrieved[0]["id"].startswith(retrieved[0]["document_id"] + "#")
    assert retrieved[0]["score"] >= retrieved[1]["score"]
    # The chunks flowed into the prompt: a numbered block with their ids, and the template's
    # own use of `chunks` decided the answer.
    user = volcano.detail["messages"][-1]["content"]
    assert f"[1] (id: {retrieved[0]['id']})" in user and "Olympus Mons" in user
    assert volcano.output == retrieved[0]["document_id"]
    scores = {s.scorer: s for s in volcano.scores}
    assert scores["hit-at-k"].status == "pass" and scores["mrr"].value == 1.0
    assert volcano.status == "pass"

    # Spans: the case holds a rag chain with a RETRIEVER span (with its query embedding) and
    # the LLM call.
    spans = list(memory.get_finished_spans())
    case_span = next(s for s in spans if s.name == "case volcano")
    trace = [s for s in spans if s.context.trace_id == case_span.context.trace_id]
    kinds = {s.name: str((s.attributes or {}).get(c.OPENINFERENCE_SPAN_KIND)) for s in trace}
    retriever = next(s for s in trace if kinds[s.name] == c.KIND_RETRIEVER)
    assert parents(trace, retriever)[:2] == ["rag", "case volcano"]
    assert kinds["rag"] == c.KIND_CHAIN
    assert any(
        k == c.KIND_LLM and parents(trace, s)[:1] == ["rag"] for s in trace for k in [kinds[s.name]]
    )
    assert any(k == c.KIND_EMBEDDING for k in kinds.values())

    # Lineage: the retrieval config's version and the index version.
    config_path = tmp_path / "retrieval" / "tiny.yaml"
    config = load_retrieval_config(config_path)
    artifacts = manifest(tmp_path, outcome.run_id)["artifacts"]
    assert [(a["name"], a["version"], a["ref"]) for a in artifacts["retrieval"]] == [
        ("tiny", config.version, "tiny")
    ]
    assert [(a["name"], a["version"]) for a in artifacts["index"]] == [
        ("tiny", index_version(config, config_path))
    ]

    # A second run with the index unchanged opens it without rebuilding.
    assert runners[0].suite.target.source.index.stats.built  # type: ignore[attr-defined]
    again = run(tmp_path, suite, runners)
    assert runners[1].suite.target.source.index.stats.built is False  # type: ignore[attr-defined]
    assert manifest(tmp_path, again.run_id)["artifacts"]["index"] == artifacts["index"]


def test_retrieval_target_needs_no_model(tmp_path: Path) -> None:
    scorers = [
        {"type": "hit-at-k", "k": 1},
        {"type": "recall-at-k"},
        {
            "type": "ndcg-at-k",
            "name": "ndcg-chunks",
            "level": "chunk",
            "relevant_field": "chunks_relevant",
        },
        {"type": "precision-at-k", "name": "answer-found", "reference": "Phobos"},
    ]
    rows = [dict(row, chunks_relevant=["mars.md#1"]) for row in ROWS]
    suite = project(
        tmp_path,
        None,
        target={"type": "retrieval", "retrieval": "tiny", "top_k": 3},
        scorers=scorers,
        rows=rows,
        prompt=None,
        models=[],
    )
    outcome = run(tmp_path, suite, trace=False)
    assert outcome.status == "completed"
    rows_by_id = results(tmp_path, outcome.run_id)
    moons = rows_by_id["moons"]
    assert moons.model == "-" and moons.cost_usd in (0.0, None) and moons.input_tokens is None
    ids = [chunk["id"] for chunk in moons.detail["retrieved"]]
    assert moons.output == "\n".join(ids) and len(ids) == 3
    scores = {s.scorer: s for s in moons.scores}
    assert scores["recall-at-k"].value in (0.5, 1.0)  # two gold documents, k = 3
    assert scores["answer-found"].value == pytest.approx(
        sum("Phobos" in ch["text"] for ch in moons.detail["retrieved"]) / 3
    )
    summary = outcome.summary
    assert "hit-at-k" in json.dumps(summary, default=str)


def test_loading_a_rag_suite_builds_nothing(tmp_path: Path) -> None:
    suite = project(tmp_path, "http://127.0.0.1:9/v1")
    loaded = load_suite(suite, project_dir=tmp_path)
    assert loaded.target.kind == "rag"
    assert loaded.target.source.top_k == 2  # type: ignore[attr-defined]
    assert not (tmp_path / ".evals").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"target": {"type": "rag", "retrieval": "missing"}},
            "retrieval config 'missing' not found",
        ),
        ({"target": {"type": "rag"}}, "needs 'retrieval"),
        ({"prompt": None}, "a rag target needs 'prompt'"),
        ({"target": {"type": "chat", "top_k": 3}}, "'top_k' applies only to rag and retrieval"),
        ({"target": {"type": "retrieval", "retrieval": "tiny"}}, "calls no model"),
        ({"target": {"type": "rag", "retrieval": "tiny@0000abcd"}}, "is at version"),
        (
            {"scorers": [{"type": "hit-at-k"}], "dataset": "data/unlabelled.jsonl"},
            "labels no relevant ids",
        ),
    ],
)
def test_suite_errors(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    suite = project(tmp_path, "http://127.0.0.1:9/v1")
    write_jsonl(
        tmp_path / "evalsets" / "data" / "unlabelled.jsonl",
        [{"id": "x", "question": "q?", "relevant": []}],
    )
    data = {**json.loads(json.dumps(_read(suite))), **change}
    write_yaml(suite, {k: v for k, v in data.items() if v is not None})
    with pytest.raises(ConfigError, match=message):
        load_suite(suite, project_dir=tmp_path)


def test_cases_need_a_query_and_keep_clear_of_the_chunk_variables(tmp_path: Path) -> None:
    suite = project(
        tmp_path,
        "http://127.0.0.1:9/v1",
        rows=[{"id": "x", "prompt_text": "Which is red?", "relevant": ["mars.md"]}],
    )
    with pytest.raises(ConfigError, match="has no query"):
        load_suite(suite, project_dir=tmp_path)
    suite = project(
        tmp_path,
        "http://127.0.0.1:9/v1",
        target={"type": "rag", "retrieval": "tiny", "query": "{{ prompt_text }}"},
        rows=[
            {"id": "x", "prompt_text": "Which is red?", "question": "q", "relevant": ["mars.md"]}
        ],
    )
    assert (
        load_suite(suite, project_dir=tmp_path).target.query_text(  # type: ignore[attr-defined]
            load_suite(suite, project_dir=tmp_path).cases[0]
        )
        == "Which is red?"
    )
    suite = project(
        tmp_path, "http://127.0.0.1:9/v1", rows=[{"id": "x", "question": "q", "context": "mine"}]
    )
    with pytest.raises(ConfigError, match="has a 'context' column"):
        load_suite(suite, project_dir=tmp_path)


def test_compare_lists_gold_documents_that_left_the_top_k(tmp_path: Path) -> None:
    target = {"type": "retrieval", "retrieval": "tiny", "top_k": 3}
    suite = project(
        tmp_path, None, target=target, scorers=[{"type": "recall-at-k"}], prompt=None, models=[]
    )
    base = run(tmp_path, suite, trace=False)
    project(
        tmp_path,
        None,
        target={**target, "top_k": 1},
        scorers=[{"type": "recall-at-k"}],
        prompt=None,
        models=[],
    )
    cand = run(tmp_path, suite, trace=False)
    store = str(tmp_path / ".evals" / "evals.db")
    shown = invoke(tmp_path, ["compare", base.run_id, cand.run_id, "--store", store, "--json"])
    assert shown.exit_code == 0, shown.output
    gold = json.loads(shown.stdout)["gold"]
    moons = next(item for item in gold if item["case_id"] == "moons")
    assert moons["base_k"] == 3 and moons["cand_k"] == 1
    assert len(moons["dropped"]) == 1 and moons["gained"] == []
    table = invoke(tmp_path, ["compare", base.run_id, cand.run_id, "--store", store])
    shown_text = " ".join(table.stdout.split())  # the title may wrap
    assert "gold documents in the top k: dropped in 1 case(s), gained in 0" in shown_text


def _read(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def context_judge(body: dict[str, Any]) -> Reply:
    """A judge that passes when the context section holds the reference answer."""
    if body.get("model") != "fake-judge":
        return echo_or_script(body)
    prompt = next(str(m["content"]) for m in body["messages"] if m["role"] == "user")
    context = re.search(r"<context id=[0-9a-f]+>\n(.*?)</context", prompt, re.DOTALL)
    reference = re.search(r"<reference id=[0-9a-f]+>\n(.*?)</reference", prompt, re.DOTALL)
    verdict = bool(context and reference and reference.group(1).strip() in context.group(1))
    return Reply(
        json.dumps({"reason": "in context" if verdict else "missing", "score": int(verdict)})
    )


def test_context_recall_judge_reads_the_retrieved_chunks(tmp_path: Path) -> None:
    rows = [
        {
            "id": "volcano",
            "question": "Which is the tallest volcano?",
            "expected": "Olympus Mons",
            "relevant": ["mars.md"],
        },
        {
            "id": "acid",
            "question": "Which planet is the hottest?",
            "expected": "Ganymede",
            "relevant": ["venus.md"],
        },
    ]
    with threaded_server(responder=context_judge) as judge_server:
        judge = {**model_entry(judge_server.url), "id": "openai/fake-judge"}
        suite = project(
            tmp_path,
            None,
            target={"type": "retrieval", "retrieval": "tiny", "top_k": 1},
            scorers=[{"type": "judge", "rubric": "context_recall", "judge": judge}],
            rows=rows,
            prompt=None,
            models=[],
        )
        outcome = run(tmp_path, suite, trace=False)
    by_case = results(tmp_path, outcome.run_id)
    assert by_case["volcano"].status == "pass" and by_case["acid"].status == "fail"
    rubrics = manifest(tmp_path, outcome.run_id)["artifacts"]["rubric"]
    assert [r["name"] for r in rubrics] == ["context_recall"]


def test_nothing_retrieved(tmp_path: Path, server: Any) -> None:
    """Above the score threshold nothing comes back: the retrieval target outputs nothing and
    misses; a prompt that needs a chunk makes the rag case an error, not a crash."""
    strict = {"top_k": 2, "score_threshold": 0.99}
    suite = project(
        tmp_path,
        None,
        target={"type": "retrieval", "retrieval": "tiny"},
        scorers=[{"type": "hit-at-k"}],
        prompt=None,
        models=[],
        search=strict,
    )
    outcome = run(tmp_path, suite, trace=False)
    volcano = results(tmp_path, outcome.run_id)["volcano"]
    assert volcano.output == "" and volcano.detail["retrieved"] == []
    assert volcano.status == "fail" and volcano.scores[0].value == 0.0
    suite = project(tmp_path, server.url, search=strict)
    outcome = run(tmp_path, suite, trace=False)
    volcano = results(tmp_path, outcome.run_id)["volcano"]
    assert volcano.status == "error" and volcano.error_kind == "render_error"
