"""What changed between two runs' lineage, grouped by artifact, with content diffs.

`lineage_diff(a, b)` compares two manifests and returns exactly the artifacts that differ, in a
fixed order: suite, dataset, selection, prompt, retrieval, index, rubric, target,
models/params, scorers, thresholds, code, packages, then any manifest key this module does not
know yet. Not compared (they describe how a run was driven, not what shaped its results):
run id, start time, command line, cache mode, max error rate, the file paths of suite and
dataset, and model pacing (concurrency, rate limits, timeouts, retries, prices).
A suite's version covers its models, scorers, thresholds...; the suite is reported only for
changes no other group explains (its name, or settings such as a prompt reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts import content_yaml, open_existing, to_yaml, unified_diff
from harness.registry import get_version
from harness.runfile import LINEAGE_KEY, read_run_file
from harness.runrefs import LoadedRun, resolve_pair

ContentLookup = Callable[[str, Any, Any], Any]  # (kind, name, version) -> content or None

IGNORED = {"schema", "run_id", "started_at", "command", "cache", "max_error_rate"}
MODEL_KEYS = ("id", "name", "params", "api_base", "api_version", "litellm")
EXTRA_KINDS = ("retrieval", "index", "rubric")
# Suite fields and the group that reports a change in them.
SUITE_COVERED = {
    "dataset": "dataset",
    "prompt": "prompt",
    "target": "target",
    "models": "models/params",
    "scorers": "scorers",
    "thresholds": "thresholds",
    "repeat": "selection",
    "seed": "selection",
}


@dataclass
class ArtifactChange:
    """One artifact that differs: a one-line summary, both values, and a unified diff."""

    artifact: str
    summary: str
    before: Any
    after: Any
    diff: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return (
        to_yaml(value).strip().replace("\n", " ") if isinstance(value, dict | list) else str(value)
    )


def _key_changes(before: dict[str, Any], after: dict[str, Any]) -> str:
    parts = [
        f"{key}: {_short(before.get(key))} -> {_short(after.get(key))}"
        for key in sorted(before.keys() | after.keys(), key=str)
        if before.get(key) != after.get(key)
    ]
    return "; ".join(parts)


def _yaml_diff(before: Any, after: Any, what: str) -> str:
    return unified_diff(to_yaml(before), to_yaml(after), f"a/{what}", f"b/{what}")


def _ident(entry: dict[str, Any] | None) -> tuple[Any, Any] | None:
    return None if entry is None else (entry.get("name"), entry.get("version"))


def _versioned(name: str | None, version: str | None) -> str:
    return f"{name}@{version}" if version else "-"


class _Differ:
    def __init__(self, a: dict[str, Any], b: dict[str, Any], contents: ContentLookup) -> None:
        self.a, self.b, self.contents = a, b, contents
        self.changes: list[ArtifactChange] = []

    def add(self, artifact: str, summary: str, before: Any, after: Any, diff: str = "") -> None:
        self.changes.append(ArtifactChange(artifact, summary, before, after, diff))

    def plain(self, artifact: str, before: Any, after: Any) -> None:
        """A settings group: report which keys changed, with a YAML diff."""
        if before == after:
            return
        if isinstance(before, dict) and isinstance(after, dict):
            summary = _key_changes(before, after)
        else:
            summary = f"{_short(before)} -> {_short(after)}"
        self.add(artifact, summary, before, after, _yaml_diff(before, after, artifact))

    def dataset(self) -> None:
        a, b = self.a.get("dataset") or {}, self.b.get("dataset") or {}
        before = {"version": a.get("version"), "rows": a.get("rows")}
        after = {"version": b.get("version"), "rows": b.get("rows")}
        if before != after:
            summary = (
                f"{a.get('version')} ({a.get('rows')} rows, {a.get('source')}) -> "
                f"{b.get('version')} ({b.get('rows')} rows, {b.get('source')})"
            )
            self.add(
                "dataset",
                summary,
                {**before, "source": a.get("source")},
                {**after, "source": b.get("source")},
            )

    def selection(self) -> None:
        def pick(m: dict[str, Any]) -> dict[str, Any]:
            data = m.get("dataset") or {}
            return {
                **(data.get("selection") or {}),
                "selected": data.get("selected"),
                "repeat": m.get("repeat"),
                "seed": m.get("seed"),
            }

        self.plain("selection", pick(self.a), pick(self.b))

    def versioned(
        self, kind: str, artifact: str, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> None:
        """An artifact with name, version and content (a prompt, retrieval config, ...)."""
        if _ident(before) == _ident(after):
            return
        old, new = before or {}, after or {}
        old_text = content_yaml(kind, old["content"]) if old.get("content") is not None else ""
        new_text = content_yaml(kind, new["content"]) if new.get("content") is not None else ""
        old_ref = _versioned(old.get("name"), old.get("version"))
        new_ref = _versioned(new.get("name"), new.get("version"))
        diff = unified_diff(old_text, new_text, f"a/{old_ref}", f"b/{new_ref}")
        self.add(artifact, f"{old_ref} -> {new_ref}", before, after, diff)

    def extra_kind(self, kind: str) -> None:
        def by_name(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
            return {e["name"]: e for e in ((m.get("artifacts") or {}).get(kind) or [])}

        old, new = by_name(self.a), by_name(self.b)
        for name in sorted(old.keys() | new.keys()):
            self.versioned(kind, kind, old.get(name), new.get(name))

    def models(self) -> None:
        def pick(m: dict[str, Any]) -> dict[str, Any]:
            return {
                str(x.get("name") or x.get("id")): {k: x[k] for k in MODEL_KEYS if k in x}
                for x in m.get("models") or []
            }

        before, after = pick(self.a), pick(self.b)
        if before == after:
            return
        parts = []
        for label in sorted(before.keys() | after.keys()):
            old, new = before.get(label), after.get(label)
            if old is None or new is None:
                parts.append(f"{label} {'added' if old is None else 'removed'}")
            elif old != new:
                parts.append(f"{label} {_key_changes(old, new)}")
        self.add(
            "models/params", "; ".join(parts), before, after, _yaml_diff(before, after, "models")
        )

    def code(self) -> None:
        a, b = self.a.get("git") or {}, self.b.get("git") or {}
        if a == b:
            return

        def text(git: dict[str, Any]) -> str:
            commit = git.get("commit")
            return "-" if commit is None else commit[:10] + (" (dirty)" if git.get("dirty") else "")

        self.add("code", f"{text(a)} -> {text(b)}", a, b)

    def packages(self) -> None:
        def pick(m: dict[str, Any]) -> dict[str, Any]:
            env = m.get("environment") or {}
            return {
                "harness": env.get("harness"),
                "python": env.get("python"),
                "platform": env.get("platform"),
                **(env.get("packages") or {}),
            }

        self.plain("packages", pick(self.a), pick(self.b))

    def suite(self) -> None:
        a, b = self.a.get("suite") or {}, self.b.get("suite") or {}
        if (a.get("name"), a.get("version")) == (b.get("name"), b.get("version")):
            return
        old_ref, new_ref = (
            _versioned(a.get("name"), a.get("version")),
            _versioned(b.get("name"), b.get("version")),
        )
        old = self.contents("suite", a.get("name"), a.get("version"))
        new = self.contents("suite", b.get("name"), b.get("version"))
        reported = {c.artifact for c in self.changes}
        if a.get("name") == b.get("name"):
            if old is None or new is None:
                if reported:  # other groups explain it; without content, say no more
                    return
                self.add("suite", f"{old_ref} -> {new_ref}", a, b)
                return
            old, new = self._residual(old, new, reported), self._residual(new, old, reported)
            if old == new:
                return
        diff = (
            ""
            if old is None or new is None
            else unified_diff(
                content_yaml("suite", old),
                content_yaml("suite", new),
                f"a/{old_ref}",
                f"b/{new_ref}",
            )
        )
        self.add("suite", f"{old_ref} -> {new_ref}", a, b, diff)

    @staticmethod
    def _residual(
        content: dict[str, Any], other: dict[str, Any], reported: set[str]
    ) -> dict[str, Any]:
        """Suite content without the fields whose change another group already reports."""
        return {
            k: v
            for k, v in content.items()
            if not (SUITE_COVERED.get(k) in reported and v != other.get(k))
        }

    def others(self) -> None:
        known = IGNORED | {
            "suite",
            "dataset",
            "prompt",
            "artifacts",
            "target",
            "models",
            "scorers",
            "thresholds",
            "repeat",
            "seed",
            "git",
            "environment",
        }
        for key in sorted((self.a.keys() | self.b.keys()) - known):
            self.plain(key, self.a.get(key), self.b.get(key))


def lineage_diff(
    a: dict[str, Any], b: dict[str, Any], contents: ContentLookup | None = None
) -> list[ArtifactChange]:
    """The artifacts that differ between manifests `a` and `b`, in a fixed order.

    `contents(kind, name, version)` finds registered content (used for the suite's diff).
    """
    differ = _Differ(a, b, contents or (lambda kind, name, version: None))
    differ.dataset()
    differ.selection()
    differ.versioned("prompt", "prompt", a.get("prompt"), b.get("prompt"))
    for kind in EXTRA_KINDS:
        differ.extra_kind(kind)
    differ.plain("target", a.get("target"), b.get("target"))
    differ.models()
    differ.plain("scorers", a.get("scorers"), b.get("scorers"))
    differ.plain("thresholds", a.get("thresholds") or {}, b.get("thresholds") or {})
    differ.code()
    differ.packages()
    differ.others()
    differ.suite()  # last: it reports only what the groups above do not explain
    order = [
        "suite",
        "dataset",
        "selection",
        "prompt",
        *EXTRA_KINDS,
        "target",
        "models/params",
        "scorers",
        "thresholds",
        "code",
        "packages",
    ]
    rank = {name: index for index, name in enumerate(order)}
    return sorted(differ.changes, key=lambda c: rank.get(c.artifact, len(order)))


@dataclass
class RunDiff:
    """`evals diff`: the two runs and the artifacts that differ between them."""

    a: LoadedRun
    b: LoadedRun
    changes: list[ArtifactChange]

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": {"id": self.a.id, "source": self.a.source},
            "b": {"id": self.b.id, "source": self.b.source},
            "changes": [c.as_dict() for c in self.changes],
        }


def registered_contents(store_path: Path, runs: list[LoadedRun]) -> ContentLookup:
    """Find content in the store's registry, else in the runs' run-file lineage blocks (read
    only when asked: most diffs never need them)."""
    cache: dict[tuple[str, str, str], Any] = {}
    loaded = False

    def lookup(kind: str, name: str, version: str) -> Any:
        nonlocal loaded
        if not loaded:
            loaded = True
            for run in runs:
                if run.source != "store":
                    header, _ = read_run_file(Path(run.source))
                    for item in (header.get(LINEAGE_KEY) or {}).get("versions") or []:
                        cache[(item["kind"], item["name"], item["version"])] = item["content"]
        if (kind, name, version) in cache:
            return cache[(kind, name, version)]
        store = open_existing(store_path)
        if store is None:
            return None
        with store:
            record = get_version(store, kind, name, version)
        return None if record is None else record.content

    return lookup


def diff_runs(ref_a: str, ref_b: str, *, store_path: Path, project_dir: Path) -> RunDiff:
    """Load two runs (ids, prefixes, last~N, run files, baseline) and diff their lineage."""
    a, b = resolve_pair(ref_a, ref_b, store_path=store_path, project_dir=project_dir)
    contents = registered_contents(store_path, [a, b])
    return RunDiff(a, b, lineage_diff(a.manifest, b.manifest, contents))
