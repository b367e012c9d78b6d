"""Worker processes sharing one run: every item exactly once, limits split, stop and resume."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import workers
from tests.helpers import (
    KEY_ENV,
    case_rows,
    make_project,
    process_running,
    result_rows,
    run_json,
    spawn,
    threaded_server,
    wait_for_requests,
)


def test_chunks_are_small_enough_to_balance_the_tail() -> None:
    assert workers.chunk_size(10_000, 2) == 64
    assert workers.chunk_size(500, 2) == 15
    assert workers.chunk_size(3, 2) == 1


def test_auto_uses_every_core_only_for_big_remote_runs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    assert workers.auto_workers(10_000, local_model=False) == 3
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 8)
    assert workers.auto_workers(10_000, local_model=False) == 4
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 1)
    assert workers.auto_workers(10_000, local_model=False) == 1
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    assert workers.auto_workers(10_000, local_model=True) == 1
    assert workers.auto_workers(workers.AUTO_MIN_ITEMS - 1, local_model=False) == 1


ENV_TARGET = """
import asyncio, os, pathlib, time

async def answer(case):
    # Each call waits until a second process has called in this round too (at most 30 s
    # from the round's start): the parent must not finish every case while its worker is
    # still starting.
    here = pathlib.Path(__file__).parent
    round_file = here / "round"
    seen = here / ("pids-" + round_file.read_text())
    seen.mkdir(exist_ok=True)
    (seen / str(os.getpid())).touch()
    while len(list(seen.iterdir())) < 2:
        if time.time() > round_file.stat().st_mtime + 30:
            raise RuntimeError("no second process took work within 30 s")
        await asyncio.sleep(0.02)
    return os.environ.get("EVALS_TEST_MARK", "unset") + " " + str(os.getpid())
"""


def env_target_project(tmp_path: Path, n: int) -> Any:
    """A project whose target (ENV_TARGET) answers with `EVALS_TEST_MARK` and its pid."""
    module = f"envtarget_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(ENV_TARGET, encoding="utf-8")
    project = make_project(
        tmp_path,
        None,
        n=n,
        models=[],
        thresholds={},
        target=f"python:{module}:answer",
        concurrency=4,
    )
    del project.suite_data["prompt"]
    project.write()
    return project


def test_worker_processes_see_the_environment_the_run_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers are forked from a fork server, which keeps the environment it started with;
    # each run's workers must see the parent's environment as it is when that run starts
    # (an API key exported between two runs, say).
    project = env_target_project(tmp_path, n=120)
    for mark in ("first", "second"):
        monkeypatch.setenv("EVALS_TEST_MARK", mark)
        (tmp_path / "round").write_text(mark, encoding="utf-8")
        code, summary = run_json(project, "--workers", "2")
        assert code == 0 and summary["processes"] == 2, summary
        outputs = [row["output"] for row in result_rows(project.store, summary["run_id"])]
        assert len(outputs) == 120
        assert {output.split()[0] for output in outputs} == {mark}
        assert len({output.split()[1] for output in outputs}) == 2  # both processes took work


def test_every_process_of_a_run_sees_the_projects_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `evals` loads the project's `.env` as it starts; litellm's import would load it in the
    # worker processes only (their fork server's main module has no file), so a variable
    # set there reached the workers and not the `evals` process. One set in the environment
    # wins over the file, in every process.
    (tmp_path / ".env").write_text("EVALS_TEST_MARK=from-dotenv\n", encoding="utf-8")
    project = env_target_project(tmp_path, n=60)
    for mark in ("from-dotenv", "exported"):
        if mark == "exported":
            monkeypatch.setenv("EVALS_TEST_MARK", mark)
        else:
            monkeypatch.delenv("EVALS_TEST_MARK", raising=False)
        (tmp_path / "round").write_text(mark, encoding="utf-8")
        proc = spawn(project, project.run_args("--workers", "2", "--json"))
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        summary = json.loads(out)
        outputs = [row["output"] for row in result_rows(project.store, summary["run_id"])]
        assert len(outputs) == 60
        assert {output.split()[0] for output in outputs} == {mark}
        assert len({output.split()[1] for output in outputs}) == 2  # both processes took work


def test_a_run_answered_from_the_cache_is_told_apart_from_one_that_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decides whether worker processes start with litellm imported (see harness.workers).
    from harness.execute import expects_model_calls, load_for_run
    from harness.runner import RunOptions

    def expects(project: Any, **options: Any) -> bool:
        run_options = RunOptions(**options)
        suite = load_for_run(
            project.suite,
            project_dir=project.root,
            store_path=project.store,
            options=run_options,
            model_ids=None,
            check_cases=False,
        )
        return expects_model_calls(suite, run_options, project.store)

    monkeypatch.setenv(KEY_ENV, "sk-test")
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=40)
        assert expects(project)  # no store yet
        code, _ = run_json(project)
        assert code in (0, 1) and server.stats.total == 40
    assert not expects(project)  # every item is in the response cache
    assert expects(project, cache_mode="off")
    assert expects(project, cache_mode="refresh")
    assert not expects(project, cache_mode="read-only")
    project.rows = [{**row, "reply": row["reply"] + " again"} for row in project.rows]
    project.write()
    assert expects(project)  # new requests: none cached
    project.rows = project.rows[:20] + case_rows(40)[20:]
    project.write()
    assert expects(project)  # half of them cached: still calls
    project.rows = [{k: v for k, v in row.items() if k != "reply"} for row in case_rows(40)]
    project.write()
    assert expects(project)  # cases that do not render: no answer, no error (the run reports it)


def _counts(store: Path) -> tuple[int, int, int]:
    with sqlite3.connect(store) as db:
        run_id = db.execute("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        results, distinct = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT case_id) FROM results WHERE run_id = ?", (run_id,)
        ).fetchone()
        spans = db.execute(
            "SELECT COUNT(*) FROM spans WHERE run_id = ? AND span_kind = 'LLM'", (run_id,)
        ).fetchone()[0]
    return results, distinct, spans


def test_two_processes_run_every_item_exactly_once(tmp_path: Path) -> None:
    with threaded_server(latency_ms=20) as server:
        project = make_project(tmp_path, server.url, n=120, model={"concurrency": 4})
        proc = spawn(project, [*project.run_args("--workers", "2", "--cache", "off", "--json")])
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        summary = json.loads(out)
        assert summary["results"] == 120 and summary["errors"] == 0
        assert summary["processes"] == 2
        assert server.stats.total == 120  # no item was sent twice, none was lost
        assert _counts(project.store) == (120, 120, 120)  # spans from both processes


def test_stop_with_two_processes_then_resume_sends_each_item_once(tmp_path: Path) -> None:
    with threaded_server(latency_ms=50) as server:
        project = make_project(tmp_path, server.url, n=300, model={"concurrency": 4})
        proc = spawn(project, project.run_args("--workers", "2", "--cache", "off"))
        wait_for_requests(server, 40, proc, timeout=120)
        proc.send_signal(2)  # Ctrl-C: stop scheduling, finish in-flight calls, save them
        proc.communicate(timeout=120)
        assert proc.returncode == 130
        sent_before = server.stats.total
        done_before = _counts(project.store)[0]
        assert done_before < 300
        assert sent_before - done_before <= 8  # at most the in-flight calls (4 per process)
        resumed = spawn(
            project,
            [
                "run",
                "--resume",
                "last",
                "--store",
                str(project.store),
                "--workers",
                "2",
                "--cache",
                "off",
            ],
        )
        _, err = resumed.communicate(timeout=180)
        assert resumed.returncode == 0, err
        assert _counts(project.store)[:2] == (300, 300)
        assert server.stats.total - sent_before == 300 - done_before


def test_a_store_that_fails_mid_run_ends_the_run_promptly(tmp_path: Path) -> None:
    # A commit that fails (here: a table gone from under the run) must end the run with an
    # error, stopping the worker process too, not leave the process stuck at exit.
    with threaded_server(latency_ms=20) as server:
        project = make_project(tmp_path, server.url, n=10_000, model={"concurrency": 4})
        proc = spawn(project, project.run_args("--workers", "2", "--cache", "off"))
        wait_for_requests(server, 40, proc, timeout=120)
        with sqlite3.connect(project.store, timeout=30) as db:
            db.execute("ALTER TABLE scores RENAME TO scores_gone")
        _, err = proc.communicate(timeout=90)
        assert proc.returncode != 0
        assert "scores" in err
        assert server.stats.total < 10_000  # it stopped: the rest of the work was not sent


MAIN_SCRIPT = """
import os, sys
from pathlib import Path
if __name__ == "__mp_main__":  # the parent's main script, run again in a spawned child
    Path(os.environ["MARKER"]).write_text("ran")
if __name__ == "__main__":
    import multiprocessing
    from harness import workers
    context = workers.worker_context()
    main = sys.modules["__main__"]
    before = (main.__file__, main.__spec__)
    if sys.argv[1] == "hidden":
        with workers.main_module_hidden():
            child = context.Process(target=os.getpid)
            child.start()
    else:
        child = context.Process(target=os.getpid)
        child.start()
    child.join()
    assert child.exitcode == 0 and (main.__file__, main.__spec__) == before
"""


def test_worker_processes_do_not_run_the_parents_main_script_again(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = tmp_path / "main.py"
    script.write_text(MAIN_SCRIPT)
    for mode, reran in (("plain", True), ("hidden", False)):
        marker = tmp_path / f"marker-{mode}"
        env = {**os.environ, "MARKER": str(marker)}
        subprocess.run([sys.executable, str(script), mode], env=env, check=True, timeout=60)
        assert marker.exists() is reran, mode  # the plain case shows the test can tell


ORPHAN_SCRIPT = """
import sys, time
from harness import workers

def child():
    workers.exit_with_parent()
    time.sleep(120)

if __name__ == "__main__":
    process = workers.worker_context(preload_litellm=False).Process(target=child, daemon=True)
    process.start()
    print(process.pid, flush=True)
    time.sleep(120)
"""


def test_a_worker_quits_when_its_parent_is_killed(tmp_path: Path) -> None:
    # A worker's parent process is the fork server, which outlives a killed parent while any
    # of its children lives: the worker must watch the parent that started it, not getppid.
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = 0
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 10
        while process_running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_running(worker), "the worker outlived its killed parent"
    finally:
        if worker and process_running(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_run_refused_after_its_workers_started_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worker processes start as soon as the suite is loaded, before its models are checked
    # (they load the suite meanwhile). A model check that then fails must stop them, with
    # nothing written and no process left.
    import multiprocessing

    from harness.errors import ConfigError, HarnessError
    from harness.execute import execute
    from harness.runner import RunOptions

    started: list[workers.EarlyStart] = []
    start_early = workers.start_early
    wait_for_children = False

    def recording(*args: Any, **kwargs: Any) -> workers.EarlyStart:
        started.append(start_early(*args, **kwargs))
        if wait_for_children:
            assert len(started[-1].children) == 2  # waits until both children are started
        return started[-1]

    monkeypatch.setattr(workers, "start_early", recording)
    workers._stop_fork_server()  # a fresh one: the first start then waits for its imports
    monkeypatch.delenv(KEY_ENV, raising=False)  # the model check fails: no API key
    project = make_project(tmp_path, "http://127.0.0.1:9/v1", n=40)
    options = RunOptions(workers=3)
    with pytest.raises(ConfigError, match="is not set"):
        execute(project.suite, project_dir=project.root, store_path=project.store, options=options)
    # It was starting two children early, maybe still waiting for the fork server's imports
    # (then the fork server was stopped instead, and no child started).
    assert len(started) == 1 and len(started[0].starting.processes) == 2
    time.sleep(0.5)  # (a child forked meanwhile would be running by now)
    assert not any(
        process_running(child.pid) for child in started[0].starting.processes if child.pid
    )
    assert multiprocessing.active_children() == []
    assert not project.store.exists()  # nothing written
    # The children pass their own checks and wait; the parent then fails: it stops them.
    wait_for_children = True
    monkeypatch.setenv(KEY_ENV, "sk-test")
    project.store.mkdir(parents=True)  # a directory: the store cannot be opened
    with pytest.raises(HarnessError):
        execute(project.suite, project_dir=project.root, store_path=project.store, options=options)
    assert len(started) == 2 and not any(process_running(c.pid) for c in started[1].children)
    assert multiprocessing.active_children() == []
