"""Resume (harness/execute.py and the Runner with resume, harness/cli.py signals): interrupted
runs continue with each (case, model, epoch) scored exactly once; changed inputs are refused;
SIGKILL at random points and SIGINT leave a store that resumes cleanly."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DEFAULT_PROMPT,
    FAKE_KEY,
    KEY_ENV,
    MODEL_ID,
    Project,
    connect_ro,
    invoke,
    make_project,
    process_running,
    result_rows,
    run_json,
    run_records,
    spawn,
    store_snapshot,
    threaded_server,
    wait_for_requests,
    write_jsonl,
    write_yaml,
)

from harness.execute import execute
from harness.fakeserver import Faults, ThreadedFakeServer
from harness.runner import Runner, RunOptions
from harness.store import ResultRow, ScoreRow, Store
from harness.summary import summarize


def interrupted_run(project: Project, stop_after: int, **options: Any) -> str:
    """Run the suite in-process and stop it gracefully after `stop_after` results."""
    holder: dict[str, Runner] = {}

    def on_progress(progress: Any) -> None:
        if progress.done >= stop_after:
            holder["runner"].request_stop()

    outcome = execute(
        project.suite, project_dir=project.root, store_path=project.store,
        options=RunOptions(**options), on_start=lambda r: holder.__setitem__("runner", r),
        on_progress=on_progress,
    )  # fmt: skip
    assert outcome.status == "interrupted"
    return outcome.run_id


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def requests_per_case(server: ThreadedFakeServer) -> Counter[str]:
    return Counter(
        r.body["messages"][1]["content"].split(":")[0].removeprefix("Case ")
        for r in server.requests
    )


# --- in-process resume -----------------------------------------------------------------------


def ctrl_c(*_args: Any, **_kwargs: Any) -> None:
    raise KeyboardInterrupt  # what Python raises for a Ctrl-C outside the run's own handler


def test_ctrl_c_while_a_run_loads_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=5)
        monkeypatch.setattr("harness.execute.check_model", ctrl_c)
        result = invoke(project, project.run_args())
        assert result.exit_code == 130, result.output
        assert "interrupted before the run started: no run was recorded" in result.output
        assert server.stats.total == 0
    assert not project.store.exists() or run_records(project.store) == []


def test_ctrl_c_after_a_run_ended_says_it_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop's handler is gone once the run's loop ends; the run then records its versions.
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=5)
        monkeypatch.setattr("harness.execute.record_run_versions", ctrl_c)
        result = invoke(project, project.run_args())
    (record,) = run_records(project.store)
    assert result.exit_code == 130, result.output
    assert f"interrupted after run {record['id']} ended (completed)" in result.output
    assert "--resume" not in result.output
    assert record["status"] == "completed"
    assert len(result_rows(project.store, record["id"])) == 5


@pytest.mark.parametrize("ref", ["id", "last"])
def test_resume_completes_an_interrupted_run(tmp_path: Path, ref: str) -> None:
    with threaded_server(latency_ms=5) as server:
        project = make_project(tmp_path, server.url, n=20, concurrency=2)
        run_id = interrupted_run(project, 5, cache_mode="off")
        done = len(result_rows(project.store, run_id))
        assert 5 <= done < 20
        assert server.stats.total == done  # a graceful stop saves every call it made
        assert run_records(project.store)[0]["status"] == "interrupted"
        target = run_id if ref == "id" else "last"
        result = invoke(
            project,
            ["run", "--resume", target, "--store", str(project.store), "--cache", "off", "--json"],
        )
        assert result.exit_code == 0, result.output
        per_case = requests_per_case(server)
    rows = result_rows(project.store, run_id)
    assert sorted(r["case_id"] for r in rows) == [f"c{i:03d}" for i in range(20)]
    assert set(per_case.values()) == {1}  # completed cases made no new calls
    assert len(per_case) == 20
    (run,) = run_records(project.store)
    assert run["status"] == "completed"


def test_resume_with_repeat_and_two_models(tmp_path: Path) -> None:
    with threaded_server(latency_ms=5) as server:
        models = [
            {"id": "openai/fake-a", "api_base": server.url, "api_key_env": KEY_ENV},
            {"id": "openai/fake-b", "api_base": server.url, "api_key_env": KEY_ENV},
        ]
        project = make_project(tmp_path, None, n=6, models=models, repeat=2, concurrency=1)
        run_id = interrupted_run(project, 7, cache_mode="off")
        result = invoke(
            project, ["run", "--resume", run_id, "--store", str(project.store), "--cache", "off"]
        )
        assert result.exit_code == 0, result.output
        total = server.stats.total
    keys = [(r["case_id"], r["model"], r["epoch"]) for r in result_rows(project.store, run_id)]
    assert len(keys) == len(set(keys)) == 6 * 2 * 2
    assert total == 24


def test_resume_of_a_completed_run_is_refused(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=2)
        _, summary = run_json(project)
    before = store_snapshot(project.store)
    result = invoke(project, ["run", "--resume", summary["run_id"], "--store", str(project.store)])
    assert result.exit_code == 2
    assert "already completed" in result.stderr
    assert store_snapshot(project.store)[2] == before[2]


# --- errored items are run again -------------------------------------------------------------


def resume_json(project: Project, run_id: str) -> tuple[int, dict[str, Any]]:
    args = ["run", "--resume", run_id, "--store", str(project.store), "--cache", "off", "--json"]
    result = invoke(project, args)
    return result.exit_code, json.loads(result.stdout)


def test_resume_runs_errored_items_again_and_keeps_their_earlier_errors(tmp_path: Path) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=12, concurrency=1, model={"max_attempts": 1})
        run_id = interrupted_run(project, 4, cache_mode="off")
        server.server.faults = Faults(rate_500=1.0)  # the provider goes down: the resume aborts
        code, aborted = resume_json(project, run_id)
        assert (code, aborted["status"]) == (3, "aborted"), aborted
        rows = result_rows(project.store, run_id)
        errored = [row["case_id"] for row in rows if row["status"] == "error"]
        assert errored
        server.server.faults = Faults()
        server.reset_stats()
        code, summary = resume_json(project, run_id)
        per_case = requests_per_case(server)
    assert (code, summary["status"]) == (0, "completed"), summary
    # The errored and the never-run items were called, once each; the passed ones not at all.
    assert set(per_case.values()) == {1}
    assert sorted(per_case) == [f"c{i:03d}" for i in range(4, 12)]
    rows = result_rows(project.store, run_id)
    assert len(rows) == 12 and all(r["status"] == "pass" for r in rows)
    # The latest result of each item wins: nothing is counted twice, no retried error counts.
    assert (summary["results"], summary["errors"]) == (12, 0)
    block = summary["models"][MODEL_ID]
    assert (block["passed"], block["errors"], block["scorers"]["equals"]["n"]) == (12, 0, 12)
    shown = invoke(project, ["show", run_id, "--json", "--store", str(project.store)])
    assert len(json.loads(shown.stdout)["results"]) == 12
    # The earlier error rows are kept, as the run's history.
    with contextlib.closing(connect_ro(project.store)) as conn:
        history = conn.execute(
            "SELECT case_id, status FROM superseded_results WHERE run_id = ?", (run_id,)
        ).fetchall()
    assert sorted(history) == [(case_id, "error") for case_id in errored]


def test_a_retried_item_keeps_only_the_scores_of_its_latest_result(tmp_path: Path) -> None:
    def attempt(error_kind: str, scores: list[ScoreRow]) -> ResultRow:
        return ResultRow(
            run_id="r1", case_id="c1", model="m", epoch=0, status="error", score=None,
            output=None, error=error_kind, error_kind=error_kind, latency_ms=None,
            input_tokens=None, output_tokens=None, cost_usd=None, cached=False, attempts=1,
            trace_id=None, case_data={}, detail=None, scores=scores,
        )  # fmt: skip

    crashed = [ScoreRow("equals", "pass", 1.0, "ok"), ScoreRow("python", "error", None, "boom")]
    with Store.open(tmp_path / "evals.db") as store:
        store.create_run("r1", "suite", {})
        store.add_result(attempt("user_function", crashed))  # a scorer crashed
        store.flush()
        assert store.completed_keys("r1") == set()  # an error is run again on resume
        store.add_result(attempt("server_error", []))  # its retry: the provider failed
        store.flush()
        (row,) = store.results("r1")
        superseded = store.conn.execute(
            "SELECT (SELECT count(*) FROM superseded_results), "
            "(SELECT count(*) FROM superseded_scores)"
        ).fetchone()
    assert (row.error_kind, row.scores) == ("server_error", [])
    assert summarize([row])["models"]["m"]["scorers"] == {}
    assert superseded == (1, 2)


def change_dataset(project: Project) -> None:
    rows = copy.deepcopy(project.rows)
    rows[-1]["question"] = "a different question?"
    write_jsonl(project.dataset_path, rows)


def change_prompt(project: Project) -> None:
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["messages"][0]["content"] = "Reply exactly as told, please."
    write_yaml(project.prompt_path, prompt)


def change_prompt_params(project: Project) -> None:
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["params"]["max_tokens"] = 17
    write_yaml(project.prompt_path, prompt)


def change_model_params(project: Project) -> None:
    project.suite_data["models"][0]["params"] = {"temperature": 0.5}
    project.write()


def change_scorers(project: Project) -> None:
    project.suite_data["scorers"][0]["ignore_case"] = True
    project.write()


def change_suite(project: Project) -> None:
    project.suite_data["thresholds"] = {"equals": 0.9}
    project.write()


@pytest.mark.parametrize(
    "change, named",
    [
        (change_dataset, "dataset"),
        (change_prompt, "prompt"),
        (change_prompt_params, "prompt"),
        (change_model_params, "suite|models"),
        (change_scorers, "suite|scorers"),
        (change_suite, "suite"),
    ],
)
def test_resume_refuses_when_inputs_changed(tmp_path: Path, change: Any, named: str) -> None:
    with threaded_server() as server:
        project = make_project(tmp_path, server.url, n=8, concurrency=1)
        run_id = interrupted_run(project, 2)
        change(project)
        before = store_snapshot(project.store)
        calls = server.stats.total
        result = invoke(project, ["run", "--resume", run_id, "--store", str(project.store)])
        assert server.stats.total == calls
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    import re

    assert re.search(rf"cannot resume run {run_id}: its ({named}) differs", line), line
    assert store_snapshot(project.store)[2] == before[2]
    assert run_records(project.store)[0]["status"] == "interrupted"


# --- real processes: SIGKILL and SIGINT ------------------------------------------------------

N_CASES = 60
CONCURRENCY = 4


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    with threaded_server(latency_ms=50, jitter_ms=20) as server:
        project = make_project(tmp_path, server.url, n=N_CASES, concurrency=CONCURRENCY)
        args = project.run_args()
        lost: list[int] = []
        unsaved_before = 0
        run_id: str | None = None
        for _kill in range(3):
            start = server.stats.total
            proc = spawn(project, args)
            wait_for_requests(server, start + rng.randint(1, 12), proc)
            time.sleep(rng.uniform(0, 0.12))
            proc.send_signal(signal.SIGKILL)
            finish(proc)
            time.sleep(0.2)  # let requests already on the wire arrive
            if run_id is None:
                (record,) = run_records(project.store)
                run_id = record["id"]
                args = ["run", "--resume", run_id, "--store", str(project.store)]
            saved = len(result_rows(project.store, run_id))
            unsaved = server.stats.total - saved
            lost.append(unsaved - unsaved_before)
            unsaved_before = unsaved
            assert saved < N_CASES, "the run finished before it could be killed"
        result = invoke(project, args)  # the last resume in-process: it only saves start-up
        assert result.exit_code == 0, result.output
        total = server.stats.total
        per_case = requests_per_case(server)
    assert run_id is not None
    rows = result_rows(project.store, run_id)
    assert sorted(r["case_id"] for r in rows) == [f"c{i:03d}" for i in range(N_CASES)]
    assert all(r["status"] == "pass" for r in rows)
    (record,) = run_records(project.store)
    assert record["status"] == "completed"
    # Each kill loses at most the calls in flight; everything else was saved as it finished.
    assert all(0 <= n <= CONCURRENCY for n in lost), lost
    assert total == N_CASES + sum(lost)
    assert total <= N_CASES + 3 * CONCURRENCY
    assert set(per_case) == {f"c{i:03d}" for i in range(N_CASES)}


def worker_children(pid: int) -> list[int]:
    """Descendants of `pid` (multiprocessing's resource tracker excluded): its worker
    processes, and the fork server they are forked from."""
    parents: dict[int, list[tuple[int, bytes]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append((int(entry.name), command))
    found, todo = [], [pid]
    while todo:
        for child, command in parents.get(todo.pop(), []):
            if b"resource_tracker" not in command:
                found.append(child)
                todo.append(child)
    return found


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if process_running(pid)]


def test_sigkill_of_a_run_with_worker_processes_leaves_no_orphans(tmp_path: Path) -> None:
    with threaded_server(latency_ms=50) as server:
        project = make_project(tmp_path, server.url, n=200, concurrency=CONCURRENCY)
        proc = spawn(project, project.run_args("--workers", "2"))
        children: list[int] = []
        try:
            deadline = time.monotonic() + 60
            while len(children) < 2 or server.stats.total < 10:  # the fork server, a worker
                assert proc.poll() is None, finish(proc)[2][-2000:]
                assert time.monotonic() < deadline, "no worker process appeared"
                found = worker_children(proc.pid)
                children = found if len(found) > len(children) else children
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            finish(proc)
            at_kill = server.stats.total
            deadline = time.monotonic() + 30
            while alive(children) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert alive(children) == [], "a worker process outlived its killed parent"
            time.sleep(0.3)
            # Beyond the calls in flight at the kill, nobody called the provider any more.
            assert server.stats.total <= at_kill + 2 * CONCURRENCY
        finally:
            for pid in alive(children):
                os.kill(pid, signal.SIGKILL)
        run_id = run_records(project.store)[0]["id"]
        result = invoke(project, ["run", "--resume", run_id, "--store", str(project.store)])
        assert result.exit_code == 0, result.output
        per_case = requests_per_case(server)
    assert len(result_rows(project.store, run_id)) == 200
    assert set(per_case) == {f"c{i:03d}" for i in range(200)}
    assert sum(per_case.values()) <= 200 + 2 * CONCURRENCY


def session_processes(sid: int) -> dict[int, bytes]:
    """The live processes of session `sid` (a run spawned with `start_new_session=True`: its
    own pid), with their command lines; multiprocessing's resource tracker excluded."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, _pgrp, session = (
                (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            )
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(session) == sid and state != "Z" and b"resource_tracker" not in command:
            found[int(entry.name)] = command
    return found


def wait_until_session_gone(sid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_processes(sid)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the run outlived it: {list(left.values())}"


def opened(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open."""
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == str(path):
                    return True
    return False


@pytest.mark.parametrize(
    "pause", [0.0, 0.5], ids=["as-the-fork-server-starts", "during-its-imports"]
)
def test_ctrl_c_while_the_run_starts_quits_cleanly(tmp_path: Path, pause: float) -> None:
    # A Ctrl-C reaches the whole process group, the fork server included, which is then
    # starting, or importing what workers need (~2.5 s): exit 130 with one line, no traceback
    # or failed start from any process, none left behind, nothing recorded.
    with threaded_server(latency_ms=50) as server:
        project = make_project(tmp_path, server.url, n=200, concurrency=CONCURRENCY)
        proc = spawn(project, project.run_args("--workers", "2"), start_new_session=True)
        deadline = time.monotonic() + 60
        while not any(b"forkserver" in c for c in session_processes(proc.pid).values()):
            assert proc.poll() is None, finish(proc)[2][-2000:]
            assert time.monotonic() < deadline, "no fork server appeared"
            time.sleep(0.002 if pause == 0 else 0.02)
        # The parent is then importing litellm to check the suite's model (a fresh project has
        # no remembered checks).
        time.sleep(pause)
        os.killpg(proc.pid, signal.SIGINT)
        code, _out, err = finish(proc)
        wait_until_session_gone(proc.pid)
        assert code == 130, err[-2000:]
        assert "Traceback" not in err, err[-3000:]
        assert "could not start" not in err, err[-2000:]
        assert "interrupted before the run started: no run was recorded" in err, err[-2000:]
        assert server.stats.total == 0
    assert not project.store.exists() or run_records(project.store) == []


def test_sigterm_to_the_process_group_stops_a_run_with_workers_then_resume(
    tmp_path: Path,
) -> None:
    # What a CI runner does to a cancelled job: SIGTERM to every process of the group at once.
    # In-flight calls finish and are saved, every process quits, the run resumes.
    with threaded_server(latency_ms=50) as server:
        project = make_project(tmp_path, server.url, n=400, concurrency=CONCURRENCY)
        proc = spawn(project, project.run_args("--workers", "2"), start_new_session=True)
        deadline = time.monotonic() + 60
        store = str(project.store.resolve())
        while not any(  # a worker has opened the store: it was told to go and is taking work
            pid != proc.pid and opened(pid, Path(store)) for pid in session_processes(proc.pid)
        ):  # (the fork server, whose command line its workers share, never opens it)
            assert proc.poll() is None, finish(proc)[2][-2000:]
            assert time.monotonic() < deadline, "no worker process took work"
            time.sleep(0.02)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGTERM)
        code, _out, err = finish(proc)
        wait_until_session_gone(proc.pid)
        assert code == 130, err[-2000:]
        assert "Traceback" not in err, err[-3000:]
        (record,) = run_records(project.store)
        assert record["status"] == "interrupted"
        saved = len(result_rows(project.store, record["id"]))
        assert server.stats.total == saved < 400  # every call made has its result
        result = invoke(project, ["run", "--resume", record["id"], "--store", str(project.store)])
        assert result.exit_code == 0, result.output
        per_case = requests_per_case(server)
    assert len(result_rows(project.store, record["id"])) == 400
    assert set(per_case) == {f"c{i:03d}" for i in range(400)}
    assert sum(per_case.values()) == 400  # nothing was paid for twice


def test_sigint_finishes_in_flight_calls_a_second_one_quits_then_resume(
    tmp_path: Path,
) -> None:
    with threaded_server(latency_ms=50) as server:
        project = make_project(tmp_path, server.url, n=N_CASES, concurrency=CONCURRENCY)
        proc = spawn(project, project.run_args())
        wait_for_requests(server, 10, proc)
        proc.send_signal(signal.SIGINT)
        code, _out, err = finish(proc)
        assert code == 130, err[-2000:]
        assert "resume with `evals run --resume" in err
        (record,) = run_records(project.store)
        assert record["status"] == "interrupted"
        saved = len(result_rows(project.store, record["id"]))
        # In-flight calls finished and were saved: every request made has its result.
        assert server.stats.total == saved
        assert saved < N_CASES

        # A second Ctrl-C quits at once, even while calls hang, and leaves the store usable.
        server.server.latency_ms = 30_000
        proc = spawn(project, ["run", "--resume", "last", "--store", str(project.store)])
        wait_for_requests(server, saved + CONCURRENCY, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        pressed = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code, _out, err = finish(proc)
        assert code == 130, err[-2000:]
        assert time.monotonic() - pressed < 5.0
        assert len(result_rows(project.store, record["id"])) == saved

        server.server.latency_ms = 0
        result = invoke(project, ["run", "--resume", "last", "--store", str(project.store)])
        assert result.exit_code == 0, result.output
    assert len(result_rows(project.store, record["id"])) == N_CASES
    assert run_records(project.store)[0]["status"] == "completed"
