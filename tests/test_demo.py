"""The README's demo suite end to end: the real CLI, the bundled local model, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVALS = Path(sys.executable).parent / "evals"


@pytest.mark.localmodel
def test_demo_suite_runs_offline_against_the_bundled_model(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["EVALS_HOME"] = str(tmp_path)  # the demo writes nothing into the checkout
    done = subprocess.run(
        [str(EVALS), "run", "evalsets/demo.yaml", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    model = summary["models"]["local/smollm2"]
    assert summary["results"] == 36 and summary["errors"] == 0
    assert model["cost_usd"] == 0.0 and model["output_tokens"] > 0
    # A real model, not a canned responder: it gets some right and some wrong.
    assert 0.3 <= model["scorers"]["icontains"]["pass_rate"] < 1.0
    assert summary["thresholds_ok"] is True

    show = subprocess.run(
        [str(EVALS), "show", "last", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    record = json.loads(show.stdout)
    manifest = record["run"]["manifest"]
    assert manifest["prompt"]["name"] == "demo_qa" and len(manifest["prompt"]["version"]) == 8
    assert manifest["dataset"]["version"] and manifest["models"][0]["id"] == "local/smollm2"
    outputs = [r["output"] for r in record["results"]]
    assert all(isinstance(o, str) and o.strip() for o in outputs)
    assert len(set(outputs)) > 10  # distinct answers to distinct questions
