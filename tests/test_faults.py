"""A fault matrix against the fake server (harness/runner.py + providers.py under faults): no
case lost or double-counted, errors counted exactly as the server's final outcomes say, and a
bounded run time."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from helpers import MODEL_ID, make_project, result_rows, run_json, threaded_server

from harness.fakeserver import Faults

N_CASES = 200
MAX_ATTEMPTS = 2  # few attempts, so that some cases exhaust them and the count is exercised
KIND_OF_OUTCOME = {
    "500": "server_error",
    "429": "rate_limit",
    "hang": "timeout",
    "drop": "connection",
    "invalid_json": "invalid_response",
}


def test_fault_matrix(tmp_path: Path) -> None:
    faults = Faults(
        rate_500=0.10,
        rate_429=0.05,
        rate_hang=0.02,
        rate_drop=0.02,
        rate_invalid_json=0.01,
        retry_after_s=None,
        retry_after_ms=50,
        hang_s=5.0,
    )
    # Keyed draws: each (request, attempt) gets the same fate whatever the arrival order;
    # seed 34 makes requests fail for good with every kind of fault (6 of 200).
    with threaded_server(faults=faults, fault_draw="keyed", seed=34, latency_ms=2) as server:
        project = make_project(
            tmp_path, server.url, n=N_CASES, concurrency=16,
            model={"timeout_s": 0.5, "max_attempts": MAX_ATTEMPTS, "backoff_s": 0.01},
        )  # fmt: skip
        started = time.monotonic()
        code, summary = run_json(project, "--cache", "off", "--max-error-rate", "0.5")
        elapsed = time.monotonic() - started
        final = server.final_outcome_by_key()
        attempts = server.server.attempts_by_key()
        case_of_key = {
            r.key: r.body["messages"][1]["content"].split(":")[0].removeprefix("Case ")
            for r in server.requests
        }
        outcomes = server.stats.outcomes

    rows = result_rows(project.store, summary["run_id"])
    by_case = {r["case_id"]: r for r in rows}
    # Nothing lost, nothing counted twice.
    assert len(rows) == len(by_case) == N_CASES
    assert summary["results"] == summary["planned"] == N_CASES
    assert len(final) == N_CASES
    # Every fault kind was injected, so the matrix really ran.
    assert all(outcomes[kind] > 0 for kind in KIND_OF_OUTCOME), outcomes

    failed_keys = {key for key, outcome in final.items() if outcome != "ok"}
    assert failed_keys, "expected some requests to exhaust their attempts"
    assert all(attempts[key] == MAX_ATTEMPTS for key in failed_keys)
    assert all(n <= MAX_ATTEMPTS for n in attempts.values())
    errored = {case for case, row in by_case.items() if row["status"] == "error"}
    assert errored == {case_of_key[key] for key in failed_keys}
    assert summary["errors"] == len(failed_keys)
    block = summary["models"][MODEL_ID]
    assert block["errors"] == len(failed_keys)
    assert block["passed"] == N_CASES - len(failed_keys)
    assert block["failed"] == 0
    expected_kinds = Counter(KIND_OF_OUTCOME[final[key]] for key in failed_keys)
    assert block["error_kinds"] == dict(expected_kinds)
    assert set(expected_kinds) == set(KIND_OF_OUTCOME.values())  # each kind ends some case
    # Attempts recorded on each result match what reached the server.
    for key, case in case_of_key.items():
        if key not in failed_keys:
            assert by_case[case]["attempts"] == attempts[key], case
    assert code == 0
    # Hangs cost one 0.5 s timeout each; everything else is fast.
    assert elapsed < 30.0
