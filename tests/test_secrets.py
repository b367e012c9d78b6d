"""A canary API key, and secret-looking strings in a dataset, never reach a stored or exported
byte: the run store (+ WAL), run files (JSONL, Parquet), the HTML report, a dataset made from
traces, the CLI's output, or an OTLP/HTTP receiver.

The canary is a real API key as far as the harness knows: `OPENAI_API_KEY`, the suite's
`api_key_env`, sent to the fake server on every call. Dataset content is the user's own data;
the run store still redacts secret patterns and secret environment values from it (results,
scores and their details), and a model answer that contains a secret is not cached.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import make_project, threaded_server
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from harness.store import ResultRow, ScoreRow, Store

EVALS = Path(sys.executable).parent / "evals"
ALPHABET = string.ascii_letters + string.digits


def random_text(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


@dataclass
class Receiver:
    """A local OTLP/HTTP endpoint keeping the raw body of every POST /v1/traces."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)

    def span_count(self) -> int:
        total = 0
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                total += sum(len(scope.spans) for scope in resource_spans.scope_spans)
        return total


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                found.bodies.append(body)
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield found
    server.shutdown()
    server.server_close()


def evals(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """The real console script, so every byte it prints (logs included) is captured."""
    return subprocess.run([str(EVALS), *args], cwd=root, env=env, capture_output=True,
                          timeout=120)  # fmt: skip


def test_canary_key_and_dataset_secrets_never_stored_or_exported(
    tmp_path: Path, receiver: Receiver
) -> None:
    canary = "sk-canary-" + random_text(40)
    dataset_secret = "sk-live-" + random_text(32)
    rows = [
        {"id": "plain", "question": "q?", "reply": "Paris", "expected": "Paris"},
        {"id": "wrong", "question": "q?", "reply": "Lyon", "expected": "Paris"},
        # The model echoes the dataset's secret-looking string back as its answer.
        {"id": "leaky", "question": f"my key is {dataset_secret}", "reply": dataset_secret,
         "expected": dataset_secret},
        {"id": "toolong", "question": "CONTEXT_TOO_LONG", "reply": "x", "expected": "x"},
    ]  # fmt: skip
    with threaded_server() as server:
        models = [
            {"id": "openai/fake-model", "api_base": server.url, "api_key_env": "OPENAI_API_KEY",
             "max_attempts": 2, "backoff_s": 0.001},
            {"id": "openai/fake-401", "api_base": server.url, "api_key_env": "OPENAI_API_KEY",
             "max_attempts": 1},
        ]  # fmt: skip
        project = make_project(tmp_path, None, rows=rows, models=models)
        env = {
            **os.environ,
            "OPENAI_API_KEY": canary,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "COLUMNS": "200",
        }
        store = project.store
        run = evals(tmp_path, env, *project.run_args("--max-error-rate", "1", "--otlp-endpoint",
                                                     receiver.url))  # fmt: skip
        assert run.returncode in (0, 1) and b"Traceback" not in run.stderr, run.stderr.decode()
        assert b"run " in run.stdout and store.exists()
        # The fake server did receive the key: the canary is live, not unused.
        assert all(request.auth_present for request in server.requests)
    outputs = [run]
    files = {
        "run.jsonl": ["export", "last", "-o", "run.jsonl"],
        "run.parquet": ["export", "last", "-o", "run.parquet"],
        "report.html": ["report", "last", "-o", "report.html"],
        "cases.jsonl": ["dataset", "from-traces", "--run", "last", "-o", "cases.jsonl"],
    }
    for name, args in files.items():
        done = evals(tmp_path, env, *args, "--store", str(store))
        assert done.returncode == 0, (name, done.stderr.decode())
        outputs.append(done)
    listed = evals(tmp_path, env, "traces", "last", "--json", "--store", str(store))
    outputs.append(listed)
    listed_traces = json.loads(listed.stdout)["traces"]
    assert len(listed_traces) == len(rows) * len(models)
    # The trace tree, in full, of a passing case and of each model's errors.
    errors = [t for t in listed_traces if t["verdict"] == "error"]
    for trace in [next(t for t in listed_traces if t["verdict"] == "pass"), *errors[:2]]:
        shown = evals(tmp_path, env, "trace", trace["trace_id"], "--attributes", "--store",
                      str(store))  # fmt: skip
        assert shown.returncode == 0
        outputs.append(shown)
    outputs.append(evals(tmp_path, env, "show", "last", "--json", "--store", str(store)))

    assert receiver.span_count() > 0, "nothing reached the OTLP receiver"
    stored = sorted(store.parent.glob(store.name + "*"))  # the file, -wal and -shm
    assert stored
    sources: dict[str, bytes] = {str(p): p.read_bytes() for p in stored}
    sources.update({name: (tmp_path / name).read_bytes() for name in files})
    sources.update({f"otlp body {i}": body for i, body in enumerate(receiver.bodies)})
    for i, done in enumerate(outputs):
        sources[f"output {i}: {done.args[1:3]}"] = done.stdout + done.stderr
    for secret in (canary, dataset_secret):
        for needle in (secret.encode(), secret.encode("utf-16-le")):
            leaks = [name for name, data in sources.items() if needle in data]
            assert not leaks, f"{secret[:12]}... found in {leaks}"
    # What the leaky case left behind is redacted, not dropped.
    assert b"[REDACTED]" in sources["run.jsonl"] and b"[REDACTED]" in sources["cases.jsonl"]


# --- the run store's own redaction -----------------------------------------------------------


def result(output: str, **extra: object) -> ResultRow:
    fields: dict[str, object] = dict(
        run_id="r", case_id="c", model="m", epoch=0, status="fail", score=0.0, output=output,
        error=None, error_kind=None, latency_ms=1.0, input_tokens=1, output_tokens=1,
        cost_usd=0.0, cached=False, attempts=1, trace_id=None, case_data={}, detail=None,
        scores=[], created_at=1.0,
    )  # fmt: skip
    fields.update(extra)
    return ResultRow(**fields)  # type: ignore[arg-type]


def test_store_redacts_results_scores_and_details(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not key-shaped: only known as a secret because of its variable's name.
    password = "correct-horse-" + random_text(12)
    monkeypatch.setenv("SERVICE_PASSWORD", password)
    key = "sk-proj-" + random_text(30)
    path = tmp_path / "evals.db"
    with Store.open(path) as store:
        store.create_run("r", "suite", {"schema": 1})
        store.add_result(result(
            f"the key is {key}",
            error=f"call failed with {password}",
            case_data={"fields": {"question": f"use {key}"}, "expected": [password]},
            detail={"messages": [{"role": "user", "content": f"Bearer {password}"}]},
            scores=[ScoreRow("judge", "fail", 0.0, f"it leaked {key}",
                             {"raw": {"reply": password}})],
        ))  # fmt: skip
        store.flush()
        (row,) = store.results("r")
    assert row.output == "the key is [REDACTED]" and row.error == "call failed with [REDACTED]"
    assert row.case_data == {"fields": {"question": "use [REDACTED]"}, "expected": ["[REDACTED]"]}
    assert row.detail == {"messages": [{"role": "user", "content": "Bearer [REDACTED]"}]}
    (score,) = row.scores
    assert score.reason == "it leaked [REDACTED]" and score.detail == {
        "raw": {"reply": "[REDACTED]"}
    }
    data = b"".join(p.read_bytes() for p in tmp_path.glob("evals.db*"))
    assert key.encode() not in data and password.encode() not in data


def test_answers_holding_a_secret_are_not_cached(tmp_path: Path) -> None:
    key = "sk-" + random_text(30)
    with Store.open(tmp_path / "evals.db") as store:
        store.cache_put("plain", "m", {"text": "Paris"})
        store.cache_put("leaky", "m", {"text": f"here: {key}"})
        store.flush()
        assert store.cache_get("plain") == {"text": "Paris"}
        assert store.cache_get("leaky") is None
