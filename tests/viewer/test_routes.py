"""Route tests of harness/viewer: every page and endpoint against a store filled by real runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from starlette.testclient import TestClient
from typer.testing import CliRunner
from viewer_testkit import (
    MODEL,
    XSS_CASE,
    ViewerStore,
    annotate,
    case_path,
    csrf_of,
)

from harness import annotations
from harness.calibrate import load_labels
from harness.cli import app as cli_app
from harness.store import Store
from harness.viewer import queries, runstats

ROW = re.compile(
    r'<tr class="r-(pass|fail|error)">\s*<td class="caseid"><a href="[^"]*">([^<]*)</a>'
)
TRACE_LINK = re.compile(r'href="/traces/([0-9a-f]{32})"')


def rows(page: str) -> list[tuple[str, str]]:
    """(verdict, case id) of each row of a run page's case table."""
    return [(verdict, case) for verdict, case in ROW.findall(page)]


# --- runs list and run page ---------------------------------------------------------------------


def test_runs_page_lists_every_run_with_its_figures(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    for run_id in viewer_store.runs.values():
        assert f"/runs/{run_id}" in page.text
    assert "viewer-agent" in page.text and "viewertest" in page.text
    assert 'name="base"' in page.text and 'name="cand"' in page.text  # pick two to compare
    only_agent = client.get("/", params={"suite": "viewer-agent"}).text
    assert viewer_store.runs["agent"] in only_agent
    assert viewer_store.runs["a"] not in only_agent


def test_run_page_shows_metrics_slices_and_lineage(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    run_id = viewer_store.runs["b"]
    page = client.get(f"/runs/{run_id}")
    assert page.status_code == 200
    text = page.text
    assert "all scorers" in text and ">equals<" in text and ">icontains<" in text
    assert "95% CI (Wilson)" in text
    # 17 of 24 results pass in run B (see viewer_testkit): the rate and its Wilson interval.
    assert "70.8%" in text and "50.8–85.1%" in text
    assert "by metadata field" in text and ">easy<" in text and ">hard<" in text
    assert "Lineage" in text and "viewertest" in text and "@" in text
    with Store.open(viewer_store.path, create=False) as store:
        manifest = store.get_run(run_id)["manifest"]
    assert manifest["prompt"]["version"] in text and manifest["dataset"]["version"] in text


def test_case_table_filters_by_verdict_scorer_slice_and_text(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    run = f"/runs/{viewer_store.runs['b']}"
    failures = rows(client.get(run, params={"verdict": "fail"}).text)
    assert failures and {verdict for verdict, _ in failures} == {"fail"}
    assert {case for _, case in failures} >= {"c003", "c007", "flaky"}
    flaky = rows(client.get(run, params={"verdict": "flaky"}).text)
    assert sorted(flaky) == [("fail", "flaky"), ("pass", "flaky")]
    assert rows(client.get(run, params={"verdict": "error"}).text) == []
    # A failed scorer: c007's output has an extra word, so icontains passes and equals fails.
    equals_failed = {case for _, case in rows(client.get(run, params={"scorer": "equals"}).text)}
    icontains_failed = {
        case for _, case in rows(client.get(run, params={"scorer": "icontains"}).text)
    }
    assert "c007" in equals_failed and "c007" not in icontains_failed
    hard = {
        case for _, case in rows(client.get(run, params={"by": "difficulty", "value": "hard"}).text)
    }
    assert hard == {"c000", "c003", "c006", "c009", "flaky"}
    assert {case for _, case in rows(client.get(run, params={"q": "answer 7"}).text)} == {"c007"}
    assert {case for _, case in rows(client.get(run, params={"q": "c00"}).text)} == {
        f"c00{i}" for i in range(10)
    }
    assert rows(client.get(run, params={"q": "100%_no_match"}).text) == []


def test_case_table_sorts_and_pages_in_sql(client: TestClient, viewer_store: ViewerStore) -> None:
    run_id = viewer_store.runs["a"]
    with Store.open(viewer_store.path, create=False) as store:
        conn = store.conn
        total = len(store.results(run_id))
        by_latency = queries.case_page(
            conn, run_id, queries.CaseFilter(sort="latency", descending=True, per_page=500)
        )
        latencies = [r.latency_ms for r in by_latency.rows]
        assert latencies == sorted(latencies, reverse=True)
        scores = queries.case_page(conn, run_id, queries.CaseFilter(sort="score", per_page=500))
        known = [r.score for r in scores.rows if r.score is not None]
        assert known == sorted(known)
        seen = []
        for number in range(1, 6):
            page = queries.case_page(conn, run_id, queries.CaseFilter(page=number, per_page=5))
            assert page.total == total and page.pages == 5
            seen += [(r.case_id, r.model, r.epoch) for r in page.rows]
        assert len(seen) == len(set(seen)) == total
    page = client.get(f"/runs/{run_id}", params={"per_page": 5, "page": 2, "sort": "cost"})
    assert "page 2 of 5" in page.text and len(rows(page.text)) == 5


def test_verdict_counts_and_metrics_match_the_stored_summary(viewer_store: ViewerStore) -> None:
    run_id = viewer_store.runs["b"]
    with Store.open(viewer_store.path, create=False) as store:
        stored = store.get_run(run_id)["summary"]
        summary = stored["models"][MODEL]
        from_summary = runstats.run_metrics(store.conn, run_id, stored)[0]
        # A run without a (current) summary, e.g. one still going, is aggregated in SQL.
        aggregated = runstats.run_metrics(store.conn, run_id, None)[0]
        counts = runstats.verdict_counts(store.conn, run_id)
    for metrics in (from_summary, aggregated):
        overall = metrics.overall
        assert (overall.passed, overall.failed) == (summary["passed"], summary["failed"])
        assert overall.interval == (summary["ci_low"], summary["ci_high"])
        for name, block in summary["scorers"].items():
            assert metrics.scorers[name].pass_rate == block["pass_rate"]
            assert abs((metrics.scorers[name].mean_score or 0) - block["mean_score"]) < 1e-9
        assert metrics.latency_p50_ms == summary["latency_p50_ms"]
        assert (metrics.input_tokens, metrics.results) == (summary["input_tokens"], 24)
        assert metrics.cost_usd == summary["cost_usd"]
    assert counts["flaky"] == 2 and counts["pass"] + counts["fail"] == summary["results"]


# --- case and trace pages -------------------------------------------------------------------


def test_case_page_shows_prompt_output_scores_and_trace_link(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    run_id = viewer_store.runs["b"]
    page = client.get(case_path(run_id, "c007", epoch=1))
    assert page.status_code == 200
    text = page.text
    assert "Reply exactly as told." in text and "Case c007: question 7?" in text  # the prompt
    assert "answer 7 extra" in text  # output
    assert "does not equal" in text  # the failing scorer's reason
    assert "epoch 0" in text and "epoch 1" in text  # the case's other result
    assert TRACE_LINK.search(text)
    assert 'name="csrf"' in text and 'list="known-tags"' in text


def test_case_page_of_an_agent_shows_tool_calls(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    text = client.get(case_path(viewer_store.runs["agent"], "paris")).text
    assert "Tool calls" in text and "lookup" in text
    assert "&#34;city&#34;: &#34;Paris" in text  # the arguments, as JSON
    assert "found Paris" in text  # the tool's result
    assert "tool_calls" in text  # the first model call's finish reason


def test_case_page_shows_retrieved_chunks_and_the_judge(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    text = client.get(case_path(viewer_store.runs["python"], "paris", model="-")).text
    assert "Retrieved chunks" in text and "doc-1" in text and "0.910" in text
    assert "judge says" in text and "openai/fake-judge" in text and "correctness" in text


def test_trace_page_renders_the_tree_without_attributes(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    case_page = client.get(case_path(viewer_store.runs["agent"], "paris")).text
    match = TRACE_LINK.search(case_page)
    assert match
    trace_id = match.group(1)
    page = client.get(f"/traces/{trace_id}")
    assert page.status_code == 200
    for name in (
        "case paris",
        "agent",
        "chat fake-model",
        "execute_tool lookup",
        "score icontains",
    ):
        assert name in page.text
    assert "gen_ai.input.messages" not in page.text  # attributes load on demand only
    span_ids = re.findall(r'id="s-([0-9a-f]{16})"', page.text)
    assert len(span_ids) == 7
    details = [client.get(f"/api/traces/{trace_id}/spans/{s}").json() for s in span_ids]
    llm = next(d for d in details if d["span_kind"] == "LLM")
    assert llm["attributes"]["gen_ai.request.model"] == "fake-model"
    assert llm["input_tokens"] and llm["duration_ms"] > 0
    tool = next(d for d in details if d["span_kind"] == "TOOL")
    assert "found Paris" in json.dumps(tool["attributes"])
    # The waterfall nests: the tool span sits under the agent span.
    depths = dict(re.findall(r'id="s-([0-9a-f]{16})" data-depth="(\d+)"', page.text))
    assert depths[tool["span_id"]] == "2"


def test_span_endpoint_answers_json_and_404s(client: TestClient, viewer_store: ViewerStore) -> None:
    trace_id = TRACE_LINK.findall(client.get(case_path(viewer_store.runs["a"], "c001")).text)[0]
    unknown = client.get(f"/api/traces/{trace_id}/spans/{'0' * 16}")
    assert unknown.status_code == 404 and unknown.json() == {"error": "no such span"}
    assert unknown.headers["content-type"].startswith("application/json")
    other = TRACE_LINK.findall(client.get(case_path(viewer_store.runs["a"], "c002")).text)[0]
    span_id = re.findall(r'id="s-([0-9a-f]{16})"', client.get(f"/traces/{other}").text)[0]
    # A span is only served under its own trace.
    assert client.get(f"/api/traces/{trace_id}/spans/{span_id}").status_code == 404
    assert client.get(f"/api/traces/{other}/spans/{span_id}").status_code == 200
    assert client.get(f"/traces/{'a' * 32}").status_code == 404


# --- compare ------------------------------------------------------------------------------------


def test_compare_page_shows_deltas_and_flips_with_a_word_diff(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    params = {"base": viewer_store.runs["a"], "cand": viewer_store.runs["b"]}
    page = client.get("/compare", params=params)
    assert page.status_code == 200
    text = page.text
    assert "Δ (paired)" in text and "exact McNemar" in text and "paired n" in text
    flips = re.findall(
        r'<span class="pill v-(\w+)">\w+</span>\s*<b class="caseid">([^<]+)</b>', text
    )
    assert ("regressed", "c003") in flips and ("improved", "c005") in flips
    assert ("flaky", "flaky") in flips
    assert "<del> extra</del>" in text  # c005's baseline output lost a word
    assert "<ins>a regressed </ins>" in text
    sliced = client.get("/compare", params={**params, "by": "difficulty"}).text
    assert "difficulty=hard" in sliced and "difficulty=easy" in sliced


def test_compare_word_diff_keeps_text_apart_from_markup() -> None:
    from harness.viewer.compareview import word_diff

    base, cand = word_diff("the <b>cat</b> sat", "the <b>dog</b> sat")
    assert [(p.kind, p.text) for p in base] == [
        ("same", "the <b>"),
        ("del", "cat"),
        ("same", "</b> sat"),
    ]
    assert [(p.kind, p.text) for p in cand] == [
        ("same", "the <b>"),
        ("ins", "dog"),
        ("same", "</b> sat"),
    ]


# --- annotations --------------------------------------------------------------------------------


def test_annotate_stores_the_latest_state_and_exports_labels(
    client: TestClient, viewer_store: ViewerStore, tmp_path: Path
) -> None:
    run_id = viewer_store.runs["b"]
    saved = annotate(
        client,
        run_id,
        "c003",
        label="incorrect",
        tags=("regression", "format, tone"),
        note="should say answer 3",
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == case_path(run_id, "c003") + "#annotate"
    page = client.get(saved.headers["location"]).text
    assert "should say answer 3" in page and "regression" in page and "by tester" in page
    assert annotate(client, run_id, "c000", label="correct").status_code == 303
    assert annotate(client, run_id, "c003", epoch=1, label="incorrect").status_code == 303
    # A second save of c000 replaces its state (the history keeps both).
    assert annotate(client, run_id, "c000", label="", tags=("unsure",)).status_code == 303
    with Store.open(viewer_store.path, create=False) as store:
        current = annotations.latest(store, run_id)
        assert current[("c003", MODEL, 0)].tags == ["regression", "format", "tone"]
        assert current[("c003", MODEL, 0)].author == "tester"
        assert current[("c000", MODEL, 0)].label is None
        assert len(annotations.history(store, run_id, ("c000", MODEL, 0))) == 2
        assert "regression" in annotations.known_tags(store)
    table = client.get(f"/runs/{run_id}", params={"q": "c003"}).text
    assert "✗ incorrect" in table
    assert '<option value="regression">' in client.get(case_path(run_id, "c004")).text

    labels_csv, labels_jsonl = tmp_path / "labels.csv", tmp_path / "labels.jsonl"
    runner = CliRunner()
    for path in (labels_csv, labels_jsonl):
        result = runner.invoke(
            cli_app,
            [
                "annotations",
                "export",
                "--run",
                run_id,
                "-o",
                str(path),
                "--store",
                str(viewer_store.path),
            ],
        )
        assert result.exit_code == 0, result.output
    labels = load_labels(labels_csv)  # what `evals judge calibrate --labels` reads
    assert sorted((label.case_id, label.passed, label.model, label.epoch) for label in labels) == [
        ("c003", False, MODEL, 0),
        ("c003", False, MODEL, 1),
    ]
    records = [json.loads(line) for line in labels_jsonl.read_text().splitlines()]
    assert records[0]["output"] == "a regressed answer" and records[0]["expected"] == "answer 3"
    assert load_labels(labels_jsonl)
    tagged = tmp_path / "unsure.jsonl"
    result = runner.invoke(
        cli_app,
        [
            "annotations",
            "export",
            "--run",
            run_id,
            "-o",
            str(tagged),
            "--tag",
            "unsure",
            "--include-unlabelled",
            "--store",
            str(viewer_store.path),
        ],
    )
    assert result.exit_code == 0
    assert [json.loads(line)["case_id"] for line in tagged.read_text().splitlines()] == ["c000"]


def test_annotate_refuses_bad_input(client: TestClient, viewer_store: ViewerStore) -> None:
    run_id = viewer_store.runs["a"]
    assert annotate(client, run_id, "c001", label="maybe").status_code == 400
    assert annotate(client, run_id, "c001", tags=("x" * 65,)).status_code == 400
    csrf = csrf_of(client.get(case_path(run_id, "c001")).text)
    assert annotate(client, run_id, "no-such-case", csrf=csrf).status_code == 400
    assert annotate(client, run_id, "c001", csrf="0" * 64).status_code == 403
    assert annotate(client, "no-such-run", "c001", csrf=csrf).status_code == 404


def test_unknown_or_malformed_names_are_404(client: TestClient, viewer_store: ViewerStore) -> None:
    run_id = viewer_store.runs["a"]
    for path in (
        "/runs/no-such-run",
        "/runs/..%2F..%2Fetc%2Fpasswd",
        "/runs/%3Cscript%3E",
        case_path(run_id, "no-such-case"),
        f"/runs/{run_id}/case?case=c001&model={MODEL}&epoch=x",
        f"/runs/{run_id}/case?case=c001",
        "/compare?base=no-such&cand=run",
        "/static/viewer.py",
        "/static/..%2Fapp.py",
        "/nothing-here",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text
    assert client.get(f"/runs/{run_id}/annotate").status_code == 405


def test_static_files_are_served_from_the_package(client: TestClient) -> None:
    css = client.get("/static/viewer.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = client.get("/static/viewer.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")


def test_xss_case_is_reachable_by_its_odd_id(client: TestClient, viewer_store: ViewerStore) -> None:
    page = client.get(case_path(viewer_store.runs["a"], XSS_CASE))
    assert page.status_code == 200 and "&lt;i&gt;case&lt;/i&gt;" in page.text


# --- the command --------------------------------------------------------------------------------


def test_evals_view_serves_the_store_and_prints_its_url(viewer_store: ViewerStore) -> None:
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "evals"),
            "view",
            "--store",
            str(viewer_store.path),
            "--port",
            "0",
            "--no-open",
            "--author",
            "someone",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"evals view: (http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        for _ in range(100):
            try:
                response = httpx.get(match.group(1), timeout=5)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert response.status_code == 200 and viewer_store.runs["a"] in response.text
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_evals_view_refuses_a_missing_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["view", "--store", str(tmp_path / "none.db"), "--no-open", "--port", "0"]
    )
    assert result.exit_code == 2 and "no run store" in result.output


def test_non_loopback_without_token_is_a_config_error(viewer_store: ViewerStore) -> None:
    from harness.errors import ConfigError
    from harness.viewer import ViewerConfig, create_app

    try:
        create_app(ViewerConfig(viewer_store.path, host="0.0.0.0"))
    except ConfigError as exc:
        assert "token" in str(exc)
    else:
        raise AssertionError("binding 0.0.0.0 without a token must be refused")
