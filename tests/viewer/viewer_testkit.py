"""What the viewer tests share: a store filled by real runs, the XSS corpus, a client factory.

`build_store` runs four small suites through `harness.execute.execute` against the
fake OpenAI server: a chat suite twice (runs A and B, so a comparison has regressions,
improvements and a flaky case), a tool-using agent, and a Python target that returns retrieved
chunks and is graded by an LLM judge. Outputs, dataset fields, case ids, metadata, tool
results, judge replies and span attributes carry the XSS corpus.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from starlette.testclient import TestClient

from harness.execute import execute
from harness.fakeserver import Reply, echo_or_script
from harness.runner import RunOptions
from harness.viewer import ViewerConfig, create_app

KEY_ENV = "EVALS_VIEWER_TEST_KEY"
HOST, PORT = "127.0.0.1", 8765
BASE_URL = f"http://{HOST}:{PORT}"

# Each payload would set window.__xss (and some call a hook or open a dialog) if it ever ran.
XSS = [
    "<script>window.__xss=1;window.__xssHook&&window.__xssHook(1)</script>",
    '<img src=x onerror="window.__xss=2;alert(2)">',
    "javascript:window.__xss=3",
    "</textarea><script>window.__xss=4</script>",
    '" onmouseover="window.__xss=5" autofocus onfocus="window.__xss=5" x="',
    "'><svg onload=window.__xss=6>",
    "</pre></td></tr></table><script>window.__xss=7</script>",
]
XSS_TEXT = " ".join(XSS)
XSS_CASE = "xss\"'<i>case</i>"
# Raw markup that must never reach a page unescaped.
XSS_MARKERS = [
    "<script>window.__xss",
    "<img src=x",
    "<svg onload",
    'onmouseover="window',
    "<i>case",
]


@dataclass
class ViewerStore:
    path: Path
    root: Path
    runs: dict[str, str]  # "a", "b", "agent", "python" -> run id


def _prompt() -> dict[str, Any]:
    return {
        "name": "qa",
        "messages": [
            {"role": "system", "content": "Reply exactly as told."},
            {"role": "user", "content": "Case {{ case_id }}: {{ question }}\nREPLY: {{ reply }}"},
        ],
        "params": {"temperature": 0, "max_tokens": 64},
    }


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(10):
        answer = f"answer {i}"
        rows.append(
            {
                "id": f"c{i:03d}",
                "question": f"question {i}?",
                "reply": f"{answer} extra" if i in (5, 7) else answer,
                "expected": answer,
                "metadata": {"difficulty": "hard" if i % 3 == 0 else "easy", "tags": ["geo"]},
            }
        )
    rows.append(
        {
            "id": "flaky",
            "question": "flip a coin",
            "reply": "answer F",
            "expected": "answer F",
            "metadata": {"difficulty": "hard"},
        }
    )
    rows.append(
        {
            "id": XSS_CASE,
            "question": XSS_TEXT,
            "reply": XSS_TEXT,
            "expected": XSS_TEXT + " no",
            "metadata": {"difficulty": XSS[0], "tags": [XSS[1]]},
        }
    )
    return rows


class Responder:
    """Chat: the REPLY line, changed per run (`mode`) for some cases; tools: a scripted agent;
    the judge: a JSON verdict whose reason carries the corpus."""

    def __init__(self) -> None:
        self.mode = "a"
        self.calls: dict[str, int] = {}

    def __call__(self, body: dict[str, Any]) -> Reply:
        if body.get("model") == "fake-judge":
            return Reply(json.dumps({"reason": f"judge says {XSS[0]}", "score": 0}))
        text = echo_or_script(body).content or ""
        user = next((m.get("content") for m in body["messages"] if m.get("role") == "user"), "")
        match = re.match(r"Case (\S+):", str(user))
        case = match.group(1) if match else ""
        if case == "flaky":  # alternates between calls: differing verdicts across epochs
            self.calls[case] = self.calls.get(case, 0) + 1
            return Reply(text if self.calls[case] % 2 else "wrong F")
        if self.mode == "b" and case == "c003":
            return Reply("a regressed answer")
        if self.mode == "b" and case == "c005":
            return Reply(text.replace(" extra", ""))
        return Reply(text)


TOOLS_PY = '''
def lookup(city: str) -> str:
    """Look a city up."""
    return "found " + city + " " + XSS_TEXT
'''

TARGET_PY = """
from opentelemetry import trace

def answer(case):
    span = trace.get_current_span()
    span.set_attribute("xss.value", XSS_TEXT)
    span.set_attribute("xss.key." + XSS_0, "key")
    return {
        "output": "Paris " + XSS_TEXT,
        "retrieved": [
            {"id": "doc-1", "text": "Paris is the capital. " + XSS_TEXT, "score": 0.91},
            {"id": "doc-2", "text": "Lyon is a city.", "score": 0.42},
        ],
    }
"""


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
    return path


def build_store(root: Path, server_url: str, responder: Responder) -> ViewerStore:
    """Write the projects and run the four suites into `root/evals.db`."""
    model = {
        "id": "openai/fake-model",
        "api_base": server_url,
        "api_key_env": KEY_ENV,
        "timeout_s": 5.0,
        "max_attempts": 2,
        "backoff_s": 0.01,
    }
    judge = {**model, "id": "openai/fake-judge"}
    _write(root / "prompts" / "qa.yaml", _prompt())
    data = root / "evalsets" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()), "utf-8")
    (data / "one.jsonl").write_text(
        json.dumps(
            {"id": "paris", "question": "Capital of France?", "reply": "Paris", "expected": "Paris"}
        )
        + "\n",
        "utf-8",
    )
    corpus = json.dumps(XSS_TEXT)
    _write(root / "viewer_tools.py", TOOLS_PY.replace("XSS_TEXT", corpus))
    target = TARGET_PY.replace("XSS_TEXT", corpus).replace("XSS_0", json.dumps(XSS[1]))
    _write(root / "viewer_target.py", textwrap.dedent(target))
    equals = {"type": "equals", "value": "{{ expected }}"}
    suites = {
        "chat": {
            "name": "viewertest",
            "dataset": "data/cases.jsonl",
            "prompt": "qa",
            "target": "chat",
            "models": [model],
            "repeat": 2,
            "scorers": [equals, {"type": "icontains", "value": "{{ expected }}"}],
        },
        "agent": {
            "name": "viewer-agent",
            "dataset": "data/one.jsonl",
            "prompt": "qa",
            "target": {"type": "agent", "tools": ["viewer_tools:lookup"], "max_steps": 3},
            "models": [model],
            "scorers": [
                {"type": "tool-called", "tool": "lookup"},
                {"type": "icontains", "value": "{{ expected }}"},
            ],
        },
        "python": {
            "name": "viewer-python",
            "dataset": "data/one.jsonl",
            "target": "python:viewer_target:answer",
            "scorers": [{"type": "judge", "rubric": "correctness", "judge": judge}],
        },
    }
    for name, suite in suites.items():
        _write(root / "evalsets" / f"{name}.yaml", suite)
    store = root / "evals.db"
    runs: dict[str, str] = {}

    def run(name: str, key: str) -> None:
        options = RunOptions(cache_mode="off", max_error_rate=1.0)
        outcome = execute(
            root / "evalsets" / f"{name}.yaml",
            project_dir=root,
            store_path=store,
            options=options,
        )
        runs[key] = outcome.run_id

    previous = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = "sk-fake-viewer"
    try:
        run("chat", "a")
        responder.mode = "b"
        run("chat", "b")
        run("agent", "agent")
        run("python", "python")
    finally:
        if previous is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = previous
    return ViewerStore(store, root, runs)


def make_client(store: ViewerStore, base_url: str = BASE_URL, **config: Any) -> TestClient:
    """A test client of a viewer bound to 127.0.0.1:8765 (or as `config` says)."""
    settings: dict[str, Any] = {"host": HOST, "port": PORT, "author": "tester"}
    settings.update(config)
    app = create_app(ViewerConfig(store.path, **settings))
    return TestClient(app, base_url=base_url)


MODEL = "openai/fake-model"
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
SAME_ORIGIN = {"origin": BASE_URL}


def case_path(run_id: str, case_id: str, model: str = MODEL, epoch: int = 0) -> str:
    return f"/runs/{run_id}/case?" + urlencode({"case": case_id, "model": model, "epoch": epoch})


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "no CSRF field on the page"
    return match.group(1)


def annotate(
    client: TestClient,
    run_id: str,
    case_id: str,
    *,
    model: str = MODEL,
    epoch: int = 0,
    label: str = "incorrect",
    tags: tuple[str, ...] = (),
    note: str = "",
    csrf: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST the case page's annotation form (fetching the page for its CSRF token)."""
    if csrf is None:
        csrf = csrf_of(client.get(case_path(run_id, case_id, model, epoch)).text)
    form = [
        ("csrf", csrf),
        ("case", case_id),
        ("model", model),
        ("epoch", str(epoch)),
        ("label", label),
        ("note", note),
        *(("tag", t) for t in tags),
    ]
    return client.post(
        f"/runs/{run_id}/annotate",
        content=urlencode(form),
        headers={"content-type": "application/x-www-form-urlencoded", **(headers or SAME_ORIGIN)},
        follow_redirects=False,
    )
