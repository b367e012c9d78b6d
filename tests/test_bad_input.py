"""Bad input to `evals run` (harness/config.py, suite.py, datasets.py, model_checks.py,
store.py, userfuncs.py): one test per case, each asserting exit code 2, one clear line naming
the file (line, field) and a store left exactly as it was (not even created when absent)."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DEFAULT_PROMPT,
    Project,
    case_rows,
    invoke,
    make_project,
    store_snapshot,
    write_jsonl,
    write_yaml,
)

from harness.store import Store

SUITE = "evalsets/suite.yaml"
UNUSED_SERVER = "http://127.0.0.1:9/v1"  # nothing listens: no test here may reach a model


def seed_store(path: Path) -> None:
    """A store holding one run, as a previous `evals run` would leave it."""
    with Store.open(path) as store:
        store.create_run("20200101-000000-aaaaaa", "enginetest", {"schema": 1})
        store.update_run("20200101-000000-aaaaaa", status="completed", finished=True)


def assert_refused(
    project: Project,
    pattern: str,
    *,
    where: str | None = SUITE,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> str:
    """Run the suite (with `args`, in `env`) twice (no store; then an existing store): exit 2,
    one line matching `pattern` (a regex) that starts with `where`, nothing written. Returns
    the line."""
    result = invoke(project, project.run_args(*args), env=env)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    if where is not None:
        assert line.removeprefix("error: ").startswith(where), line
    assert re.search(pattern, line), line
    assert not project.store.exists()
    assert not project.store.parent.exists()

    seed_store(project.store)
    before = store_snapshot(project.store)
    again = invoke(project, project.run_args(*args), env=env)
    assert again.exit_code == 2
    assert again.stderr.strip() == result.stderr.strip()
    assert store_snapshot(project.store) == before
    assert sorted(p.name for p in project.store.parent.iterdir()) == ["evals.db"]
    return line


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path, UNUSED_SERVER, n=4)


def edit_suite(project: Project, edit: Callable[[dict[str, Any]], None]) -> Project:
    edit(project.suite_data)
    return project.write()


def test_invalid_yaml(project: Project) -> None:
    project.suite.write_text("name: x\ndataset: [unclosed\nscorers: []\n", encoding="utf-8")
    line = assert_refused(project, r"invalid YAML")
    assert re.match(rf"error: {SUITE}:\d+: ", line)


def test_duplicate_yaml_key(project: Project) -> None:
    text = project.suite.read_text(encoding="utf-8") + "name: again\n"
    project.suite.write_text(text, encoding="utf-8")
    assert_refused(project, r"duplicate key 'name' \(first at line 1\)")


def test_unknown_key_is_a_typo_not_ignored(project: Project) -> None:
    edit_suite(project, lambda s: s.update(treshold={"equals": 0.5}))
    line = assert_refused(project, r"unknown key 'treshold' \(did you mean 'thresholds'\?\)")
    assert re.match(rf"error: {SUITE}:\d+: treshold: ", line)


def test_unknown_key_inside_a_model(project: Project) -> None:
    edit_suite(project, lambda s: s["models"][0].update(api_bse="http://x"))
    assert_refused(
        project, r"models\[0\]\.api_bse: unknown key 'api_bse' \(did you mean 'api_base'\?\)"
    )


def test_unknown_scorer_type(project: Project) -> None:
    edit_suite(project, lambda s: s["scorers"].append({"type": "equal", "value": "x"}))
    line = assert_refused(project, r"unknown scorer type 'equal' \(did you mean 'equals'\?\)")
    assert re.match(rf"error: {SUITE}:\d+: scorers\[1\]\.type: ", line)


def test_invalid_regex(project: Project) -> None:
    edit_suite(project, lambda s: s["scorers"].append({"type": "regex", "pattern": "(open"}))
    assert_refused(project, r"scorers\[1\]\.pattern: invalid regular expression")


def test_threshold_for_an_unknown_scorer(project: Project) -> None:
    edit_suite(project, lambda s: s.update(thresholds={"equalz": 0.5}))
    assert_refused(project, r"thresholds\.equalz: threshold for unknown scorer 'equalz'")


def test_missing_dataset_file(project: Project) -> None:
    edit_suite(project, lambda s: s.update(dataset="data/nope.jsonl"))
    assert_refused(project, r"dataset\.path: dataset file not found: data/nope\.jsonl")


def test_missing_dataset_column(project: Project) -> None:
    edit_suite(
        project, lambda s: s.update(dataset={"path": "data/cases.jsonl", "expected": "answer"})
    )
    line = assert_refused(
        project, r"column 'answer' \(dataset\.expected\) missing in row 1", where=None
    )
    assert "cases.jsonl:1:" in line


def test_invalid_dataset_line(project: Project) -> None:
    text = project.dataset_path.read_text(encoding="utf-8") + "{not json\n"
    project.dataset_path.write_text(text, encoding="utf-8")
    line = assert_refused(project, r"cases\.jsonl:5", where=None)
    assert "JSON" in line


def test_duplicate_case_ids(project: Project) -> None:
    rows = case_rows(3)
    rows[2]["id"] = rows[0]["id"]
    write_jsonl(project.dataset_path, rows)
    line = assert_refused(project, r"duplicate case id 'c000' at rows 1 and 3", where=None)
    assert "cases.jsonl:3:" in line


def test_template_variable_missing_from_a_case(project: Project) -> None:
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["messages"][1]["content"] += " {{ country }}"
    write_yaml(project.prompt_path, prompt)
    line = assert_refused(project, r"template variable missing: 'country' is undefined", where=None)
    assert "case 'c000'" in line


def test_only_a_runs_worker_process_skips_rendering_every_case(project: Project) -> None:
    from harness.errors import ConfigError
    from harness.suite import load_suite

    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["messages"][1]["content"] += " {{ country }}"
    write_yaml(project.prompt_path, prompt)
    with pytest.raises(ConfigError, match="'country' is undefined"):
        load_suite(project.suite, project_dir=project.root)
    # A worker process loads a suite its parent has validated: no second pass over the cases.
    suite = load_suite(project.suite, project_dir=project.root, check_cases=False)
    assert len(suite.cases) == len(project.rows)


def test_template_syntax_error_in_a_prompt(project: Project) -> None:
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["messages"][1]["content"] = "{{ question "
    write_yaml(project.prompt_path, prompt)
    assert_refused(
        project, r"messages\[1\]\.content: template syntax error", where="prompts/qa.yaml:"
    )


def test_missing_prompt_file(project: Project) -> None:
    edit_suite(project, lambda s: s.update(prompt="nosuchprompt"))
    assert_refused(project, r"prompt: prompt 'nosuchprompt' not found")


def test_unknown_model_name(project: Project) -> None:
    edit_suite(project, lambda s: s["models"][0].update(id="nosuchprovider/xyz"))
    line = assert_refused(project, r"unknown model 'nosuchprovider/xyz'")
    assert re.match(rf"error: {SUITE}:\d+: models\[0\]: ", line)


@pytest.mark.parametrize(
    ("args", "env", "where"),
    [
        (["--otlp-endpoint", "notaurl"], None, "--otlp-endpoint: 'notaurl'"),
        (["--otlp-endpoint", "ftp://host:4318"], None, "--otlp-endpoint: 'ftp://host:4318'"),
        ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT: "),
    ],
)
def test_an_otlp_endpoint_that_is_not_an_http_url(
    project: Project, args: list[str], env: dict[str, str] | None, where: str
) -> None:
    # The exporter would only log each failed export, the run going on without its traces.
    assert_refused(project, r"is not an http:// or https:// URL", where=where, args=args, env=env)


def test_api_key_env_not_set(project: Project) -> None:
    edit_suite(project, lambda s: s["models"][0].update(api_key_env="EVALS_TEST_UNSET_VAR"))
    assert "EVALS_TEST_UNSET_VAR" not in os.environ
    assert_refused(project, r"environment variable EVALS_TEST_UNSET_VAR .* is not set")


def test_literal_api_key_in_the_suite(project: Project) -> None:
    edit_suite(project, lambda s: s["models"][0].update(api_key="sk-short"))
    assert_refused(project, r"models\[0\]: literal API keys are not allowed in files")


def test_api_key_looking_value_anywhere_in_the_suite(project: Project) -> None:
    key = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2"
    edit_suite(project, lambda s: s["models"][0].update(litellm={"extra_body": {"x": key}}))
    line = assert_refused(project, r"looks like a literal API key")
    assert key not in line


def test_api_key_pasted_into_a_prompt_message(project: Project) -> None:
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    key = "sk-proj-" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2"
    prompt["messages"][0]["content"] = f"Use key {key} to answer."
    write_yaml(project.prompt_path, prompt)
    line = assert_refused(
        project,
        r"messages\[0\]\.content: this looks like a literal API key",
        where="prompts/qa.yaml:4",
    )
    assert key not in line


def test_corrupt_store(project: Project) -> None:
    project.store.parent.mkdir(parents=True)
    project.store.write_bytes(os.urandom(4096))
    before = project.store.read_bytes()
    result = invoke(project, project.run_args())
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "is not a readable SQLite database" in line
    assert f"mv {project.store} {project.store}.bad" in line  # how to fix it
    assert "--store" in line
    assert project.store.read_bytes() == before
    assert sorted(p.name for p in project.store.parent.iterdir()) == ["evals.db"]


def test_store_from_a_newer_harness(project: Project) -> None:
    seed_store(project.store)
    import sqlite3

    with sqlite3.connect(project.store) as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = store_snapshot(project.store)
    result = invoke(project, project.run_args())
    assert result.exit_code == 2
    assert "schema version 999, newer than this harness understands" in result.stderr
    assert "upgrade evals-harness" in result.stderr
    assert store_snapshot(project.store) == before


def test_python_target_outside_the_project(project: Project) -> None:
    edit_suite(project, lambda s: s.update(target="python:json:dumps"))
    assert_refused(project, r"target\.function: module 'json' resolves to .*outside the project")


@pytest.mark.parametrize("ref", ["os:system", "builtins:exec", "posixpath:join"])
def test_python_target_from_a_builtin_or_frozen_module(project: Project, ref: str) -> None:
    # These modules have no file; run from the project directory they must still be refused.
    edit_suite(project, lambda s: s.update(target=f"python:{ref}"))
    assert_refused(project, r"target\.function: module '\w+' resolves to .*outside the project")


def test_python_scorer_outside_the_project(project: Project) -> None:
    edit_suite(
        project, lambda s: s["scorers"].append({"type": "python", "function": "os.path:join"})
    )
    assert_refused(project, r"scorers\[1\]\.function: module 'os\.path' resolves to .*outside")


def test_python_module_missing(project: Project) -> None:
    edit_suite(project, lambda s: s.update(target="python:not_a_module_here:f"))
    assert_refused(project, r"module 'not_a_module_here' not found")


def test_resume_of_an_unknown_run(project: Project) -> None:
    seed_store(project.store)
    before = store_snapshot(project.store)
    result = invoke(project, ["run", "--resume", "nosuchrun", "--store", str(project.store)])
    assert result.exit_code == 2
    assert "no run 'nosuchrun'" in result.stderr
    assert store_snapshot(project.store) == before


def test_resume_without_a_store(project: Project) -> None:
    result = invoke(project, ["run", "--resume", "last", "--store", str(project.store)])
    assert result.exit_code == 2
    assert "no run store at" in result.stderr
    assert not project.store.exists()
