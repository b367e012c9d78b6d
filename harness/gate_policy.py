"""Load a gate policy: a suite's `gate:` block, command-line overrides, judge calibrations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.calibrate import latest_kappa
from harness.compare import OVERALL
from harness.config import GatePolicy, SuiteConfig, validate
from harness.errors import ConfigError
from harness.store import Store
from harness.yamlfile import load_yaml

CALIBRATION_DIR = Path("reports") / "calibration"

# (a judge scorer's config from the manifest) -> kappa of its calibration record, or None
KappaLookup = Callable[[dict[str, Any]], float | None]


def load_policy(suite_path: Path, *, display: str | None = None) -> tuple[GatePolicy, str]:
    """The `gate:` block of a suite file (defaults when absent) and the suite's name.

    Metric names in `max_drop` are checked against the suite's scorers, with file:line errors.
    """
    doc = load_yaml(suite_path, display=display)
    config = validate(doc, SuiteConfig)
    policy = config.gate or GatePolicy()
    if isinstance(policy.max_drop, dict):
        known = {str(s.get("name") or s.get("type")) for s in config.scorers}
        for key in policy.max_drop:
            if key not in known | {OVERALL, "default"}:
                raise doc.error(
                    f"max_drop for unknown metric {key!r}; metrics: "
                    f"{', '.join(sorted(known | {OVERALL, 'default'}))}",
                    ("gate", "max_drop", key),
                )
    return policy, config.name


def with_overrides(policy: GatePolicy, overrides: dict[str, Any]) -> GatePolicy:
    """The policy with command-line values (None = not given) laid over it, validated."""
    given = {k: v for k, v in overrides.items() if v is not None and v != []}
    if "critical" in given:
        given["critical"] = [*policy.critical, *given["critical"]]
    try:
        return GatePolicy.model_validate({**policy.model_dump(), **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).replace("_", "-") if first["loc"] else "gate"
        raise ConfigError(
            str(first["msg"]).removeprefix("Value error, "), field=f"--{name}"
        ) from None


def file_kappa_lookup(project_dir: Path) -> KappaLookup:
    """Read calibration records from reports/calibration/*.json (an object or a list of them,
    each with rubric, judge, kappa and optionally rubric_version and created_at)."""
    records: list[dict[str, Any]] = []
    folder = project_dir / CALIBRATION_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"unreadable calibration record: {exc}", path=path) from None
        records.extend(
            r for r in (data if isinstance(data, list) else [data]) if isinstance(r, dict)
        )

    def lookup(scorer: dict[str, Any]) -> float | None:
        rubric, _, version = str(scorer.get("rubric", "")).partition("@")
        judge = scorer.get("judge") or {}
        judges = {judge.get("name"), judge.get("id")} - {None}
        matches = [
            r
            for r in records
            if r.get("rubric") == rubric
            and r.get("judge") in judges
            and (not version or not r.get("rubric_version") or r["rubric_version"] == version)
            and isinstance(r.get("kappa"), int | float)
        ]
        if not matches:
            return None
        newest = max(matches, key=lambda r: float(r.get("created_at") or 0))
        return float(newest["kappa"])

    return lookup


def calibration_lookup(project_dir: Path, store_path: Path | None) -> KappaLookup:
    """Kappa of a judge scorer's newest calibration: from the run store (`evals judge
    calibrate`), else from the committed records in reports/calibration/ (what CI has)."""
    from_files = file_kappa_lookup(project_dir)

    def lookup(scorer: dict[str, Any]) -> float | None:
        rubric, _, version = str(scorer.get("rubric", "")).partition("@")
        judge = scorer.get("judge") or {}
        if store_path is not None and store_path.exists():
            with Store.open(store_path, create=False) as store:
                for model in (judge.get("name"), judge.get("id")):
                    kappa = latest_kappa(store, rubric, model, version or None) if model else None
                    if kappa is not None:
                        return kappa
        return from_files(scorer)

    return lookup
