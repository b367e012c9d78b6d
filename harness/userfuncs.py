"""Load user functions named `module:function`, only from inside the project directory."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import ConfigError


def load_function(ref: str, project_dir: Path, *, where: str) -> Callable[..., Any]:
    """Import `module:function` from the project directory (never from elsewhere on sys.path).

    A module that resolves outside `project_dir` (e.g. an installed package of the same name)
    is refused: suite files must not be able to run arbitrary installed code.
    """
    module_name, sep, func_name = ref.partition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"expected 'module:function', got {ref!r}", field=where)
    project_dir = project_dir.resolve()
    root = str(project_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}", field=where) from None
    if spec is None or spec.origin is None:
        raise ConfigError(f"module {module_name!r} not found in {project_dir}", field=where)
    # Built-in and frozen modules (os, sys, ...) have no file: origin is "built-in"/"frozen",
    # which must not resolve against the working directory as if it were a project file.
    origin = Path(spec.origin).resolve() if spec.has_location else spec.origin
    if not isinstance(origin, Path) or not origin.is_relative_to(project_dir):
        raise ConfigError(
            f"module {module_name!r} resolves to {origin}, outside the project directory "
            f"{project_dir}; python scorers and targets run only from the project",
            field=where,
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # user code: any import failure is a config error
        raise ConfigError(f"importing {module_name!r} failed: {exc!r}", field=where) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"{module_name!r} has no function {func_name!r}", field=where)
    return func
