"""`evals index build|list|show|diff` (harness/cli_index.py): output, lineage, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from harness import registry
from harness.cli import app
from harness.store import Store

CONFIG = """\
name: docs
corpus: ["../docs/*.md"]
chunking: {strategy: markdown, size: 64, overlap: 0}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALS_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.delenv("EVALS_HOME", raising=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "paris.md").write_text(
        "# Paris\n\nParis is the capital of France.\n\n# Rome\n\nRome is the capital of Italy.\n",
        encoding="utf-8",
    )
    (tmp_path / "docs" / "oslo.md").write_text("Oslo is the capital of Norway.", encoding="utf-8")
    (tmp_path / "retrieval").mkdir()
    (tmp_path / "retrieval" / "docs.yaml").write_text(CONFIG, encoding="utf-8")
    return tmp_path


def evals(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def index_versions(project: Path) -> list[str]:
    with Store.open(project / ".evals" / "evals.db", create=False) as store:
        return [r.version for r in registry.list_versions(store, "index", "docs")]


def test_build_prints_counts_records_lineage_and_reuses(project: Path) -> None:
    first = evals("index", "build", "retrieval/docs.yaml")
    assert first.exit_code == 0, first.output
    (version,) = index_versions(project)
    assert f"index docs@{version} built" in first.output
    for line in ("documents  2", "chunks     3", "embedded   3", "reused     0"):
        assert line in first.output
    with Store.open(project / ".evals" / "evals.db", create=False) as store:
        assert registry.list_versions(store, "retrieval", "docs")  # the config is recorded too
    again = evals("index", "build", "retrieval/docs.yaml")
    assert again.exit_code == 0 and f"index docs@{version} already built" in again.output

    (project / "docs" / "oslo.md").write_text("Oslo is the capital of Norway!", encoding="utf-8")
    changed = evals("index", "build", "retrieval/docs.yaml")
    assert changed.exit_code == 0, changed.output
    assert "embedded   1" in changed.output and "reused     2" in changed.output
    assert len(index_versions(project)) == 2


def test_list_show_and_diff(project: Path) -> None:
    assert evals("index", "build", "retrieval/docs.yaml").exit_code == 0
    (old,) = index_versions(project)
    (project / "docs" / "oslo.md").unlink()
    (project / "docs" / "bern.md").write_text("Bern is the capital of Switzerland.", "utf-8")
    (project / "docs" / "paris.md").write_text(
        "# Paris\n\nParis is the capital of France.\n\n# Rome\n\nRome: capital of Italy.\n",
        encoding="utf-8",
    )
    assert evals("index", "build", "retrieval/docs.yaml").exit_code == 0
    new = next(v for v in index_versions(project) if v != old)

    listed = evals("index", "list")
    assert listed.exit_code == 0 and old in listed.output and new in listed.output
    assert "64/0" in listed.output

    shown = evals("index", "show", "docs")  # the newest version
    assert shown.exit_code == 0, shown.output
    assert f"index docs@{new}" in shown.output and "bern.md" in shown.output
    assert "oslo.md" not in shown.output and "all-MiniLM-L6-v2" in shown.output
    assert f"index docs@{old}" in evals("index", "show", f"docs@{old[:5]}").output

    diff = evals("index", "diff", f"docs@{old}", f"docs@{new}")
    assert diff.exit_code == 0, diff.output
    assert "documents: 1 added, 1 removed, 1 changed" in diff.output
    assert "chunks: 1 added, 1 removed, 1 changed" in diff.output
    for line in ("+ bern.md", "- oslo.md", "~ paris.md", "+ bern.md#0", "~ paris.md#1"):
        assert line in diff.output

    (project / "retrieval" / "docs.yaml").write_text(
        CONFIG.replace("size: 64", "size: 4"), encoding="utf-8"
    )
    local = evals("index", "diff", f"docs@{new}", "retrieval/docs.yaml")
    assert local.exit_code == 0, local.output
    assert "as the files are now" in local.output and "chunking:" in local.output
    same = evals("index", "diff", f"docs@{new}", f"docs@{new}")
    assert same.exit_code == 0 and "no differences" in same.output


def test_list_without_a_store_says_how_to_start(project: Path) -> None:
    result = evals("index", "list")
    assert result.exit_code == 0 and "evals index build" in result.output


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("index", "build", "retrieval/nope.yaml"), ("retrieval/nope.yaml", "file not found")),
        (("index", "show", "docs"), ("no index versions of 'docs'", "evals index build")),
        (("index", "diff", "docs@abc", "retrieval/docs.yaml"), ("no index versions",)),
        (
            ("index", "build", "retrieval/docs.yaml", "--chroma-url", "ftp://x"),
            ("is not an http(s) URL",),
        ),
    ],
)
def test_errors_are_one_line_exit_2(
    project: Path, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    one_line_error(evals(*args), *fragments)


def test_bad_config_and_unknown_version_errors(project: Path) -> None:
    (project / "retrieval" / "bad.yaml").write_text(
        "name: bad\ncorpus: [../docs/*.md]\nchunking: {strategy: markdown, sise: 10}\n",
        encoding="utf-8",
    )
    one_line_error(
        evals("index", "build", "retrieval/bad.yaml"),
        "retrieval/bad.yaml:3: chunking.sise: unknown key 'sise'",
    )
    (project / "retrieval" / "empty.yaml").write_text(
        "name: e\ncorpus: [../none/*.md]\n", encoding="utf-8"
    )
    one_line_error(
        evals("index", "build", "retrieval/empty.yaml"), "corpus[0]", "matches no corpus files"
    )
    assert evals("index", "build", "retrieval/docs.yaml").exit_code == 0
    one_line_error(evals("index", "show", "docs@ffffffff"), "has no version or label 'ffffffff'")
