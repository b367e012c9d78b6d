"""A run's manifest: every version, setting and environment fact that shaped its results."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import __version__
from harness.config import SECRET_PATTERN

MANIFEST_SCHEMA = 1
KEY_PACKAGES = (
    "litellm",
    "openai",
    "chromadb",
    "sentence-transformers",
    "llama-cpp-python",
    "opentelemetry-sdk",
    "pydantic",
    "torch",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change results (no imports needed)."""
    versions: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(cwd: Path) -> dict[str, Any]:
    """The commit of the working directory and whether the tree had uncommitted changes."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def environment() -> dict[str, Any]:
    return {
        "harness": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "packages": package_versions(),
    }


def command_line(argv: list[str] | None = None) -> list[str]:
    """The command that started the run (values that look like secrets are masked)."""
    args = list(sys.argv if argv is None else argv)
    if args:
        args[0] = Path(args[0]).name
    return [SECRET_PATTERN.sub("[REDACTED]", a) for a in args]


def now() -> float:
    return time.time()
