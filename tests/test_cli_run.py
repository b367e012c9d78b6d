"""Tests for `evals run` and friends (harness/cli.py over harness/execute.py and runner.py):
exit codes, the JSON summary, selection options, model override, targets, and
runs/show/export/import."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    MODEL_ID,
    case_rows,
    invoke,
    make_project,
    model_entry,
    result_rows,
    run_json,
    run_records,
    store_snapshot,
    threaded_server,
    write_jsonl,
)

from harness.fakeserver import Faults

# --- exit codes ------------------------------------------------------------------------------


def test_exit_0_when_thresholds_hold(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=case_rows(6, fail={0}))
        code, summary = run_json(project)
    assert code == 0
    assert summary["status"] == "completed"
    assert summary["thresholds_ok"] is True
    block = summary["models"][MODEL_ID]
    assert (block["passed"], block["failed"], block["errors"]) == (5, 1, 0)


def test_exit_1_when_a_threshold_fails(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=case_rows(6, fail={0, 1, 2, 3}))
        code, summary = run_json(project)
    assert code == 1
    assert summary["thresholds_ok"] is False
    (check,) = summary["thresholds"]
    assert check == {
        "model": MODEL_ID, "scorer": "equals", "required": 0.5,
        "actual": pytest.approx(2 / 6), "ok": False,
    }  # fmt: skip


def test_exit_2_on_a_bad_option_writes_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path, "http://127.0.0.1:9/v1")
    result = invoke(project, project.run_args("--cache", "sometimes"))
    assert result.exit_code == 2
    assert "--cache must be one of" in result.stderr
    assert not project.store.exists()
    assert not project.store.parent.exists()


def test_exit_3_when_the_provider_is_down(tmp_path: Path) -> None:
    with threaded_server(faults=Faults(rate_500=1.0)) as server:
        project = make_project(tmp_path, server.url, n=40, model={"max_attempts": 2})
        result = invoke(project, project.run_args("--concurrency", "2"))
        total = server.stats.total
    assert result.exit_code == 3, result.output
    assert "max-error-rate" in result.stderr
    (run,) = run_records(project.store)
    assert run["status"] == "aborted"
    # Aborted early: far fewer than the 40 cases x 2 attempts were sent.
    assert total < 40
    rows = result_rows(project.store)
    assert rows and all(r["status"] == "error" and r["error_kind"] == "server_error" for r in rows)


def test_errors_certain_to_exceed_the_limit_abort_with_exit_3(tmp_path: Path) -> None:
    rows = case_rows(10)
    rows[3]["question"] = "CONTEXT_TOO_LONG"  # 1 error in 10 is already above 5%
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=rows)
        result = invoke(project, project.run_args("--max-error-rate", "0.05"))
        assert result.exit_code == 3, result.output
        assert "exceeds --max-error-rate 5%" in result.stderr
        code, summary = run_json(project, "--max-error-rate", "0.2")
        assert code == 0
        assert summary["errors"] == 1


def test_suite_max_error_rate_applies_unless_the_option_is_given(tmp_path: Path) -> None:
    rows = case_rows(10)
    rows[2]["question"] = rows[7]["question"] = "CONTEXT_TOO_LONG"  # 20% errors
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=rows, max_error_rate=0.5)
        code, summary = run_json(project)
        assert (code, summary["errors"], summary["max_error_rate"]) == (0, 2, 0.5), summary
        code, summary = run_json(project, "--max-error-rate", "0.1")  # the option wins
        assert (code, summary["max_error_rate"]) == (3, 0.1)
        del project.suite_data["max_error_rate"]
        project.write()
        code, summary = run_json(project)  # neither: 10%
        assert (code, summary["max_error_rate"]) == (3, 0.1)
    manifests = [run["manifest"] for run in run_records(project.store)]
    assert [json.loads(m)["max_error_rate"] for m in manifests] == [0.5, 0.1, 0.1]


def test_json_summary_is_printed_when_the_run_aborts(tmp_path: Path) -> None:
    with threaded_server(faults=Faults(rate_500=1.0)) as server:
        project = make_project(tmp_path, server.url, n=40, model={"max_attempts": 1})
        result = invoke(project, project.run_args("--json", "--concurrency", "1"))
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    (run,) = run_records(project.store)
    assert summary["run_id"] == run["id"]
    assert summary["status"] == run["status"] == "aborted"
    assert (summary["aborted"], summary["error_rate_ok"]) == (True, False)
    assert summary["abort_reason"] == "error rate 5/5 exceeds --max-error-rate 10%"  # > 4/40
    assert summary["results"] == summary["errors"] == 5
    assert summary["planned"] == 40
    message = result.stderr.strip().splitlines()[-1]  # after the progress bar: one line
    assert message.startswith(f"run {run['id']} could not measure (aborted): error rate 5/5")


@pytest.mark.parametrize("json_output", [True, False])
def test_a_run_that_completes_above_the_error_rate_limit_exits_3(
    tmp_path: Path, json_output: bool
) -> None:
    rows = case_rows(10)
    rows[9]["question"] = "CONTEXT_TOO_LONG"  # the last case: the run completes, at 10% errors
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=rows, concurrency=1)
        args = ["--max-error-rate", "0.05", *(["--json"] if json_output else [])]
        result = invoke(project, project.run_args(*args))
    assert result.exit_code == 3, result.output
    (run,) = run_records(project.store)
    assert run["status"] == "completed"
    message = result.stderr.strip().splitlines()[-1]  # after the progress bar: one line
    assert message.startswith(f"run {run['id']} could not measure (completed): error rate 1/10")
    if json_output:
        summary = json.loads(result.stdout)
        assert (summary["status"], summary["results"], summary["errors"]) == ("completed", 10, 1)
        assert (summary["aborted"], summary["error_rate_ok"]) == (False, False)
        assert summary["abort_reason"] is None


def test_errors_are_counted_apart_from_fails(tmp_path: Path) -> None:
    rows = case_rows(8, fail={0, 1})
    rows[5]["question"] = "CONTEXT_TOO_LONG"
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=rows)
        _code, summary = run_json(project, "--max-error-rate", "0.5")
    block = summary["models"][MODEL_ID]
    assert (block["passed"], block["failed"], block["errors"]) == (5, 2, 1)
    assert block["n"] == 7  # the error is not a trial
    assert block["pass_rate"] == pytest.approx(5 / 7)
    assert block["error_kinds"] == {"context_length": 1}
    assert block["scorers"]["equals"]["n"] == 7
    assert summary["errors"] == 1
    assert summary["error_rate"] == pytest.approx(1 / 8)
    error_row = next(r for r in result_rows(project.store) if r["status"] == "error")
    assert error_row["score"] is None
    assert error_row["case_id"] == "c005"


# --- the JSON summary ------------------------------------------------------------------------


def test_json_summary_shape(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=4)
        code, summary = run_json(project)
    assert code == 0
    assert set(summary) >= {
        "run_id", "status", "results", "planned", "errors", "error_rate", "models",
        "thresholds", "thresholds_ok",
    }  # fmt: skip
    assert summary["results"] == summary["planned"] == 4
    block = summary["models"][MODEL_ID]
    assert set(block) >= {
        "n", "passed", "failed", "errors", "pass_rate", "ci_low", "ci_high", "results",
        "cost_usd", "cost_complete", "latency_p50_ms", "latency_p95_ms", "input_tokens",
        "output_tokens", "cached", "error_kinds", "scorers",
    }  # fmt: skip
    assert block["cost_usd"] is None  # fake-model is not in the cost map: unknown, not $0
    assert block["input_tokens"] > 0 and block["output_tokens"] > 0
    assert 0 <= block["ci_low"] <= block["pass_rate"] <= block["ci_high"] <= 1
    assert set(block["scorers"]["equals"]) >= {"n", "pass_rate", "mean_score", "errors"}
    (run,) = run_records(project.store)
    assert run["id"] == summary["run_id"]
    assert run["status"] == "completed"


def test_price_override_in_the_suite_gives_a_cost(tmp_path: Path) -> None:
    with threaded_server() as server:
        price = {"input_per_million": 1.0, "output_per_million": 2.0}
        project = make_project(tmp_path, server.url, n=3, model={"price": price})
        _, summary = run_json(project)
    block = summary["models"][MODEL_ID]
    expected = (block["input_tokens"] * 1.0 + block["output_tokens"] * 2.0) / 1e6
    assert block["cost_usd"] == pytest.approx(expected)
    assert block["cost_complete"] is True


# --- selection -------------------------------------------------------------------------------


def case_ids(project: Any, run_id: str) -> list[str]:
    return sorted({r["case_id"] for r in result_rows(project.store, run_id)})


def test_repeat_runs_each_case_k_times(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=3)
        _, summary = run_json(project, "--repeat", "3")
        assert server.stats.total == 9
    rows = result_rows(project.store, summary["run_id"])
    assert sorted((r["case_id"], r["epoch"]) for r in rows) == [
        (f"c{i:03d}", e) for i in range(3) for e in range(3)
    ]
    # Each epoch is its own request (the cache key holds the epoch).
    assert summary["results"] == summary["planned"] == 9


def test_limit_takes_the_first_cases(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=10)
        _, summary = run_json(project, "--limit", "3")
    assert case_ids(project, summary["run_id"]) == ["c000", "c001", "c002"]


def test_sample_is_seeded_and_deterministic(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=30)
        _, first = run_json(project, "--sample", "5", "--seed", "7")
        _, second = run_json(project, "--sample", "5", "--seed", "7")
        _, other = run_json(project, "--sample", "5", "--seed", "8")
    ids = case_ids(project, first["run_id"])
    assert len(ids) == 5
    assert ids == case_ids(project, second["run_id"])
    assert ids != case_ids(project, other["run_id"])


def test_filter_by_tag(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=6)
        _, summary = run_json(project, "--filter", "tag=odd")
    assert case_ids(project, summary["run_id"]) == ["c001", "c003", "c005"]


def test_filter_matching_nothing_is_a_config_error(tmp_path: Path) -> None:
    project = make_project(tmp_path, "http://127.0.0.1:9/v1", n=6)
    result = invoke(project, project.run_args("--filter", "tag=nope"))
    assert result.exit_code == 2
    assert "no cases selected" in result.stderr
    assert not project.store.exists()


# --- models ----------------------------------------------------------------------------------


def test_model_option_selects_a_configured_model(tmp_path: Path) -> None:
    with threaded_server() as server:
        models = [
            model_entry(server.url),
            model_entry(server.url, id="openai/fake-second", name="second"),
        ]
        project = make_project(tmp_path, None, n=3, models=models)
        _, both = run_json(project)
        assert {r.body["model"] for r in server.requests} == {"fake-model", "fake-second"}
        server.reset_stats()
        _, only = run_json(project, "--model", "second", "--cache", "off")
        assert {r.body["model"] for r in server.requests} == {"fake-second"}
    assert set(both["models"]) == {MODEL_ID, "second"}
    assert set(only["models"]) == {"second"}


def test_model_option_adds_a_model_the_suite_does_not_name(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=2)
        env = {"OPENAI_API_BASE": server.url, "OPENAI_API_KEY": "sk-fake-test"}
        result = invoke(project, project.run_args("--json", "--model", "openai/brand-new"), env)
        assert result.exit_code == 0, result.output
        assert {r.body["model"] for r in server.requests} == {"brand-new"}
    assert set(json.loads(result.stdout)["models"]) == {"openai/brand-new"}


# --- targets ---------------------------------------------------------------------------------


def test_replay_target_makes_no_model_call(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "output": f"logged {i}", "expected": f"logged {i}"} for i in range(4)]
    rows[2]["output"] = "something else"
    project = make_project(
        tmp_path, None, rows=rows, models=[], target="replay", prompt=None,
        thresholds={"equals": 0.5},
    )  # fmt: skip
    del project.suite_data["prompt"]
    project.write()
    code, summary = run_json(project)
    assert code == 0, summary
    block = summary["models"]["-"]
    assert (block["passed"], block["failed"]) == (3, 1)
    rows_out = {r["case_id"]: r for r in result_rows(project.store)}
    assert rows_out["r2"]["output"] == "something else"
    assert all(r["input_tokens"] is None for r in rows_out.values())


def test_python_target_calls_go_through_the_provider_layer(tmp_path: Path) -> None:
    module = f"usertarget_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "def answer(case, llm):\n"
        "    text = llm.chat([{'role': 'user', 'content': 'from user code\\nREPLY: ' + "
        "case['reply']}], temperature=0)\n"
        "    return text.upper()\n",
        encoding="utf-8",
    )
    rows = [{"id": f"p{i}", "reply": f"out {i}", "expected": f"OUT {i}"} for i in range(3)]
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=rows, target=f"python:{module}:answer")
        code, summary = run_json(project)
        bodies = [r.body for r in server.requests]
    assert code == 0, summary
    assert len(bodies) == 3
    assert all(b["messages"][0]["content"].startswith("from user code") for b in bodies)
    assert summary["models"][MODEL_ID]["passed"] == 3
    for row in result_rows(project.store):
        assert row["input_tokens"] == 6  # "from user code REPLY: out N"
        assert row["output_tokens"] == 2
        assert json.loads(row["detail"])["calls"][0]["model"]


def test_python_target_crash_is_an_error_not_a_fail(tmp_path: Path) -> None:
    module = f"usertarget_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "def answer(case):\n"
        "    if case['id'] == 'c001':\n"
        "        raise ValueError('boom')\n"
        "    return case['reply']\n",
        encoding="utf-8",
    )
    project = make_project(tmp_path, None, n=4, models=[], target=f"python:{module}:answer")
    del project.suite_data["prompt"]
    project.write()
    _code, summary = run_json(project, "--max-error-rate", "0.5")
    block = summary["models"]["-"]
    assert (block["passed"], block["failed"], block["errors"]) == (3, 0, 1)
    assert block["error_kinds"] == {"target_error": 1}


# --- runs, show, export, import --------------------------------------------------------------


@pytest.fixture
def finished_run(tmp_path: Path) -> tuple[Any, str]:
    with threaded_server() as server:
        rows = case_rows(5, fail={1})
        rows[3]["question"] = "CONTEXT_TOO_LONG"
        project = make_project(tmp_path, server.url, rows=rows)
        _, summary = run_json(project, "--max-error-rate", "0.5")
    return project, summary["run_id"]


def test_runs_and_show(finished_run: tuple[Any, str]) -> None:
    project, run_id = finished_run
    listed = invoke(project, ["runs", "--store", str(project.store)])
    assert listed.exit_code == 0
    assert run_id in listed.stdout
    shown = invoke(project, ["show", run_id[:12], "--store", str(project.store)])
    assert shown.exit_code == 0
    assert run_id in shown.stdout
    data = json.loads(
        invoke(project, ["show", "last", "--json", "--store", str(project.store)]).stdout
    )
    assert data["run"]["id"] == run_id
    assert len(data["results"]) == 5
    statuses = sorted(r["status"] for r in data["results"])
    assert statuses == ["error", "fail", "pass", "pass", "pass"]


def test_show_unknown_run_is_exit_2(finished_run: tuple[Any, str]) -> None:
    project, _ = finished_run
    result = invoke(project, ["show", "nope", "--store", str(project.store)])
    assert result.exit_code == 2
    assert "no run 'nope'" in result.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_export_import_round_trip(
    finished_run: tuple[Any, str], tmp_path: Path, suffix: str
) -> None:
    project, run_id = finished_run
    run_file = tmp_path / "out" / f"run{suffix}"
    exported = invoke(
        project, ["export", run_id, "-o", str(run_file), "--store", str(project.store)]
    )
    assert exported.exit_code == 0, exported.output
    other = tmp_path / "other" / "evals.db"
    imported = invoke(project, ["import", str(run_file), "--store", str(other)])
    assert imported.exit_code == 0, imported.output

    def show(store: Path) -> dict[str, Any]:
        result = invoke(project, ["show", run_id, "--json", "--store", str(store)])
        return json.loads(result.stdout)

    original, copy = show(project.store), show(other)
    assert copy["run"] == original["run"]
    assert copy["results"] == original["results"]
    # Importing twice is refused, and leaves the store as it was.
    before = store_snapshot(other)
    again = invoke(project, ["import", str(run_file), "--store", str(other)])
    assert again.exit_code == 2
    assert "already in" in again.stderr
    assert store_snapshot(other)[2] == before[2]


def test_import_of_a_broken_file_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"not": "a run file"}])
    result = invoke(tmp_path, ["import", str(bad), "--store", str(tmp_path / "s.db")])
    assert result.exit_code == 2
    assert "not an evals run file" in result.stderr
    assert not (tmp_path / "s.db").exists()


def test_a_cached_rerun_never_imports_litellm_or_unused_libraries(tmp_path: Path) -> None:
    # Importing litellm costs seconds; a cache hit never enters it (and the model check is
    # remembered from the first run), so a cached re-run does not pay for it.
    import subprocess
    import sys

    from helpers import subprocess_env

    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from harness.execute import execute\n"
        "from harness.runner import RunOptions\n"
        "root = Path(sys.argv[1])\n"
        "outcome = execute(root / sys.argv[2], project_dir=root, store_path=Path(sys.argv[3]),"
        " options=RunOptions(workers=1))\n"
        "heavy = [m for m in ('numpy', 'jsonschema', 'sacrebleu') if m in sys.modules]\n"
        "print(json.dumps({'litellm': 'litellm' in sys.modules, 'heavy': heavy,"
        " 'cached': outcome.summary['models'][sys.argv[4]]['cached']}))\n"
    )
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=case_rows(6))
        args = [str(project.root), str(project.suite.relative_to(project.root)),
                str(project.store), MODEL_ID]  # fmt: skip

        def run() -> dict[str, Any]:
            done = subprocess.run(
                [sys.executable, "-c", script, *args], env=subprocess_env(),
                capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
            return dict(json.loads(done.stdout.strip().splitlines()[-1]))

        assert run()["cached"] == 0
        # Nor numpy, JSON Schema or BLEU: this suite's scorers do not use them (~0.2 s).
        assert run() == {"litellm": False, "heavy": [], "cached": 6}
        assert server.stats.total == 6
