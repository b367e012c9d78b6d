"""Load a suite file and everything it names, validating all of it before any model call."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.agent import AgentTarget, Tool
from harness.cases import Case
from harness.config import ModelConfig, SuiteConfig, validate
from harness.datasets import LoadedDataset, load_dataset, select_cases
from harness.errors import ConfigError
from harness.prompts import Prompt, prompt_file, prompt_from_file, split_ref
from harness.providers import ClientPool
from harness.rag import config as _rag_config  # noqa: F401 (registers the retrieval artifact kind)
from harness.scorers import Scorer, ScorerEnv, registry
from harness.targets import ChatTarget, PythonTarget, ReplayTarget, Target
from harness.userfuncs import load_function
from harness.versions import short_version
from harness.yamlfile import YamlDoc, load_yaml, parse_loc

if TYPE_CHECKING:  # loaded for rag and retrieval suites only (numpy, the index)
    from harness.rag_target import RetrievalTarget


@dataclass
class Selection:
    """Which cases of the dataset a run uses (command-line options)."""

    limit: int | None = None
    sample: int | None = None
    seed: int | None = None
    filters: list[str] = field(default_factory=list)
    shard: tuple[int, int] | None = None  # (i, n), 1-based: this job runs shard i of n

    def as_dict(self) -> dict[str, Any]:
        selected: dict[str, Any] = {
            "limit": self.limit,
            "sample": self.sample,
            "seed": self.seed,
            "filters": list(self.filters),
        }
        if self.shard is not None:  # only when set: unsharded manifests keep their shape
            selected["shard"] = list(self.shard)
        return selected


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4): shard i of n, 1 <= i <= n."""
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = (0, 0)
    if not sep or not 1 <= shard[0] <= shard[1]:
        raise ConfigError(
            f"expected i/n with 1 <= i <= n (e.g. 2/4), got {text!r}", field="--shard"
        )
    return shard


def in_shard(case_id: str, shard: tuple[int, int]) -> bool:
    """Whether a case belongs to shard (i, n): a stable hash of its id, the same on every
    machine and Python process (unlike hash())."""
    digest = hashlib.sha256(case_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shard[1] == shard[0] - 1


@dataclass
class Suite:
    """A fully loaded, validated suite: ready to run."""

    config: SuiteConfig
    path: Path
    display_path: str
    project_dir: Path
    version: str
    dataset: LoadedDataset
    cases: list[Case]
    prompt: Prompt | None
    target: Target
    models: list[ModelConfig]
    scorers: list[Scorer]
    doc: YamlDoc
    clients: ClientPool

    @property
    def name(self) -> str:
        return self.config.name


def _relative(path: Path, project_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(project_dir.resolve()))
    except ValueError:
        return str(path)


def _scorer_error(doc: YamlDoc, exc: ConfigError) -> ConfigError:
    loc = parse_loc(exc.field or "")
    return ConfigError(
        exc.message, path=exc.path or str(doc.path), line=doc.line_of(loc), field=exc.field
    )


def _retrieval_target(
    config: SuiteConfig, prompt: Prompt | None, doc: YamlDoc, project_dir: Path, suite_dir: Path
) -> RetrievalTarget:
    """A rag or retrieval target with its retrieval config loaded (its index opens later)."""
    from harness.rag_target import RagTarget, RetrievalTarget, load_source

    spec = config.target
    try:
        source = load_source(
            spec.retrieval or "", top_k=spec.top_k, project_dir=project_dir, suite_dir=suite_dir
        )
    except ConfigError as exc:
        if exc.path is not None:  # an error inside the retrieval file names that file
            raise
        raise doc.error(exc.message, ("target", "retrieval")) from None
    if spec.type == "retrieval":
        return RetrievalTarget(source, query=spec.query, filters=spec.filters)
    assert prompt is not None
    return RagTarget(prompt, source, query=spec.query, filters=spec.filters)


def load_suite(
    path: Path,
    *,
    project_dir: Path,
    selection: Selection | None = None,
    model_ids: list[str] | None = None,
    resolve_prompt: Any = None,
    check_cases: bool = True,
) -> Suite:
    """Load and validate the suite at `path`. Raises ConfigError; writes nothing anywhere.

    `resolve_prompt(name, selector) -> Prompt` resolves `name@version` / `name@label`
    references from the version registry; without it only working copies resolve.
    `check_cases=False` skips rendering every case up front (a run's worker process: the
    parent already did, ~20 µs a case).
    """
    display = _relative(path, project_dir)
    doc = load_yaml(path, display=display)
    config = validate(doc, SuiteConfig)
    suite_dir = path.resolve().parent
    selection = selection or Selection()

    models = list(config.models)
    if model_ids:
        # --model replaces the suite's list; an id the suite configures keeps its settings.
        known = {m.label: m for m in models} | {m.id: m for m in models}
        models = [known.get(model_id) or ModelConfig(id=model_id) for model_id in model_ids]

    dataset = load_dataset(config.dataset, suite_dir, suite_path=display)
    seed = selection.seed if selection.seed is not None else config.seed
    cases = select_cases(
        dataset.cases,
        limit=selection.limit,
        sample=selection.sample,
        seed=seed,
        filters=selection.filters,
    )
    if not cases:
        raise ConfigError(
            "no cases selected (check --filter / --limit)", path=display, field="dataset"
        )
    if selection.shard is not None:
        shard = selection.shard
        cases = [case for case in cases if in_shard(case.id, shard)]
        if not cases:
            raise ConfigError(
                f"shard {shard[0]}/{shard[1]} holds none of the selected cases "
                "(fewer cases than shards?)",
                path=display,
                field="--shard",
            )

    prompt: Prompt | None = None
    if config.prompt:
        name, selector = split_ref(config.prompt)
        if selector is not None:
            if resolve_prompt is None:
                raise doc.error(
                    f"cannot resolve {config.prompt!r} without a run store", ("prompt",)
                )
            try:
                prompt = resolve_prompt(name, selector)
            except ConfigError as exc:
                if exc.path is not None:  # an error inside a prompt file names that file
                    raise
                raise doc.error(exc.message, ("prompt",)) from None
        else:
            file, shown = prompt_file(name, project_dir, suite_dir)
            if not file.exists():
                raise doc.error(f"prompt {name!r} not found (looked for {shown})", ("prompt",))
            prompt = prompt_from_file(file, display=shown)

    target: Target
    retrieval: RetrievalTarget | None = None
    if config.target.type == "chat":
        assert prompt is not None
        target = ChatTarget(prompt)
    elif config.target.type == "replay":
        target = ReplayTarget(config.target.output_field, dataset.source)
    elif config.target.type == "agent":
        assert prompt is not None
        tools = []
        for index, ref in enumerate(config.target.tools):
            try:
                tools.append(
                    Tool.from_function(
                        load_function(ref, project_dir, where=f"target.tools[{index}]"),
                        where=f"target.tools[{index}]",
                    )
                )
            except ConfigError as exc:
                raise doc.error(exc.message, ("target", "tools", index)) from None
        target = AgentTarget(prompt, tools, config.target.max_steps)
    elif config.target.type in ("rag", "retrieval"):
        target = retrieval = _retrieval_target(config, prompt, doc, project_dir, suite_dir)
    else:
        try:
            function = load_function(
                config.target.function or "", project_dir, where="target.function"
            )
        except ConfigError as exc:
            raise doc.error(exc.message, ("target", "function")) from None
        target = PythonTarget(function)

    clients = ClientPool()
    services: dict[str, Any] = {"clients": clients}
    if retrieval is not None:  # retrieval scorers read its top_k and embedder
        services["retrieval"] = retrieval.source
    env = ScorerEnv(project_dir=project_dir, base_dir=suite_dir, services=services)
    scorers: list[Scorer] = []
    for index, spec in enumerate(config.scorers):
        try:
            scorers.append(registry.build(spec, env, where=f"scorers[{index}]"))
        except ConfigError as exc:
            raise _scorer_error(doc, exc) from None
    names = [s.name for s in scorers]
    for index, name in enumerate(names):
        if names.index(name) != index:
            raise doc.error(
                f"two scorers are named {name!r}; give one a distinct 'name'", ("scorers", index)
            )
    for key in config.thresholds:
        if key not in names:
            raise doc.error(
                f"threshold for unknown scorer {key!r}; scorers: {', '.join(names)}",
                ("thresholds", key),
            )

    # Every case must render before any model is called: a missing variable is a config error.
    for case in cases if check_cases else ():
        try:
            target.check_case(case)
            vars = case.template_vars()
            for scorer in scorers:
                scorer.check_case(vars)
        except ConfigError as exc:
            raise ConfigError(
                exc.message, path=exc.path or dataset.source, field=exc.field
            ) from None

    suite_content = config.model_dump(mode="json", exclude={"description"}, exclude_none=True)
    return Suite(
        config=config,
        path=path,
        display_path=display,
        project_dir=project_dir,
        version=short_version(suite_content),
        dataset=dataset,
        cases=cases,
        prompt=prompt,
        target=target,
        models=models,
        scorers=scorers,
        doc=doc,
        clients=clients,
    )
