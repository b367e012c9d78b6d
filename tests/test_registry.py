"""Tests for harness/registry.py and harness/artifacts.py: content-addressed versions, labels
with history (promote, rollback), references, and the suite-facing prompt resolver."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import artifacts, registry
from harness.errors import ConfigError, StoreError
from harness.store import SCHEMA_VERSION, Store

PROMPT_YAML = """\
name: qa
description: Capitals, one word.
messages:
  - role: system
    content: Answer with the city name only.
  - role: user
    content: "What is the capital of {{ country }}?"
params: {temperature: 0, max_tokens: 32}
"""

# The same content, written differently: key order, comments, quoting, block styles, spacing.
PROMPT_YAML_REFORMATTED = """\
# a comment that changes nothing
params:
  max_tokens: 32
  temperature: 0
messages:
- content: 'Answer with the city name only.'
  role: system   # trailing comment
- {role: user, content: 'What is the capital of {{ country }}?'}
name: "qa"
description: A different description is not behaviour.


""".replace("max_tokens: 32", "max_tokens: 32      ")  # trailing whitespace

# Golden value: a version id must not depend on the machine, the process or the hash seed.
PROMPT_VERSION = "dc51bb62"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def version_of(tmp_path: Path, text: str) -> str:
    write(tmp_path / "prompts" / "qa.yaml", text)
    return artifacts.working_copy("prompt", "qa", tmp_path).version


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store.open(tmp_path / "store" / "evals.db") as db:
        yield db


# --- versions --------------------------------------------------------------------------------


def test_version_ignores_yaml_formatting(tmp_path: Path) -> None:
    assert version_of(tmp_path, PROMPT_YAML) == PROMPT_VERSION
    assert version_of(tmp_path, PROMPT_YAML_REFORMATTED) == PROMPT_VERSION


def test_version_is_stable_across_processes(tmp_path: Path) -> None:
    path = write(tmp_path / "prompts" / "qa.yaml", PROMPT_YAML)
    code = (
        "import sys; from pathlib import Path; from harness.prompts import prompt_from_file; "
        "print(prompt_from_file(Path(sys.argv[1])).version)"
    )
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True,
            check=True, env={"PYTHONHASHSEED": seed, "PATH": ""},
        )  # fmt: skip
        assert done.stdout.strip() == PROMPT_VERSION


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Answer with the city name only.", "Answer with the city name."),  # message text
        (
            "content: Answer with the city name only.",
            "content: 'Answer with the city name only. '",
        ),  # significant whitespace
        ("- role: system", "- role: developer"),  # role
        ("temperature: 0,", "temperature: 0.2,"),  # a param value
        ("max_tokens: 32}", "max_tokens: 32, top_p: 0.9}"),  # a param added
        ("params: {", "tools: [{type: function, function: {name: f}}]\nparams: {"),  # tools
        ("params: {", "response_format: {type: json_object}\nparams: {"),
        ("name: qa", "name: qa2"),
    ],
)
def test_version_changes_on_any_semantic_change(tmp_path: Path, old: str, new: str) -> None:
    assert old in PROMPT_YAML
    changed = PROMPT_YAML.replace(old, new)
    write(tmp_path / "prompts" / "qa2.yaml", changed)
    assert artifacts.working_copy("prompt", "qa2", tmp_path).version != PROMPT_VERSION


def test_tool_definitions_are_part_of_the_version(tmp_path: Path) -> None:
    base = PROMPT_YAML + "tools: [{type: function, function: {name: lookup}}]\n"
    other = PROMPT_YAML + "tools: [{type: function, function: {name: search}}]\n"
    assert version_of(tmp_path, base) != version_of(tmp_path, other)


def test_record_version_is_idempotent_and_keeps_first_seen(store: Store) -> None:
    content = {"name": "x", "criteria": "says the capital"}
    first, new = registry.record_version(store, "rubric", "x", content, author="a")
    again, new_again = registry.record_version(store, "rubric", "x", content, author="b")
    assert (new, new_again) == (True, False)
    assert again == first and again.author == "a"
    assert first.version == registry.short_version(content)
    assert first.hash.startswith(first.version) and len(first.hash) == 64


def test_record_version_refuses_different_content_under_one_version(store: Store) -> None:
    registry.record_version(store, "index", "docs", {"a": 1}, "deadbeef")
    with pytest.raises(StoreError, match="different content"):
        registry.record_version(store, "index", "docs", {"a": 2}, "deadbeef")


def test_unknown_kind_is_a_config_error(store: Store) -> None:
    with pytest.raises(ConfigError, match="unknown artifact kind"):
        registry.record_version(store, "model", "x", {})


def test_versions_are_immutable_in_the_store(store: Store) -> None:
    registry.record_version(store, "prompt", "qa", {"name": "qa"})
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        store.conn.execute("UPDATE versions SET content = '{}'")


def test_schema_is_migrated_append_only(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as db:
        assert db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master")}
    assert {"versions", "labels", "label_history", "run_versions", "releases"} <= tables


# --- labels ----------------------------------------------------------------------------------


def three_versions(store: Store) -> list[str]:
    return [registry.record_version(store, "prompt", "qa", {"n": n})[0].version for n in range(3)]


def test_promote_rollback_history_round_trip(store: Store) -> None:
    v0, v1, v2 = three_versions(store)
    for version in (v0, v1, v2):
        _, move = registry.promote(store, "prompt", "qa", version, "production", author="ann")
        assert move is not None and move.to_version == version
    assert registry.labels_of(store, "prompt", "qa") == {"production": v2}

    back = registry.rollback(store, "prompt", "qa", "production", author="bob")
    assert (back.from_version, back.to_version) == (v2, v1)
    back = registry.rollback(store, "prompt", "qa", "production", author="bob")  # twice
    assert (back.from_version, back.to_version) == (v1, v0)
    assert registry.labels_of(store, "prompt", "qa") == {"production": v0}
    with pytest.raises(ConfigError, match="no earlier version"):
        registry.rollback(store, "prompt", "qa", "production", author="bob")

    moves = registry.label_history(store, "prompt", "qa")
    assert [(m.action, m.from_version, m.to_version, m.author) for m in moves] == [
        ("promote", None, v0, "ann"),
        ("promote", v0, v1, "ann"),
        ("promote", v1, v2, "ann"),
        ("rollback", v2, v1, "bob"),
        ("rollback", v1, v0, "bob"),
    ]
    assert all(m.at > 0 for m in moves)


def test_rollback_after_a_new_promote_undoes_only_that_promote(store: Store) -> None:
    v0, v1, v2 = three_versions(store)
    registry.promote(store, "prompt", "qa", v0, "production", author=None)
    registry.promote(store, "prompt", "qa", v1, "production", author=None)
    registry.rollback(store, "prompt", "qa", "production", author=None)  # -> v0
    registry.promote(store, "prompt", "qa", v2, "production", author=None)  # v0 -> v2
    assert registry.rollback(store, "prompt", "qa", "production", author=None).to_version == v0


def test_labels_move_independently(store: Store) -> None:
    v0, v1, _ = three_versions(store)
    registry.promote(store, "prompt", "qa", v0, "production", author=None)
    registry.promote(store, "prompt", "qa", v1, "staging", author=None)
    registry.promote(store, "prompt", "qa", v1, "production", author=None)
    registry.rollback(store, "prompt", "qa", "production", author=None)
    assert registry.labels_of(store, "prompt", "qa") == {"production": v0, "staging": v1}
    with pytest.raises(ConfigError, match="no earlier version"):
        registry.rollback(store, "prompt", "qa", "staging", author=None)


def test_promote_to_the_current_version_is_a_no_op(store: Store) -> None:
    v0, _, _ = three_versions(store)
    registry.promote(store, "prompt", "qa", v0, "production", author=None)
    _, move = registry.promote(store, "prompt", "qa", v0, "production", author=None)
    assert move is None
    assert len(registry.label_history(store, "prompt", "qa")) == 1


def test_promote_by_prefix_or_label(store: Store) -> None:
    v0, v1, _ = three_versions(store)
    record, _ = registry.promote(store, "prompt", "qa", v0[:5], "staging", author=None)
    assert record.version == v0
    record, _ = registry.promote(store, "prompt", "qa", "staging", "production", author=None)
    assert registry.labels_of(store, "prompt", "qa")["production"] == v0
    assert v1 != v0


@pytest.mark.parametrize("label", ["current", "deadbeef", "dc51", "1abc", "-x", "a b", ""])
def test_labels_cannot_look_like_versions(store: Store, label: str) -> None:
    three_versions(store)
    with pytest.raises(ConfigError, match="invalid label"):
        registry.promote(store, "prompt", "qa", "current", label, author=None)


def test_label_history_is_append_only(store: Store) -> None:
    v0, _, _ = three_versions(store)
    registry.promote(store, "prompt", "qa", v0, "production", author=None)
    for statement in ("UPDATE label_history SET author = 'x'", "DELETE FROM label_history"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            store.conn.execute(statement)


def test_rollback_of_an_unknown_label_lists_the_labels(store: Store) -> None:
    v0, _, _ = three_versions(store)
    registry.promote(store, "prompt", "qa", v0, "production", author=None)
    with pytest.raises(ConfigError, match=r"no label 'prod' \(labels: production -> "):
        registry.rollback(store, "prompt", "qa", "prod", author=None)


# --- resolving references --------------------------------------------------------------------


def test_resolve_unknown_selector_lists_labels_and_versions(store: Store) -> None:
    v0, v1, v2 = three_versions(store)
    registry.promote(store, "prompt", "qa", v1, "production", author=None)
    with pytest.raises(ConfigError) as info:
        registry.resolve(store, "prompt", "qa", "staging")
    message = str(info.value)
    assert f"production -> {v1}" in message
    assert all(v in message for v in (v0, v1, v2))


def test_resolve_nothing_registered_says_how_to_register(store: Store) -> None:
    with pytest.raises(
        ConfigError, match="none is registered; register one with `evals prompt register qa`"
    ):
        registry.resolve(store, "prompt", "qa", "production")


def test_ambiguous_prefix_is_an_error(store: Store) -> None:
    registry.record_version(store, "index", "docs", {"a": 1}, "abcd0001")
    registry.record_version(store, "index", "docs", {"a": 2}, "abcd0002")
    with pytest.raises(ConfigError, match="ambiguous"):
        registry.resolve(store, "index", "docs", "abcd")
    assert registry.resolve(store, "index", "docs", "abcd0002").content == {"a": 2}


def test_lookup_working_copy_and_registered(tmp_path: Path, store: Store) -> None:
    write(tmp_path / "prompts" / "qa.yaml", PROMPT_YAML)
    record, new = artifacts.register_working(store, "prompt", "qa", tmp_path)
    assert new and record.version == PROMPT_VERSION
    write(tmp_path / "prompts" / "qa.yaml", PROMPT_YAML.replace("only.", "only!"))
    working = artifacts.lookup(store, "prompt", "qa", tmp_path)
    pinned = artifacts.lookup(store, "prompt", f"qa@{PROMPT_VERSION}", tmp_path)
    assert working.version != PROMPT_VERSION and working.origin == "prompts/qa.yaml"
    assert pinned.version == PROMPT_VERSION and pinned.origin == "registry"
    assert artifacts.lookup(store, "prompt", "qa@current", tmp_path) == working


def test_register_by_path_uses_the_name_inside_the_file(tmp_path: Path, store: Store) -> None:
    write(tmp_path / "elsewhere" / "p.yaml", PROMPT_YAML)
    record, _ = artifacts.register_working(store, "prompt", "elsewhere/p.yaml", tmp_path)
    assert (record.name, record.version) == ("qa", PROMPT_VERSION)


def test_show_yaml_round_trips_to_the_same_version(tmp_path: Path) -> None:
    text = PROMPT_YAML.replace(
        "content: Answer with the city name only.",
        'content: "Answer with the city name only.\\nNever explain."',
    )
    write(tmp_path / "prompts" / "qa.yaml", text)
    found = artifacts.working_copy("prompt", "qa", tmp_path)
    shown = artifacts.content_yaml("prompt", found.content)
    assert shown.startswith("name: qa\nmessages:\n")
    assert "content: |-\n" in shown  # multi-line text reads as a block
    write(tmp_path / "prompts" / "qa.yaml", shown)
    assert artifacts.working_copy("prompt", "qa", tmp_path).version == found.version


def test_generic_kinds_version_their_yaml(tmp_path: Path, store: Store) -> None:
    write(
        tmp_path / "rubrics" / "correctness.yaml",
        "name: correctness\ndescription: x\ncriteria: same fact\nscale: pass-fail\n",
    )
    first = artifacts.working_copy("rubric", "correctness", tmp_path)
    write(
        tmp_path / "rubrics" / "correctness.yaml",
        "# edited\nscale: pass-fail\ncriteria: 'same fact'\nname: correctness\n",
    )
    assert artifacts.working_copy("rubric", "correctness", tmp_path).version == first.version
    write(tmp_path / "rubrics" / "correctness.yaml", "criteria: x\n")
    with pytest.raises(ConfigError, match="name: required field missing"):
        artifacts.working_copy("rubric", "correctness", tmp_path)


def test_missing_working_copy_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"prompts/nope.yaml: no working copy"):
        artifacts.working_copy("prompt", "nope", tmp_path)


# --- the resolver suites use -----------------------------------------------------------------


def test_resolver_without_a_store_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "no" / "evals.db"
    resolve = artifacts.prompt_resolver(path, tmp_path)
    with pytest.raises(ConfigError, match="no version registry"):
        resolve("qa", "production")
    assert not path.parent.exists()


def test_resolver_runs_registered_content_after_the_file_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "store" / "evals.db"
    write(tmp_path / "prompts" / "qa.yaml", PROMPT_YAML)
    with Store.open(path) as db:
        artifacts.register_working(db, "prompt", "qa", tmp_path)
        registry.promote(db, "prompt", "qa", PROMPT_VERSION, "production", author=None)
    (tmp_path / "prompts" / "qa.yaml").unlink()
    resolve = artifacts.prompt_resolver(path, tmp_path)
    for selector in ("production", PROMPT_VERSION, PROMPT_VERSION[:6]):
        prompt = resolve("qa", selector)
        assert prompt.version == PROMPT_VERSION
        assert prompt.config.messages[0].content == "Answer with the city name only."
        assert prompt.source == f"registry:qa@{selector}"
