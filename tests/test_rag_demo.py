"""The RAG demo suites (evalsets/rag_demo.yaml, evalsets/retrieval_demo.yaml) end to end
against the bundled models: all-MiniLM-L6-v2 embeds docs/corpus, SmolLM2-135M answers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from harness.execute import execute
from harness.runner import RunOptions
from harness.store import ResultRow, Store

ROOT = Path(__file__).resolve().parent.parent


def rows(store_path: Path, run_id: str) -> tuple[dict[str, Any], list[ResultRow]]:
    with Store.open(store_path, create=False) as store:
        return store.get_run(run_id)["manifest"], store.results(run_id)


def test_retrieval_demo_runs_without_a_model(tmp_path: Path) -> None:
    store_path = tmp_path / "evals.db"
    outcome = execute(
        ROOT / "evalsets" / "retrieval_demo.yaml",
        project_dir=ROOT,
        store_path=store_path,
        options=RunOptions(trace=False),
    )
    assert outcome.status == "completed"
    manifest, results = rows(store_path, outcome.run_id)
    assert len(results) == 24 and all(r.status != "error" for r in results)
    assert all(len(r.detail["retrieved"]) == 5 for r in results)
    assert [a["name"] for a in manifest["artifacts"]["retrieval"]] == ["docs"]
    assert [a["name"] for a in manifest["artifacts"]["index"]] == ["docs"]
    hit5 = [s for r in results for s in r.scores if s.scorer == "hit-at-5"]
    assert sum(s.status == "pass" for s in hit5) / len(hit5) >= 0.9  # the suite's threshold


@pytest.mark.localmodel
def test_rag_demo_end_to_end(tmp_path: Path) -> None:
    store_path = tmp_path / "evals.db"
    started = time.perf_counter()
    outcome = execute(
        ROOT / "evalsets" / "rag_demo.yaml",
        project_dir=ROOT,
        store_path=store_path,
        options=RunOptions(),
    )
    seconds = time.perf_counter() - started
    assert outcome.status == "completed"
    _, results = rows(store_path, outcome.run_id)
    assert len(results) == 24 and all(r.status != "error" for r in results)
    for result in results:
        retrieved = result.detail["retrieved"]
        assert [chunk["rank"] for chunk in retrieved] == [1, 2, 3]
        assert retrieved[0]["text"] in result.detail["messages"][-1]["content"]
        assert result.output
    by_scorer: dict[str, list[bool]] = {}
    for result in results:
        for score in result.scores:
            by_scorer.setdefault(score.scorer, []).append(score.status == "pass")
    rates = {name: sum(passes) / len(passes) for name, passes in by_scorer.items()}
    assert rates["hit-at-k"] >= 0.8 and rates["icontains"] >= 0.3  # the suite's thresholds
    assert seconds < 600, f"the demo took {seconds:.0f} s"
