"""Resolve prompt references to versioned prompt files and render their chat messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cases import Case
from harness.config import PromptConfig, validate
from harness.errors import ConfigError
from harness.templates import compile_template, render
from harness.versions import short_version
from harness.yamlfile import load_yaml


@dataclass(frozen=True)
class Prompt:
    """A prompt as a run uses it: its content, its version, and where it came from."""

    config: PromptConfig
    version: str
    source: str

    @property
    def name(self) -> str:
        return self.config.name

    def content(self) -> dict[str, Any]:
        """The canonical content that the version hashes."""
        return prompt_content(self.config)

    def render(self, case: Case) -> list[dict[str, Any]]:
        """The chat messages for `case`; a missing variable is a ConfigError naming the case."""
        context = case.template_vars()
        messages = []
        for index, message in enumerate(self.config.messages):
            where = f"case {case.id!r}: prompt {self.name} messages[{index}]"
            messages.append(
                {"role": message.role, "content": render(message.content, context, where=where)}
            )
        return messages

    def request_options(self) -> dict[str, Any]:
        """tools / tool_choice / response_format to send with every call (when set)."""
        options: dict[str, Any] = {}
        if self.config.tools is not None:
            options["tools"] = self.config.tools
        if self.config.tool_choice is not None:
            options["tool_choice"] = self.config.tool_choice
        if self.config.response_format is not None:
            options["response_format"] = self.config.response_format
        return options


def prompt_content(config: PromptConfig) -> dict[str, Any]:
    """Everything that shapes behaviour (not the description): what a version is the hash of."""
    return config.model_dump(exclude={"description"}, exclude_none=True)


def prompt_from_file(path: Path, *, display: str | None = None) -> Prompt:
    """Load and validate a prompt file; compile its templates to catch syntax errors now."""
    doc = load_yaml(path, display=display)
    config = validate(doc, PromptConfig)
    for index, message in enumerate(config.messages):
        try:
            compile_template(message.content)
        except ConfigError as exc:
            raise doc.error(exc.message, ("messages", index, "content")) from None
    return Prompt(
        config=config, version=short_version(prompt_content(config)), source=str(doc.path)
    )


def split_ref(ref: str) -> tuple[str, str | None]:
    """'qa@production' -> ('qa', 'production'); 'qa' -> ('qa', None)."""
    name, sep, selector = ref.partition("@")
    return name, (selector or None) if sep else None


def prompt_file(ref_name: str, project_dir: Path, suite_dir: Path) -> tuple[Path, str]:
    """Where a prompt reference points: a path ending in .yaml (relative to the suite file),
    else prompts/<name>.yaml in the project. Returns (path, how to show it)."""
    if ref_name.endswith((".yaml", ".yml")):
        path = (suite_dir / ref_name).resolve()
        return path, ref_name
    path = project_dir / "prompts" / f"{ref_name}.yaml"
    return path, str(Path("prompts") / f"{ref_name}.yaml")
