"""Package rules for tracing: layering, cheap import, names only in conventions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tracing
from tracing import conventions

PACKAGE = Path(tracing.__file__).parent
REPO = PACKAGE.parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_pipeline_touches_the_sdk_and_nothing_imports_harness() -> None:
    for path in PACKAGE.glob("*.py"):
        modules = imported_modules(path)
        assert not any(m == "harness" or m.startswith("harness.") for m in modules), path
        if path.name not in ("setup.py", "lean.py"):  # the pipeline and its own tracer
            assert not any(m.startswith("opentelemetry.sdk") for m in modules), path
        if path.name != "setup.py":
            assert not any(m.startswith("opentelemetry.exporter") for m in modules), path


def test_conventions_hold_names_only() -> None:
    assert imported_modules(PACKAGE / "conventions.py") == {"typing"}
    values = {v for k, v in vars(conventions).items() if k.isupper() and isinstance(v, str)}
    deprecated = {"gen_ai.system", "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"}
    assert not values & deprecated
    assert all(
        isinstance(v, (str, frozenset, tuple)) for k, v in vars(conventions).items() if k.isupper()
    )


def test_every_public_name_is_exported() -> None:
    assert sorted(tracing.__all__) == sorted(set(tracing.__all__))
    for name in tracing.__all__:
        assert hasattr(tracing, name), name
    assert callable(tracing.setup)
    assert conventions.GEN_AI_PROVIDER_NAME == "gen_ai.provider.name"


def test_import_is_cheap_and_does_not_load_the_otlp_exporter() -> None:
    code = (
        "import sys, tracing; "
        "heavy = [m for m in sys.modules if m.startswith(('opentelemetry.exporter', "
        "'google.protobuf', 'requests', 'harness', 'litellm'))]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
