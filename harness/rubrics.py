"""LLM-judge rubrics: the Rubric model, its version, and resolving a reference to a rubric file.

A reference such as `correctness` resolves to `rubrics/correctness.yaml` in the project first,
then to the built-in rubric of that name (`harness/rubrics/*.yaml`). A reference ending in
`.yaml` is a path relative to the file that names it. `name@version` pins the content: the
rubric found must have that version, so a suite never silently judges with an edited rubric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.artifacts import ArtifactKind, register_kind
from harness.config import validate
from harness.errors import ConfigError
from harness.templates import compile_template, variables
from harness.versions import short_version
from harness.yamlfile import load_yaml

Section = Literal["input", "output", "reference", "context"]
PASS_FAIL = "pass-fail"
BUILTIN_PREFIX = "builtin:"
DEFAULT_USES: tuple[Section, ...] = ("input", "output")
_VERSION = re.compile(r"^[0-9a-f]{8}$")


class Scale(BaseModel):
    """A verdict scale: pass-fail (scores 0 or 1) or integers min..max passing at `pass`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    min: int = 0
    max: int = 1
    pass_at: int = Field(default=1, alias="pass")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data == PASS_FAIL:
            return {"min": 0, "max": 1, "pass": 1}
        if isinstance(data, str):
            raise ValueError(f"scale must be {PASS_FAIL!r} or {{min: 1, max: 5, pass: 4}}")
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if not self.min < self.max:
            raise ValueError(f"scale min ({self.min}) must be below max ({self.max})")
        if not self.min <= self.pass_at <= self.max:
            raise ValueError(f"scale pass ({self.pass_at}) must lie in {self.min}..{self.max}")
        if self.max - self.min > 100:
            raise ValueError("a scale may span at most 100 points")
        return self

    @property
    def is_pass_fail(self) -> bool:
        return (self.min, self.max, self.pass_at) == (0, 1, 1)

    def describe(self) -> str:
        """The scale in words, for the judge prompt."""
        if self.is_pass_fail:
            return "1 if the output meets the criteria, 0 if it does not"
        return (
            f"an integer from {self.min} (worst) to {self.max} (best); "
            f"{self.pass_at} or more means the output meets the criteria"
        )

    def dump(self) -> str | dict[str, int]:
        return (
            PASS_FAIL
            if self.is_pass_fail
            else {"min": self.min, "max": self.max, "pass": self.pass_at}
        )


class Example(BaseModel):
    """One graded example shown to the judge (few-shot)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str | None = None
    output: str
    reference: str | None = None
    context: str | None = None
    score: int
    reason: str


class Rubric(BaseModel):
    """rubrics/<name>.yaml: what the judge checks, on which scale, seeing which sections."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    criteria: str = Field(min_length=1)
    scale: Scale = Field(default_factory=Scale)
    uses: list[Section] = Field(default_factory=lambda: list(DEFAULT_USES))
    examples: list[Example] = Field(default_factory=list)
    template: str | None = None

    @field_validator("scale", mode="before")
    @classmethod
    def _scale(cls, value: Any) -> Any:
        return Scale.model_validate(value) if isinstance(value, str) else value

    @field_validator("uses")
    @classmethod
    def _uses_output(cls, value: list[Section]) -> list[Section]:
        if "output" not in value:
            raise ValueError("'uses' must include 'output': the judge grades an output")
        if len(set(value)) != len(value):
            raise ValueError("'uses' lists a section twice")
        return value

    @model_validator(mode="after")
    def _examples_in_scale(self) -> Rubric:
        for index, example in enumerate(self.examples):
            if not self.scale.min <= example.score <= self.scale.max:
                raise ValueError(
                    f"examples[{index}].score {example.score} is outside the scale "
                    f"{self.scale.min}..{self.scale.max}"
                )
        return self

    def content(self) -> dict[str, Any]:
        """Everything that shapes a verdict (not the description): what the version hashes."""
        data = self.model_dump(mode="json", exclude={"description"}, exclude_none=True)
        data["scale"] = self.scale.dump()
        return data


@dataclass(frozen=True)
class LoadedRubric:
    """A rubric as a judge uses it: content, version, and where it came from."""

    rubric: Rubric
    version: str
    source: str

    @property
    def name(self) -> str:
        return self.rubric.name

    @property
    def ref(self) -> str:
        """`name@version`: the pinned reference recorded in a run's lineage."""
        return f"{self.rubric.name}@{self.version}"


def builtin_dir() -> Path:
    """The directory of the built-in rubrics shipped with the harness."""
    return Path(str(resources.files("harness") / "rubrics"))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def rubric_from_file(path: Path, *, display: str | None = None) -> LoadedRubric:
    """Load and validate a rubric file; its template must compile and use `output`."""
    doc = load_yaml(path, display=display)
    rubric = validate(doc, Rubric)
    if rubric.template is not None:
        try:
            compile_template(rubric.template)
        except ConfigError as exc:
            raise doc.error(exc.message, ("template",)) from None
        if "output" not in variables(rubric.template):
            raise doc.error(
                "the template must show the output under judgment ({{ output }})", ("template",)
            )
    return LoadedRubric(rubric, short_version(rubric.content()), str(doc.path))


def find_rubric(name: str, project_dir: Path, base_dir: Path | None = None) -> tuple[Path, str]:
    """Where a rubric reference points: (path, how to show it; `builtin:<name>` for a built-in).
    Raises ConfigError when there is no such rubric."""
    if name.endswith((".yaml", ".yml")):
        path = ((base_dir or project_dir) / name).resolve()
        if not path.exists():
            raise ConfigError(f"rubric file {name!r} not found")
        return path, name
    project = project_dir / "rubrics" / f"{name}.yaml"
    if project.exists():
        return project, str(Path("rubrics") / f"{name}.yaml")
    builtin = builtin_dir() / f"{name}.yaml"
    if builtin.exists():
        return builtin, f"{BUILTIN_PREFIX}{name}"
    known = sorted({*builtin_names(), *(p.stem for p in (project_dir / "rubrics").glob("*.yaml"))})
    raise ConfigError(
        f"unknown rubric {name!r} (looked in rubrics/ and the built-ins); known: {', '.join(known)}"
    )


def load_rubric(ref: str, project_dir: Path, base_dir: Path | None = None) -> LoadedRubric:
    """Resolve `name`, `name@version` or `path.yaml` to a loaded rubric."""
    name, _, pinned = ref.partition("@")
    path, shown = find_rubric(name, project_dir, base_dir)
    if shown.startswith(BUILTIN_PREFIX):
        loaded = rubric_from_file(path)
        loaded = LoadedRubric(loaded.rubric, loaded.version, shown)
    else:
        loaded = rubric_from_file(path, display=shown)
    if not name.endswith((".yaml", ".yml")) and loaded.name != name:
        raise ConfigError(f"{shown} is named {loaded.name!r}, not {name!r}; make them match")
    if pinned:
        if not _VERSION.match(pinned):
            raise ConfigError(f"rubric {ref!r}: only a version (8 hex digits) may follow '@'")
        if pinned != loaded.version:
            raise ConfigError(
                f"rubric {name!r} is at version {loaded.version}, but {ref!r} "
                "was asked for (the rubric changed since it was pinned)"
            )
    return loaded


def _registry_load(path: Path, shown: str) -> tuple[str, Any]:
    loaded = rubric_from_file(path, display=shown)
    return loaded.name, loaded.rubric.content()


# The version registry reads rubric working copies through this loader, so a registered
# version and the version a judge records are the same hash of the same canonical content.
register_kind(ArtifactKind("rubric", "rubrics", _registry_load, lambda content: content))
