"""Tests for harness/cli_versions.py end to end: `evals prompt ...` (register, show, list,
promote, rollback, history, diff), suites pinned to @label / @version, `evals release`, and
lineage carried by run files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import yaml
from helpers import (
    Project,
    case_rows,
    invoke,
    make_project,
    run_json,
    store_snapshot,
    threaded_server,
)

from harness import registry
from harness.artifacts import content_yaml
from harness.runfile import import_run_file, read_run_file
from harness.store import Store


def evals(project: Project, *args: str) -> Any:
    return invoke(project, [*args, "--store", str(project.store)])


def registered(project: Project) -> str:
    result = evals(project, "prompt", "register", "qa")
    assert result.exit_code == 0, result.stderr
    return result.stderr.split("@")[1].split()[0]  # "prompt qa@<version> registered"


def edit_prompt(project: Project, text: str) -> None:
    project.prompt_data["messages"][0]["content"] = text
    project.write()


# --- the prompt commands ---------------------------------------------------------------------


def test_register_show_list(tmp_path: Path) -> None:
    project = make_project(tmp_path, "http://127.0.0.1:9/v1")
    assert "no prompt versions" in evals(project, "prompt", "list").stderr
    assert not project.store.exists()  # reading never creates the store

    version = registered(project)
    again = evals(project, "prompt", "register", "prompts/qa.yaml")
    assert f"qa@{version} already registered" in again.stderr

    shown = evals(project, "prompt", "show", f"qa@{version}")
    assert shown.exit_code == 0
    assert yaml.safe_load(shown.stdout) == project.prompt_data
    assert shown.stdout == content_yaml("prompt", project.prompt_data)
    as_json = evals(project, "prompt", "show", "qa", "--json")
    assert json.loads(as_json.stdout) == project.prompt_data

    listing = evals(project, "prompt", "list")
    assert version in listing.stdout and "*" in listing.stdout


def test_promote_rollback_history_and_diff(tmp_path: Path) -> None:
    project = make_project(tmp_path, "http://127.0.0.1:9/v1")
    v1 = registered(project)
    edit_prompt(project, "Second wording.")
    v2 = registered(project)
    edit_prompt(project, "Third wording.")

    assert evals(project, "prompt", "promote", "qa", v1[:5], "--label", "production").exit_code == 0
    assert evals(project, "prompt", "promote", "qa", v2, "--label", "production").exit_code == 0
    current = evals(project, "prompt", "promote", "qa", "current", "--label", "production")
    assert current.exit_code == 0, current.stderr
    v3 = current.stderr.split("-> ")[1].split()[0]
    assert len({v1, v2, v3}) == 3

    shown = evals(project, "prompt", "show", "qa@production")
    assert "Third wording." in shown.stdout

    first = evals(project, "prompt", "rollback", "qa", "--label", "production")
    second = evals(project, "prompt", "rollback", "qa", "--label", "production")
    assert f"{v3} -> {v2}" in first.stderr and f"{v2} -> {v1}" in second.stderr
    third = evals(project, "prompt", "rollback", "qa", "--label", "production")
    assert third.exit_code == 2
    assert third.stderr.count("\n") == 1 and "no earlier version" in third.stderr

    history = evals(project, "prompt", "history", "qa")
    rows = [line for line in history.stdout.splitlines() if "production" in line]
    assert len(rows) == 5
    assert [("rollback" in row) for row in rows] == [False, False, False, True, True]

    diff = evals(project, "prompt", "diff", f"qa@{v1}", "qa@production")
    assert diff.stdout == ""  # production is back at v1
    diff = evals(project, "prompt", "diff", "qa@production")  # against the working copy
    assert f"--- qa@{v1} (registry)\n+++ qa@{v3} (prompts/qa.yaml)\n" in diff.stdout
    assert "-  content: Reply exactly as told.\n+  content: Third wording.\n" in diff.stdout


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    project = make_project(tmp_path, "http://127.0.0.1:9/v1")
    missing = evals(project, "prompt", "promote", "qa", "abcd1234", "--label", "production")
    assert missing.exit_code == 2 and "no version registry" in missing.stderr
    assert not project.store.exists()

    version = registered(project)
    before = store_snapshot(project.store)
    for args in (
        ("prompt", "promote", "qa", "ffff0000", "--label", "production"),
        ("prompt", "promote", "qa", version, "--label", "deadbeef"),
        ("prompt", "show", "qa@staging"),
        ("prompt", "rollback", "qa", "--label", "production"),
        ("prompt", "show", "nope"),
    ):
        result = evals(project, *args)
        assert result.exit_code == 2, args
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, args
    assert store_snapshot(project.store) == before


# --- suites pinned to a label or a version ---------------------------------------------------


def manifest_of(project: Project, run_id: str) -> dict[str, Any]:
    with Store.open(project.store, create=False) as db:
        return db.get_run(run_id)["manifest"]  # type: ignore[no-any-return]


def sent_messages(project: Project, run_id: str) -> set[str]:
    with Store.open(project.store, create=False) as db:
        return {r.detail["messages"][-1]["content"] for r in db.results(run_id) if r.detail}


def test_pinned_label_and_version_run_registered_content(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=4)
        good = registered(project)
        assert (
            evals(project, "prompt", "promote", "qa", good, "--label", "production").exit_code == 0
        )
        # The working file now makes every case fail: the fake server replies "broken".
        project.prompt_data["messages"][1]["content"] = "{{ question }}\nREPLY: broken"
        project.write()
        code, _ = run_json(project)
        assert code == 1  # the working copy really is broken

        for ref in ("qa@production", f"qa@{good}", f"qa@{good[:6]}"):
            project.suite_data["prompt"] = ref
            project.write()
            code, summary = run_json(project)
            assert code == 0, (ref, summary)
            prompt = manifest_of(project, summary["run_id"])["prompt"]
            assert (prompt["version"], prompt["source"]) == (good, f"registry:{ref}")
            assert not any("broken" in m for m in sent_messages(project, summary["run_id"]))

        project.suite_data["prompt"] = f"qa@{good}"
        project.write()
        project.prompt_path.unlink()  # the registry alone still runs it
        code, summary = run_json(project)
        assert code == 0 and summary["status"] == "completed"


def test_unknown_label_is_a_config_error_naming_suite_line_and_field(tmp_path: Path) -> None:
    project = make_project(tmp_path, "http://127.0.0.1:9/v1", prompt=None)
    project.suite_data["prompt"] = "qa@staging"
    project.write()
    result = invoke(project, project.run_args())
    assert result.exit_code == 2
    assert result.stderr.startswith("error: evalsets/suite.yaml:3: prompt: cannot resolve")
    assert not project.store.exists()  # a pinned reference never creates the store

    version = registered(project)
    evals(project, "prompt", "promote", "qa", version, "--label", "production")
    before = store_snapshot(project.store)
    result = invoke(project, project.run_args())
    assert result.exit_code == 2
    assert (
        "evalsets/suite.yaml:3: prompt: prompt 'qa' has no version or label 'staging'"
        in result.stderr
    )
    assert f"labels: production -> {version}; versions: {version}" in result.stderr
    assert store_snapshot(project.store) == before


def test_a_run_records_the_versions_it_used(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=2)
        code, summary = run_json(project)
    assert code == 0
    with Store.open(project.store, create=False) as db:
        links = db.conn.execute(
            "SELECT kind, name, version, ref FROM run_versions WHERE run_id = ?",
            (summary["run_id"],),
        ).fetchall()
        manifest = db.get_run(summary["run_id"])["manifest"]
        kinds = {kind: (name, version, ref) for kind, name, version, ref in links}
        assert kinds["prompt"] == ("qa", manifest["prompt"]["version"], "qa")
        assert kinds["suite"] == ("enginetest", manifest["suite"]["version"], "evalsets/suite.yaml")
        assert kinds["dataset"][:2] == ("evalsets/data/cases.jsonl", manifest["dataset"]["version"])
        suite = registry.get_version(db, "suite", "enginetest", manifest["suite"]["version"])
        assert suite is not None and registry.short_version(suite.content) == suite.version


# --- lineage in run files --------------------------------------------------------------------


def test_run_files_carry_versions_and_labels(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=2)
        version = registered(project)
        evals(project, "prompt", "promote", "qa", version, "--label", "production")
        project.suite_data["prompt"] = "qa@production"
        project.write()
        code, summary = run_json(project)
    assert code == 0
    exported = tmp_path / "run.jsonl"
    assert evals(project, "export", summary["run_id"], "-o", str(exported)).exit_code == 0
    header, _ = read_run_file(exported)
    block = header["lineage"]
    assert block["schema"] == 1
    assert {(v["kind"], v["name"]) for v in block["versions"]} >= {
        ("prompt", "qa"),
        ("suite", "enginetest"),
    }
    assert block["labels"] == [
        {"kind": "prompt", "name": "qa", "label": "production", "version": version}
    ]

    with Store.open(tmp_path / "other" / "evals.db") as other:
        import_run_file(other, exported)
        assert registry.labels_of(other, "prompt", "qa") == {"production": version}
        record = registry.resolve(other, "prompt", "qa", "production")
        assert record.content == project.prompt_data
        (move,) = registry.label_history(other, "prompt", "qa")
        assert move.action == "import"


def test_import_never_moves_a_local_label(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=2)
        version = registered(project)
        evals(project, "prompt", "promote", "qa", version, "--label", "production")
        _, summary = run_json(project)
    exported = tmp_path / "run.jsonl"
    evals(project, "export", summary["run_id"], "-o", str(exported))
    with Store.open(tmp_path / "other" / "evals.db") as other:
        registry.record_version(other, "prompt", "qa", {"name": "qa", "local": True}, "0000aaaa")
        registry.promote(other, "prompt", "qa", "0000aaaa", "production", author=None)
        import_run_file(other, exported)
        assert registry.labels_of(other, "prompt", "qa") == {"production": "0000aaaa"}


# --- releases --------------------------------------------------------------------------------


def released_run(tmp_path: Path, fail: set[int] | None = None) -> tuple[Project, str]:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, rows=case_rows(4, fail=fail))
        _, summary = run_json(project)
    return project, summary["run_id"]


def test_release_round_trip(tmp_path: Path) -> None:
    project, run_id = released_run(tmp_path)
    result = evals(project, "release", "support-bot", "--run", run_id, "--note", "ship it")
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "releases" / "support-bot.yaml"
    record = yaml.safe_load(path.read_text())
    manifest = manifest_of(project, run_id)
    assert record["schema"] == 1 and record["release"] == "support-bot"
    assert record["note"] == "ship it" and record["forced"] is None
    (prompt,) = record["versions"]["prompt"]
    assert (prompt["version"], prompt["content"]) == (
        manifest["prompt"]["version"],
        project.prompt_data,
    )
    assert record["versions"]["rubric"] == [] and record["versions"]["retrieval"] == []
    assert record["models"] == [{"id": "openai/fake-model", "params": {}}]
    approved = record["approved_by"]
    assert approved["run"] == run_id and approved["thresholds_ok"] is True
    assert approved["pass_rates"]["openai/fake-model"]["pass_rate"] == 1.0

    shown = evals(project, "release", "show", "support-bot", "--json")
    assert json.loads(shown.stdout) == record
    text = evals(project, "release", "show", "support-bot").stdout
    assert run_id in text and prompt["version"] in text and "100.0%" in text
    assert "ship it" in text
    assert "support-bot" in evals(project, "release", "list").stdout

    # Another machine, without the store: the committed file answers.
    elsewhere = invoke(
        project, ["release", "show", "support-bot", "--json", "--store", str(tmp_path / "none.db")]
    )
    assert json.loads(elsewhere.stdout) == record


def test_release_refuses_failed_thresholds_unless_forced(tmp_path: Path) -> None:
    project, run_id = released_run(tmp_path, fail={0, 1, 2})
    before = store_snapshot(project.store)
    result = evals(project, "release", "bot", "--run", run_id)
    assert result.exit_code == 2
    assert "refusing to release bot: threshold equals" in result.stderr
    assert not (tmp_path / "releases").exists()
    assert store_snapshot(project.store) == before

    out = tmp_path / "out" / "bot.json"
    forced = evals(project, "release", "bot", "--run", run_id, "--force", "-o", str(out))
    assert forced.exit_code == 0, forced.stderr
    record = json.loads(out.read_text())
    assert record["forced"] and "threshold equals" in record["forced"][0]
    with sqlite3.connect(project.store) as conn:
        assert conn.execute("SELECT name, run_id FROM releases").fetchall() == [("bot", run_id)]


def test_release_from_a_run_file_and_unknown_release(tmp_path: Path) -> None:
    project, run_id = released_run(tmp_path)
    exported = tmp_path / "run.jsonl"
    evals(project, "export", run_id, "-o", str(exported))
    result = evals(project, "release", "web", "--run", str(exported))
    assert result.exit_code == 0, result.stderr
    missing = evals(project, "release", "show", "nope")
    assert missing.exit_code == 2 and "releases: web" in missing.stderr


def test_release_refuses_a_run_that_did_not_complete(tmp_path: Path) -> None:
    project, run_id = released_run(tmp_path)
    with sqlite3.connect(project.store) as conn:
        conn.execute("UPDATE runs SET status = 'interrupted' WHERE id = ?", (run_id,))
    result = evals(project, "release", "bot", "--run", run_id)
    assert result.exit_code == 2
    assert f"run {run_id} is interrupted, not completed" in result.stderr
    forced = evals(project, "release", "bot", "--run", run_id, "--force")
    assert forced.exit_code == 0 and "forced: run" in forced.stderr
