"""Tests for harness/lineage_diff.py: `evals diff RUN_A RUN_B` reports exactly the artifacts
that differ, grouped, with content diffs (unit tests on manifests, then real runs)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Project, invoke, make_project, run_json, threaded_server

from harness.lineage_diff import lineage_diff
from harness.registry import short_version


def base_manifest() -> dict[str, Any]:
    prompt = {
        "name": "qa",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of {{ country }}?"},
        ],
        "params": {"temperature": 0},
    }
    return {
        "schema": 1,
        "run_id": "run-a",
        "suite": {"name": "capitals", "path": "evalsets/capitals.yaml", "version": "aaaa0001"},
        "dataset": {
            "source": "/home/a/proj/evalsets/data/capitals.jsonl",
            "version": "1c1e982f8a51",
            "rows": 3,
            "selected": 3,
            "selection": {"limit": None, "sample": None, "seed": None, "filters": []},
        },
        "prompt": {
            "name": "qa",
            "version": short_version(prompt),
            "source": "prompts/qa.yaml",
            "content": prompt,
        },
        "artifacts": {"retrieval": [], "index": [], "rubric": []},
        "target": {"type": "chat", "output_field": "output"},
        "models": [
            {
                "id": "openai/gpt-4o-mini",
                "params": {"temperature": 0},
                "concurrency": 8,
                "timeout_s": 60.0,
            }
        ],
        "scorers": [{"type": "icontains", "weight": 1.0, "value": "{{ expected }}"}],
        "thresholds": {"icontains": 0.9},
        "repeat": 1,
        "seed": 0,
        "cache": "auto",
        "max_error_rate": 0.1,
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "environment": {
            "harness": "0.1.0",
            "python": "3.11.7",
            "platform": "Linux",
            "packages": {"litellm": "1.0", "openai": "2.0"},
        },
        "command": ["evals", "run", "evalsets/capitals.yaml"],
        "started_at": 1.0,
    }


def set_prompt_text(m: dict[str, Any]) -> None:
    m["prompt"]["content"]["messages"][0]["content"] = "Be very brief."
    m["prompt"]["version"] = short_version(m["prompt"]["content"])


def add_rubric(m: dict[str, Any]) -> None:
    m["artifacts"]["rubric"].append(
        {"name": "correct", "version": "bbbb0001", "content": {"name": "correct", "criteria": "x"}}
    )


CHANGES: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "prompt text": ("prompt", set_prompt_text),
    "model params": ("models/params", lambda m: m["models"][0]["params"].update(temperature=1)),
    "model id": ("models/params", lambda m: m["models"][0].update(id="openai/gpt-4o")),
    "model added": ("models/params", lambda m: m["models"].append({"id": "local/smollm2"})),
    "dataset": ("dataset", lambda m: m["dataset"].update(version="ffff00000000", rows=4)),
    "selection": ("selection", lambda m: m["dataset"]["selection"].update(limit=2)),
    "repeat": ("selection", lambda m: m.update(repeat=3)),
    "scorers": ("scorers", lambda m: m["scorers"][0].update(value="{{ capital }}")),
    "thresholds": ("thresholds", lambda m: m["thresholds"].update(icontains=0.8)),
    "code": ("code", lambda m: m["git"].update(commit="fedcba9876543210")),
    "dirty": ("code", lambda m: m["git"].update(dirty=True)),
    "packages": ("packages", lambda m: m["environment"]["packages"].update(litellm="1.1")),
    "harness": ("packages", lambda m: m["environment"].update(harness="0.2.0")),
    "target": ("target", lambda m: m.update(target={"type": "replay", "output_field": "o"})),
    "rubric": ("rubric", add_rubric),
    "suite name": ("suite", lambda m: m["suite"].update(name="capitals2", version="aaaa0002")),
    "unknown key": ("shard_info", lambda m: m.update(shard_info={"i": 1})),
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_one_change_reports_exactly_that_artifact(what: str) -> None:
    artifact, change = CHANGES[what]
    before, after = base_manifest(), base_manifest()
    change(after)
    changes = lineage_diff(before, after)
    assert [c.artifact for c in changes] == [artifact]
    assert changes[0].summary


def test_identical_and_run_control_differences_report_nothing() -> None:
    before, after = base_manifest(), base_manifest()
    after.update(
        run_id="run-b",
        started_at=2.0,
        command=["evals", "run", "x"],
        cache="off",
        max_error_rate=0.5,
    )
    after["suite"]["path"] = "elsewhere/capitals.yaml"
    after["dataset"]["source"] = "/ci/build/evalsets/data/capitals.jsonl"  # another machine
    after["models"][0].update(concurrency=64, timeout_s=5.0)  # pacing only
    assert lineage_diff(before, after) == []


def test_prompt_change_carries_a_unified_content_diff() -> None:
    before, after = base_manifest(), base_manifest()
    set_prompt_text(after)
    (change,) = lineage_diff(before, after)
    old, new = before["prompt"]["version"], after["prompt"]["version"]
    assert change.summary == f"qa@{old} -> qa@{new}"
    assert f"--- a/qa@{old}\n+++ b/qa@{new}\n" in change.diff
    assert "-  content: Be brief.\n+  content: Be very brief.\n" in change.diff


def test_model_params_summary_names_the_param() -> None:
    before, after = base_manifest(), base_manifest()
    after["models"][0]["params"]["temperature"] = 0.7
    (change,) = lineage_diff(before, after)
    assert change.summary == "openai/gpt-4o-mini params: temperature: 0 -> temperature: 0.7"
    assert "-    temperature: 0\n+    temperature: 0.7\n" in change.diff


def test_several_changes_come_in_a_fixed_order() -> None:
    before, after = base_manifest(), base_manifest()
    for what in ("packages", "prompt text", "thresholds", "dataset"):
        CHANGES[what][1](after)
    order = [c.artifact for c in lineage_diff(before, after)]
    assert order == ["dataset", "prompt", "thresholds", "packages"]


def suite_contents(**per_version: dict[str, Any]) -> Callable[[str, Any, Any], Any]:
    return lambda kind, name, version: per_version.get(version)


def test_a_suite_change_explained_by_other_groups_is_not_repeated() -> None:
    before, after = base_manifest(), base_manifest()
    after["suite"]["version"] = "aaaa0002"
    after["thresholds"]["icontains"] = 0.8
    old = {"name": "capitals", "thresholds": {"icontains": 0.9}, "concurrency": 8}
    new = {"name": "capitals", "thresholds": {"icontains": 0.8}, "concurrency": 8}
    changes = lineage_diff(before, after, suite_contents(aaaa0001=old, aaaa0002=new))
    assert [c.artifact for c in changes] == ["thresholds"]


def test_a_suite_only_setting_is_reported_with_its_diff() -> None:
    before, after = base_manifest(), base_manifest()
    after["suite"]["version"] = "aaaa0002"
    old = {"name": "capitals", "prompt": "qa", "concurrency": 8}
    new = {"name": "capitals", "prompt": "qa@production", "concurrency": 8}
    (change,) = lineage_diff(before, after, suite_contents(aaaa0001=old, aaaa0002=new))
    assert change.artifact == "suite"
    assert "-prompt: qa\n+prompt: qa@production\n" in change.diff


def test_a_suite_version_change_without_content_is_still_reported() -> None:
    before, after = base_manifest(), base_manifest()
    after["suite"]["version"] = "aaaa0002"
    (change,) = lineage_diff(before, after)
    assert (change.artifact, change.summary) == ("suite", "capitals@aaaa0001 -> capitals@aaaa0002")


# --- real runs -------------------------------------------------------------------------------


def two_runs(tmp_path: Path, edit: Callable[[Project], None]) -> tuple[Project, str, str]:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=3)
        code, first = run_json(project)
        assert code == 0, first
        edit(project)
        project.write()
        code, second = run_json(project)
        assert code == 0, second
    return project, first["run_id"], second["run_id"]


def diff_json(project: Project, *refs: str) -> dict[str, Any]:
    result = invoke(project, ["diff", *refs, "--json", "--store", str(project.store)])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_evals_diff_runs_differing_only_in_the_prompt(tmp_path: Path) -> None:
    def edit(project: Project) -> None:
        project.prompt_data["messages"][0]["content"] = "Reply exactly as told, please."

    project, run_a, run_b = two_runs(tmp_path, edit)
    data = diff_json(project, run_a, run_b)
    assert [c["artifact"] for c in data["changes"]] == ["prompt"]
    assert "+  content: Reply exactly as told, please.\n" in data["changes"][0]["diff"]

    text = invoke(project, ["diff", run_a, run_b, "--store", str(project.store)]).stdout
    assert "1 artifact differs" in text and "\nprompt: qa@" in text

    # The same answer from a run file on the other side (as a CI job would have it).
    exported = tmp_path / "a.jsonl"
    assert (
        invoke(
            project, ["export", run_a, "-o", str(exported), "--store", str(project.store)]
        ).exit_code
        == 0
    )
    data = diff_json(project, str(exported), run_b)
    assert [c["artifact"] for c in data["changes"]] == ["prompt"]


def test_evals_diff_runs_differing_only_in_model_params(tmp_path: Path) -> None:
    def edit(project: Project) -> None:
        project.suite_data["models"][0]["params"] = {"temperature": 0, "top_p": 0.5}

    project, run_a, run_b = two_runs(tmp_path, edit)
    data = diff_json(project, run_a, run_b)
    (change,) = data["changes"]
    assert change["artifact"] == "models/params"
    assert "top_p" in change["summary"]


def test_evals_diff_of_a_run_with_itself_is_empty(tmp_path: Path) -> None:
    project, run_a, _ = two_runs(tmp_path, lambda project: None)
    assert diff_json(project, run_a, run_a)["changes"] == []
    text = invoke(project, ["diff", run_a, run_a, "--store", str(project.store)]).stdout
    assert "no lineage differences" in text


def test_evals_diff_unknown_run_is_exit_2(tmp_path: Path) -> None:
    project = make_project(tmp_path, "http://127.0.0.1:9/v1")
    result = invoke(project, ["diff", "nope", "nada", "--store", str(project.store)])
    assert result.exit_code == 2
    assert "error:" in result.stderr
    assert not project.store.exists()


def test_manifest_has_a_place_for_other_artifacts(tmp_path: Path) -> None:
    project, run_a, _ = two_runs(tmp_path, lambda project: None)
    result = invoke(project, ["show", run_a, "--json", "--store", str(project.store)])
    manifest = json.loads(result.stdout)["run"]["manifest"]
    assert manifest["artifacts"] == {"retrieval": [], "index": [], "rubric": []}
    for key in (
        "suite",
        "dataset",
        "prompt",
        "scorers",
        "models",
        "git",
        "environment",
        "seed",
        "command",
        "started_at",
    ):
        assert key in manifest
    assert copy.deepcopy(manifest["prompt"]["content"]) == project.prompt_data
