"""Check a suite's models before a run writes anything: a provider litellm knows, the API key
variables set, the bundled local model installed; and remember the checks litellm passed, so
that a run whose every response is cached needs no litellm import."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from harness import local_llm
from harness.config import ModelConfig
from harness.errors import ConfigError
from harness.providers import is_local, litellm_module


def check_model(model: ModelConfig, *, where: str, checks_dir: Path | None = None) -> None:
    """Fail early (ConfigError) on an unknown provider or a missing API key variable.

    With `checks_dir` (the store's directory), a model string litellm has accepted before (same
    litellm version, same api_base) is not checked again: importing litellm costs ~3 s, which a
    run whose every response is cached never needs to pay. Only models whose key comes from
    `api_key_env` are remembered; for the others litellm itself tells which keys are missing."""
    if model.api_key_env and not os.environ.get(model.api_key_env):
        raise ConfigError(
            f"environment variable {model.api_key_env} (api_key_env of {model.label}) is not set",
            field=where,
        )
    if is_local(model.id):
        try:
            local_llm.model_path(model.id.split("/", 1)[1])
        except local_llm.LocalModelUnavailable as exc:
            raise ConfigError(str(exc), field=where) from None
        return
    if checks_dir and model.api_key_env and _AcceptedModels(checks_dir).has(model):
        return
    litellm = litellm_module()
    try:
        _, provider, _, _ = litellm.get_llm_provider(model=model.id, api_base=model.api_base)
    except Exception:
        raise ConfigError(
            f"unknown model {model.id!r}: litellm cannot tell its provider; use a litellm model "
            "string such as 'openai/gpt-4o-mini' or 'local/smollm2'",
            field=where,
        ) from None
    if model.api_key_env:
        return
    try:
        needed = litellm.validate_environment(model=model.id, api_base=model.api_base)
    except Exception:  # litellm cannot tell: let the call itself report
        return
    missing = [k for k in needed.get("missing_keys") or [] if not os.environ.get(k)]
    if provider == "openai" and not os.environ.get("OPENAI_API_KEY"):
        missing = missing or ["OPENAI_API_KEY"]
    if missing:
        raise ConfigError(
            f"{model.label} needs {', '.join(missing)} in the environment "
            "(or name the variable holding its key with api_key_env)",
            field=where,
        )


def remember_checked_models(models: list[ModelConfig], checks_dir: Path) -> None:
    """Once a run is under way (its store open): remember the models `check_model` accepted
    with litellm, so the next run's check needs no litellm import (see check_model)."""
    remote = [m for m in models if m.api_key_env and not is_local(m.id)]
    if remote:
        _AcceptedModels(checks_dir).add(remote)


@functools.cache
def _litellm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litellm")
    except PackageNotFoundError:
        return ""


class _AcceptedModels:
    """Model strings litellm accepted, per litellm version: `<store dir>/litellm-models.json`."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "litellm-models.json"
        self.version = _litellm_version()
        self.known = self._read()

    @staticmethod
    def _key(model: ModelConfig) -> str:
        return f"{model.id} {model.api_base or ''}"

    def _read(self) -> set[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        if not isinstance(data, dict) or data.get("litellm") != self.version:
            return set()
        models = data.get("models")
        return {str(m) for m in models} if isinstance(models, list) else set()

    def has(self, model: ModelConfig) -> bool:
        return bool(self.version) and self._key(model) in self.known

    def add(self, models: list[ModelConfig]) -> None:
        merged = self.known | {self._key(m) for m in models}
        if not self.version or merged == self.known or not self.path.parent.is_dir():
            return
        text = json.dumps({"litellm": self.version, "models": sorted(merged)}, indent=1)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:  # a read-only store directory: check again next time
            tmp.unlink(missing_ok=True)
