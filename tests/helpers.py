"""Shared helpers for engine tests: temp projects (suite, prompt, dataset files), CLI runs,
fake servers and store snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner, Result

from harness.cli import app
from harness.fakeserver import FakeServer, ThreadedFakeServer

KEY_ENV = "EVALS_TEST_FAKE_KEY"
FAKE_KEY = "sk-fake-test"
MODEL_ID = "openai/fake-model"
EVALS_BIN = Path(sys.executable).parent / "evals"

DEFAULT_PROMPT: dict[str, Any] = {
    "name": "qa",
    "messages": [
        {"role": "system", "content": "Reply exactly as told."},
        # The fake server answers with a line's text after REPLY:, so each case picks its answer.
        {"role": "user", "content": "Case {{ case_id }}: {{ question }}\nREPLY: {{ reply }}"},
    ],
    "params": {"temperature": 0, "max_tokens": 16},
}


def case_rows(n: int, *, fail: set[int] | None = None, prefix: str = "c") -> list[dict[str, Any]]:
    """`n` dataset rows; the fake server echoes `reply`, which equals `expected` except for
    the indexes in `fail`. Even cases are tagged `even`, odd ones `odd`."""
    fail = fail or set()
    rows = []
    for i in range(n):
        answer = f"answer {i}"
        rows.append(
            {
                "id": f"{prefix}{i:03d}",
                "question": f"question {i}?",
                "reply": answer,
                "expected": f"wrong {i}" if i in fail else answer,
                "tags": ["even" if i % 2 == 0 else "odd"],
            }
        )
    return rows


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def model_entry(api_base: str, **extra: Any) -> dict[str, Any]:
    """A suite `models:` entry for the fake server, with fast retries."""
    entry: dict[str, Any] = {
        "id": MODEL_ID,
        "api_base": api_base,
        "api_key_env": KEY_ENV,
        "timeout_s": 5.0,
        "max_attempts": 3,
        "backoff_s": 0.01,
    }
    entry.update(extra)
    return entry


@dataclass
class Project:
    """A temporary project: prompts/, evalsets/ (suite + data) and a store path."""

    root: Path
    suite: Path
    store: Path
    suite_data: dict[str, Any]
    prompt_data: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def prompt_path(self) -> Path:
        return self.root / "prompts" / f"{self.prompt_data['name']}.yaml"

    @property
    def dataset_path(self) -> Path:
        return self.suite.parent / "data" / "cases.jsonl"

    def write(self) -> Project:
        write_yaml(self.prompt_path, self.prompt_data)
        write_jsonl(self.dataset_path, self.rows)
        write_yaml(self.suite, self.suite_data)
        return self

    def run_args(self, *extra: str) -> list[str]:
        return ["run", str(self.suite.relative_to(self.root)), "--store", str(self.store), *extra]


def make_project(
    root: Path,
    api_base: str | None,
    *,
    rows: list[dict[str, Any]] | None = None,
    n: int = 6,
    prompt: dict[str, Any] | None = None,
    scorers: list[dict[str, Any]] | None = None,
    thresholds: dict[str, float] | None = None,
    model: dict[str, Any] | None = None,
    models: list[dict[str, Any]] | None = None,
    **suite_extra: Any,
) -> Project:
    """Write a project under `root` whose suite calls the fake server at `api_base`."""
    rows = case_rows(n) if rows is None else rows
    suite: dict[str, Any] = {
        "name": "enginetest",
        "dataset": "data/cases.jsonl",
        "prompt": "qa",
        "models": models if models is not None else [model_entry(api_base or "", **(model or {}))],
        "scorers": scorers or [{"type": "equals", "value": "{{ expected }}"}],
        "thresholds": {"equals": 0.5} if thresholds is None else thresholds,
    }
    suite.update(suite_extra)
    project = Project(
        root=root,
        suite=root / "evalsets" / "suite.yaml",
        store=root / "store" / "evals.db",
        suite_data=suite,
        prompt_data=json.loads(json.dumps(prompt or DEFAULT_PROMPT)),
        rows=rows,
    )
    return project.write()


def invoke(project: Project | Path, args: list[str], env: dict[str, str] | None = None) -> Result:
    """Run the CLI in-process, in the project directory, with the fake key set."""
    root = project.root if isinstance(project, Project) else project
    with contextlib.chdir(root):
        return CliRunner().invoke(
            app,
            args,
            env={KEY_ENV: FAKE_KEY, "COLUMNS": "200", **(env or {})},
            catch_exceptions=False,
        )


def run_json(project: Project, *extra: str) -> tuple[int, dict[str, Any]]:
    """`evals run --json`: (exit code, parsed summary)."""
    result = invoke(project, project.run_args("--json", *extra))
    try:
        data = json.loads(result.stdout) if result.stdout.strip() else {}
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not JSON: {result.stdout!r}\n{result.stderr}") from exc
    return result.exit_code, data


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env[KEY_ENV] = FAKE_KEY
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env["COLUMNS"] = "120"
    return env


def spawn(project: Project, args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """Start the real `evals` console script as a subprocess in the project directory."""
    return subprocess.Popen(
        [str(EVALS_BIN), *args],
        cwd=project.root,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def process_running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, waiting to be reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def threaded_server(**options: Any) -> Iterator[ThreadedFakeServer]:
    """A fresh fake server on a background thread (for sync tests that run the CLI)."""
    handle = FakeServer(**options).run_in_thread()
    try:
        yield handle
    finally:
        handle.stop()


# --- the store, read from outside ------------------------------------------------------------


def connect_ro(path: Path, *, immutable: bool = False) -> sqlite3.Connection:
    """A read-only connection; `immutable` also skips locks and -wal/-shm files, so reading a
    closed store leaves its directory exactly as it was."""
    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    return sqlite3.connect(f"file:{path}?{flags}", uri=True, timeout=30.0)


def table_counts(path: Path) -> dict[str, int]:
    with contextlib.closing(connect_ro(path, immutable=True)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {name: conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0] for name in names}


def store_snapshot(path: Path) -> tuple[bool, str | None, dict[str, int] | None]:
    """(exists, sha256 of its bytes, row count per table) of a store file."""
    if not path.exists():
        return False, None, None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        counts: dict[str, int] | None = table_counts(path)
    except sqlite3.DatabaseError:
        counts = None
    return True, digest, counts


def result_rows(path: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Result rows of a run (or of every run) as dicts."""
    with contextlib.closing(connect_ro(path)) as conn:
        conn.row_factory = sqlite3.Row
        query = "SELECT * FROM results"
        args: tuple[Any, ...] = ()
        if run_id is not None:
            query += " WHERE run_id = ?"
            args = (run_id,)
        return [dict(r) for r in conn.execute(query + " ORDER BY case_id, model, epoch", args)]


def run_records(path: Path) -> list[dict[str, Any]]:
    with contextlib.closing(connect_ro(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY created_at")]


class LoopTicker:
    """Counts the event loop's 10 ms ticks from now until `stop`: a loop blocked by a call
    ticks at most once meanwhile, a free one about every 10 ms."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1

    def stop(self) -> None:
        self._task.cancel()


def wait_for_requests(
    server: ThreadedFakeServer, count: int, proc: subprocess.Popen[str], timeout: float = 60.0
) -> None:
    """Wait until the fake server has seen `count` requests from the `evals` process `proc`."""
    deadline = time.monotonic() + timeout
    while server.stats.total < count:
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"evals exited early ({proc.returncode}): {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for requests")
        time.sleep(0.005)
